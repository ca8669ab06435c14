"""Reciprocal Attention Fusion (RAF): question-guided attention over grid and object features,
fused jointly.

Farazi, Khan, "Reciprocal Attention Fusion for Visual Question Answering", BMVC 2018
(arXiv:1805.04247).

Inputs: question embedding q [B, Dq], grid features G [B, C, H, W] (N_g = H*W cells of a CNN map),
object features O [B, N_o, Do] (bottom-up region features). Outputs: answer distribution [B, A],
grid attention alpha [B, H, W], object attention beta [B, N_o], attended vectors g-hat [B, C] and
o-hat [B, Do].
- Tensor-decomposed bilinear fusion T(x, y) (Tucker form): x~ = tanh(W_x x + b_x), y~ = tanh(W_y y + b_y),
  z = T_c x_1 x~ x_2 y~ (core tensor T_c [t, t, t_o]), i.e. z_k = sum_ij T_c[i, j, k] x~_i y~_j.
- Grid attention: alpha_i = softmax_i(w_g^T T_g(q, g_i) + b_g); g-hat = sum_i alpha_i g_i.
- Object attention: beta_j = softmax_j(w_o^T T_o(q, o_j) + b_o); o-hat = sum_j beta_j o_j.
- Reciprocal fusion: a-hat = softmax(W_a T_f(q, [g-hat; o-hat]) + b_a).
Separate parameters for T_g, T_o and T_f. The paper's exact tensor decomposition ranks, glimpse count
and layer sizes are not reproduced (the paper could not be read here; its identification as the
survey's "reciprocal attention" is itself uncertain); sizes are hyper-parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class TuckerFusion(nn.Module):
    def __init__(self, x_dim: int, y_dim: int, dim: int, out_dim: int):
        super().__init__()
        self.proj_x = nn.Linear(x_dim, dim)
        self.proj_y = nn.Linear(y_dim, dim)
        self.core = nn.Parameter(torch.randn(dim, dim, out_dim) / dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [B, Dx], y [B, ..., Dy] -> [B, ..., out_dim]."""
        xt = torch.tanh(self.proj_x(x))
        yt = torch.tanh(self.proj_y(y))
        xt = xt.reshape(xt.shape[0], *([1] * (yt.dim() - 2)), xt.shape[-1])
        return torch.einsum("...i,...j,ijk->...k", xt.expand(*yt.shape[:-1], -1), yt, self.core)


class ReciprocalAttention(nn.Module):
    def __init__(self, q_dim: int, grid_dim: int, obj_dim: int, dim: int = 64, out_dim: int = 64,
                 num_answers: int = 3000):
        super().__init__()
        self.fuse_grid = TuckerFusion(q_dim, grid_dim, dim, out_dim)
        self.fuse_obj = TuckerFusion(q_dim, obj_dim, dim, out_dim)
        self.score_grid = nn.Linear(out_dim, 1)
        self.score_obj = nn.Linear(out_dim, 1)
        self.fuse_final = TuckerFusion(q_dim, grid_dim + obj_dim, dim, out_dim)
        self.classifier = nn.Linear(out_dim, num_answers)

    def forward(self, question: torch.Tensor, grid: torch.Tensor, objects: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = grid.shape
        cells = grid.flatten(2).transpose(1, 2)                                           # g_i: [B, N_g, C]
        alpha = torch.softmax(self.score_grid(self.fuse_grid(question, cells))[..., 0], dim=1)
        beta = torch.softmax(self.score_obj(self.fuse_obj(question, objects))[..., 0], dim=1)
        g_hat = (alpha[..., None] * cells).sum(1)
        o_hat = (beta[..., None] * objects).sum(1)
        logits = self.classifier(self.fuse_final(question, torch.cat([g_hat, o_hat], dim=-1)))
        return {"output": torch.softmax(logits, dim=-1), "grid_attention": alpha.reshape(b, h, w),
                "object_attention": beta, "attended_grid": g_hat, "attended_objects": o_hat}


MECHANISM = Mechanism(
    slug="reciprocal-attention",
    title="Reciprocal Attention Fusion: Tucker-fused question-guided attention over grid cells and "
          "object regions, joint fusion of both attended vectors, answer softmax",
    reference="Farazi & Khan, BMVC 2018 (RAF)",
    inputs=(InputSpec("question", ("B", "Dq"), "question embedding q"),
            InputSpec("grid", ("B", "C", "H", "W"), "grid-level CNN features"),
            InputSpec("objects", ("B", "No", "Do"), "object-level region features")),
    outputs=(OutputSpec("output", ("B", "A"), "answer distribution a-hat over A answers"),
             OutputSpec("grid_attention", ("B", "H", "W"), "alpha over grid cells", attention=True),
             OutputSpec("object_attention", ("B", "No"), "beta over objects", attention=True),
             OutputSpec("attended_grid", ("B", "C"), "g-hat", attention=True),
             OutputSpec("attended_objects", ("B", "Do"), "o-hat", attention=True)),
    hyperparams=(
        HyperParam("fusion_dim", "int", 64, "Tucker factor size t", 1, 4096),
        HyperParam("out_dim", "int", 64, "Tucker output size t_o", 1, 4096),
        HyperParam("num_answers", "int", 3000, "answer vocabulary size A", 1, 100000),
    ),
    build=lambda shapes, p: ReciprocalAttention(shapes["question"][1], shapes["grid"][1], shapes["objects"][2],
                                                p["fusion_dim"], p["out_dim"], p["num_answers"]),
    example_shapes={"question": (2, 12), "grid": (2, 8, 4, 4), "objects": (2, 5, 10)},
    test_shapes=({"question": (1, 3), "grid": (1, 2, 1, 3), "objects": (1, 1, 4)},
                 {"question": (3, 16), "grid": (3, 16, 5, 7), "objects": (3, 9, 16)}),
    notes="Uncertain identification and reconstructed layer sizes (see docstring); single glimpse.",
)
