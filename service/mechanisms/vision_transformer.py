"""Vision Transformer: patch embedding, class token, position embedding and one pre-norm encoder block.

Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, Minderer, Heigold, Gelly,
Uszkoreit, Houlsby, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
ICLR 2021. The survey's entry is the whole architecture; this is the block that defines it: the
input stem plus one of the L identical encoder blocks.

Shapes: x [B, C, H, W] -> output [B, L, E] with L = 1 + N, N = (H/P)(W/P) patches, E = embed_dim;
attention [B, h, L, L]; cls_attention [B, h, H/P, W/P] (the class token's attention row over patches).
- Eq. 1: z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos. Each P x P patch is flattened to P^2 C values
  and projected by E (implemented as a P x P convolution with stride P, which is the same linear map,
  with a bias as in the released models); x_class and E_pos are learned.
- Eq. 2: z'_1 = MSA(LN(z_0)) + z_0, with MSA from Appendix A (Eqs. 5-8):
  [q, k, v] = z U_qkv, A = softmax(q k^T / sqrt(D_h)), SA(z) = A v, MSA(z) = [SA_1; ...; SA_k] U_msa.
- Eq. 3: z_1 = MLP(LN(z'_1)) + z'_1, MLP = two layers with a GELU non-linearity (hidden = mlp_ratio E).
The final LayerNorm of Eq. 4 belongs to the classification head after the last block and is not applied.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import divisible, merge_heads, scaled_dot_product, split_heads


class ViTBlock(nn.Module):
    """Pre-norm encoder block, Eqs. 2-3 (with the MSA of Appendix A)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)            # U_qkv (Eq. 5)
        self.proj = nn.Linear(dim, dim)               # U_msa (Eq. 8)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, z: torch.Tensor, need_weights: bool = True):
        q, k, v = self.qkv(self.norm1(z)).chunk(3, dim=-1)                          # Eq. 5
        a, weights = scaled_dot_product(split_heads(q, self.heads), split_heads(k, self.heads),
                                        split_heads(v, self.heads), need_weights=need_weights)  # Eqs. 6-7
        z = z + self.proj(merge_heads(a))                                            # Eqs. 8 and 2
        z = z + self.fc2(F.gelu(self.fc1(self.norm2(z))))                            # Eq. 3
        return z, weights


class VisionTransformerBlock(nn.Module):
    def __init__(self, channels: int, height: int, width: int, patch_size: int = 16, embed_dim: int = 0,
                 heads: int = 8, mlp_ratio: int = 4):
        super().__init__()
        dim = embed_dim or channels
        self.patch_size = patch_size
        self.grid = (height // patch_size, width // patch_size)
        n = self.grid[0] * self.grid[1]
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)  # E (Eq. 1)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))                       # x_class
        self.pos_embed = nn.Parameter(torch.empty(1, n + 1, dim))                   # E_pos
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.block = ViTBlock(dim, heads, mlp_ratio)

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)                   # [B, N, E]
        z0 = torch.cat([self.cls_token.expand(b, -1, -1), patches], dim=1) + self.pos_embed  # Eq. 1
        z1, weights = self.block(z0, need_weights=need_weights)
        out = {"output": z1}
        if weights is not None:
            out["attention"] = weights
            out["cls_attention"] = weights[:, :, 0, 1:].reshape(b, weights.shape[1], *self.grid)
        return out


def _check(shapes, params):
    _, c, h, w = shapes["x"]
    p = params["patch_size"]
    problems = []
    if h % p or w % p:
        problems.append(f"H={h} and W={w} must both be divisible by patch_size={p} "
                        f"(e.g. patch_size 4, 7 or 14 for a 28 x 28 map)")
    dim = params["embed_dim"] or c
    problems += divisible("embed_dim" if params["embed_dim"] else "embed_dim (= C)", dim, "heads", params["heads"])
    return problems


MECHANISM = Mechanism(
    slug="vision-transformer",
    title="ViT stem and encoder block: patch embedding, class token, position embedding, one pre-norm "
          "multi-head self-attention + MLP block (the block that defines the architecture)",
    reference="Dosovitskiy et al., ICLR 2021, Eqs. 1-3 and Appendix A Eqs. 5-8",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "image or feature map"),),
    outputs=(OutputSpec("output", ("B", "L", "E"), "tokens z_1 after one encoder block; L = 1 + HW/P^2, "
                        "token 0 is the class token"),
             OutputSpec("attention", ("B", "heads", "L", "L"), "self-attention weights A per head "
                        "(rows sum to 1)", attention=True),
             OutputSpec("cls_attention", ("B", "heads", "Hp", "Wp"), "the class token's attention over "
                        "the patches, laid out on the H/P x W/P patch grid", attention=True)),
    hyperparams=(
        HyperParam("patch_size", "int", 16, "patch side P (16 in ViT-B/16); must divide H and W", 1, 1024),
        HyperParam("embed_dim", "int", 0, "token width E (768 in ViT-Base); 0 means E = C", 0, 8192),
        HyperParam("heads", "int", 8, "attention heads (12 in ViT-Base, 16 in ViT-Large); must divide E", 1, 1024),
        HyperParam("mlp_ratio", "int", 4, "MLP hidden size / E (3072 / 768 = 4 in ViT-Base)", 1, 16),
    ),
    build=lambda shapes, p: VisionTransformerBlock(shapes["x"][1], shapes["x"][2], shapes["x"][3],
                                                   p["patch_size"], p["embed_dim"], p["heads"], p["mlp_ratio"]),
    example_shapes={"x": (2, 16, 32, 32)},
    test_shapes=({"x": (1, 8, 16, 48)}, {"x": (3, 24, 48, 16)}),
    constraints=("H and W divisible by patch_size", "embed_dim (or C when embed_dim is 0) divisible by heads"),
    check=_check,
    notes="One encoder block instead of L = 12; the classification head (Eq. 4) is not part of it. LayerNorm "
          "eps 1e-6 and biases in U_qkv, as in the released models (timm's vit_base_patch16_224). The default "
          "heads is 8 rather than ViT-Base's 12 because E defaults to the input's C (e.g. 256), which 12 does "
          "not divide. Dropout omitted (inference). For a 28 x 28 input use patch_size 4, 7, 14 or 28.",
)
