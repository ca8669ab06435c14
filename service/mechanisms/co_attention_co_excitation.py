"""Co-attention and co-excitation (CoAE) for one-shot object detection.

Hsieh, Lo, Chen, Liu, "One-Shot Object Detection with Co-Attention and Co-Excitation", NeurIPS 2019, Sec. 3.

Inputs: target image features I = x [B, C, H, W] and query (patch) features p = query [B, C, Hq, Wq].
Outputs: output [B, C, H, W] (co-excited target features), query_output [B, C, Hq, Wq],
co_attention [B, HW, HqWq], channel_weights [B, C].
- Co-attention (Sec. 3.1): a non-local operation across the two images in both directions, with a
  shared value embedding g (1x1 conv C -> C/2) and pairwise term f between target position i and query
  position j: f_ij = theta(p_j) . phi(I_i) (dot product, normalised by the number of positions of the
  attended image, as in the released code; pairwise="embedded_gaussian" uses a softmax instead):
    psi(I; p)_i = sum_j f_ij / N_p g(p_j),   F(I) = I + W_I psi(I; p)
    psi(p; I)_j = sum_i f_ij / N_I g(I_i),   F(p) = p + W_p psi(p; I)        (W_I, W_p: 1x1 convs C/2 -> C)
- Squeeze and co-excitation (Sec. 3.2): w = SCE(F(p)): squeeze F(p) by global pooling and excite with two
  fully connected layers (C -> C/r -> C, ReLU, sigmoid); global average pooling as in the paper by
  default, squeeze="avg+max" adds the max-pooled branch of the released code (a CBAM-style channel
  gate). The same w re-weights both images:
    output = w * F(I),   query_output = w * F(p).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class CoAttentionCoExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, pairwise: str = "dot", squeeze: str = "avg"):
        super().__init__()
        inner = max(1, channels // 2)
        self.pairwise, self.squeeze = pairwise, squeeze
        self.g = nn.Conv2d(channels, inner, 1)
        self.theta = nn.Conv2d(channels, inner, 1)     # on the query image p
        self.phi = nn.Conv2d(channels, inner, 1)       # on the target image I
        self.w_target = nn.Conv2d(inner, channels, 1)  # W_I
        self.w_query = nn.Conv2d(inner, channels, 1)   # W_p
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        hq, wq = query.shape[-2:]
        g_t = self.g(x).flatten(2).transpose(1, 2)           # [B, N_I, C/2]
        g_q = self.g(query).flatten(2).transpose(1, 2)       # [B, N_p, C/2]
        f = self.phi(x).flatten(2).transpose(1, 2) @ self.theta(query).flatten(2)   # f_ij: [B, N_I, N_p]
        if self.pairwise == "dot":
            att_t, att_q = f / f.shape[2], f.transpose(1, 2) / f.shape[1]
        else:
            att_t, att_q = torch.softmax(f, dim=2), torch.softmax(f.transpose(1, 2), dim=2)
        fi = x + self.w_target((att_t @ g_q).transpose(1, 2).reshape(b, -1, h, w))        # F(I)
        fp = query + self.w_query((att_q @ g_t).transpose(1, 2).reshape(b, -1, hq, wq))   # F(p)
        mlp = lambda v: self.fc2(torch.relu(self.fc1(v)))  # noqa: E731
        logit = mlp(fp.mean(dim=(2, 3)))
        if self.squeeze == "avg+max":
            logit = logit + mlp(fp.amax(dim=(2, 3)))
        wgt = torch.sigmoid(logit)                                                        # SCE(F(p))
        return {"output": fi * wgt[:, :, None, None], "query_output": fp * wgt[:, :, None, None],
                "co_attention": att_t, "channel_weights": wgt}


def _check(shapes, params):
    c = shapes["x"][1]
    problems = []
    if c < 2:
        problems.append("C must be at least 2 (embedding width C/2)")
    if c // params["reduction"] < 1:
        problems.append(f"C={c} is smaller than reduction={params['reduction']}")
    return problems


MECHANISM = Mechanism(
    slug="co-attention-co-excitation",
    title="CoAE: two-way non-local co-attention between target and query features, then shared "
          "squeeze-and-co-excitation",
    reference="Hsieh et al., NeurIPS 2019, Sec. 3.1 (co-attention) and 3.2 (squeeze and co-excitation)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "target image features I"),
            InputSpec("query", ("B", "C", "Hq", "Wq"), "query patch features p")),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "co-excited target features w * F(I)"),
             OutputSpec("query_output", ("B", "C", "Hq", "Wq"), "co-excited query features w * F(p)"),
             OutputSpec("co_attention", ("B", "HW", "HqWq"),
                        "weights of query positions j for each target position i (f_ij / N_p, or softmax)",
                        attention=True),
             OutputSpec("channel_weights", ("B", "C"), "co-excitation channel weights w in (0, 1)",
                        attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 16, "reduction ratio of the excitation layers", 1, 1024),
        HyperParam("pairwise", "choice", "dot", "non-local pairwise function: dot product / N (released code) "
                   "or embedded Gaussian (softmax)", choices=("dot", "embedded_gaussian")),
        HyperParam("squeeze", "choice", "avg", "global pooling of the squeeze step: average (paper) or average + max "
                   "through the shared MLP (released code)", choices=("avg", "avg+max")),
    ),
    build=lambda shapes, p: CoAttentionCoExcitation(shapes["x"][1], p["reduction"], p["pairwise"], p["squeeze"]),
    example_shapes={"x": (2, 32, 7, 6), "query": (2, 32, 4, 4)},
    test_shapes=({"x": (1, 16, 5, 3), "query": (1, 16, 3, 2)}, {"x": (3, 64, 9, 9), "query": (3, 64, 1, 1)}),
    constraints=("C >= 2", "C // reduction >= 1"),
    check=_check,
    notes="The released code follows W_I and W_p with a BatchNorm initialised to zero; at inference that is a "
          "per-channel affine map that folds into the 1x1 convolutions, so it is not a separate layer here.",
)
