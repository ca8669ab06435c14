"""X-Linear attention block: bilinear-pooling attention with spatial and channel-wise weights.

Pan, Yao, Li, Mei, "X-Linear Attention Networks for Image Captioning", CVPR 2020.

Inputs: query Q [B, D_q], keys K [B, N, D_k], values V [B, N, D_v] (e.g. a caption-decoder state and
N region features). Outputs: attended feature [B, E] (E = embed_dim), spatial attention beta^s [B, N],
channel attention beta^c [B, E].
- Low-rank bilinear pooling of query and keys (Sec. 3.1, Eq. 3):
  B^k_i = sigma(W_k k_i) * sigma(W^k_q Q)                                    -> [B, N, E]
- Spatial attention (Eq. 4): B'^k_i = sigma(W^k_B B^k_i) (D_c dims), b^s_i = W_b B'^k_i,
  beta^s = softmax(b^s) over the N positions.
- Channel attention (Eq. 5, squeeze-excitation): B-bar = 1/N sum_i B'^k_i, b^c = W_e B-bar,
  beta^c = sigmoid(b^c)                                                       -> [B, E]
- Bilinear query-value features and output (Eqs. 6-7):
  B^v_i = sigma(W_v v_i) * sigma(W^v_q Q),   v-hat = beta^c * sum_i beta^s_i B^v_i.
sigma is ReLU by default (Sec. 3.1); "elu" gives the ELU variant the paper uses to reach
infinite-order interactions (Sec. 3.2). All linear maps carry biases. This is the single-head block;
X-LAN runs it with several heads and adds group normalisation inside the embeddings, which are not
reproduced here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class XLinearAttention(nn.Module):
    def __init__(self, query_dim: int, key_dim: int, value_dim: int, embed_dim: int = 128,
                 mid_dim: int = 64, activation: str = "relu"):
        super().__init__()
        self.act = F.relu if activation == "relu" else F.elu
        self.w_k = nn.Linear(key_dim, embed_dim)       # W_k
        self.w_qk = nn.Linear(query_dim, embed_dim)    # W^k_q
        self.w_v = nn.Linear(value_dim, embed_dim)     # W_v
        self.w_qv = nn.Linear(query_dim, embed_dim)    # W^v_q
        self.w_bk = nn.Linear(embed_dim, mid_dim)      # W^k_B
        self.w_b = nn.Linear(mid_dim, 1)               # W_b
        self.w_e = nn.Linear(mid_dim, embed_dim)       # W_e

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
        bk = self.act(self.w_k(keys)) * self.act(self.w_qk(query))[:, None, :]    # Eq. 3: [B, N, E]
        bk2 = self.act(self.w_bk(bk))                                             # B'^k: [B, N, D_c]
        beta_s = torch.softmax(self.w_b(bk2)[..., 0], dim=-1)                     # Eq. 4: [B, N]
        beta_c = torch.sigmoid(self.w_e(bk2.mean(dim=1)))                         # Eq. 5: [B, E]
        bv = self.act(self.w_v(values)) * self.act(self.w_qv(query))[:, None, :]  # Eq. 6: [B, N, E]
        out = beta_c * (beta_s[:, :, None] * bv).sum(dim=1)                       # Eq. 7
        return {"output": out, "spatial_attention": beta_s, "channel_attention": beta_c}


MECHANISM = Mechanism(
    slug="x-linear-attention",
    title="X-Linear attention block (single head): bilinear query-key/value pooling, spatial softmax "
          "and squeeze-excitation channel gate",
    reference="Pan et al., CVPR 2020, Sec. 3.1 (Eqs. 3-7)",
    inputs=(InputSpec("query", ("B", "Dq"), "query vector Q (e.g. decoder state)"),
            InputSpec("keys", ("B", "N", "Dk"), "keys k_i (e.g. region features)"),
            InputSpec("values", ("B", "N", "Dv"), "values v_i")),
    outputs=(OutputSpec("output", ("B", "E"), "attended feature v-hat, E = embed_dim"),
             OutputSpec("spatial_attention", ("B", "N"), "beta^s, softmax over the N keys", attention=True),
             OutputSpec("channel_attention", ("B", "E"), "beta^c in (0, 1)", attention=True)),
    hyperparams=(
        HyperParam("embed_dim", "int", 128, "bilinear embedding size E (D_B)", 1, 8192),
        HyperParam("mid_dim", "int", 64, "size D_c of the B'^k embedding", 1, 8192),
        HyperParam("activation", "choice", "relu", "sigma in the embeddings (paper: ReLU; ELU variant)",
                   choices=("relu", "elu")),
    ),
    build=lambda shapes, p: XLinearAttention(shapes["query"][1], shapes["keys"][2], shapes["values"][2],
                                             p["embed_dim"], p["mid_dim"], p["activation"]),
    example_shapes={"query": (2, 12), "keys": (2, 7, 10), "values": (2, 7, 9)},
    test_shapes=({"query": (1, 5), "keys": (1, 1, 3), "values": (1, 1, 4)},
                 {"query": (3, 16), "keys": (3, 20, 16), "values": (3, 20, 16)}),
    notes="Single head, no group normalisation (X-LAN uses 8 heads with GN); sizes reduced.",
)
