"""Perceiver block: latent cross-attention to the input byte array, then a latent Transformer.

Jaegle, Gimeno, Brock, Zisserman, Vinyals, Carreira, "Perceiver: General Perception with Iterative
Attention", ICML 2021.

Shapes: x [B, C, H, W] -> output (latent array) [B, L, D]; cross_attention [B, L, M] (M = H*W);
self_attention [B, S, heads, L, L] (S latent self-attention layers).
- Byte array (Sec. 3.2, "Position encodings"): the M = H*W pixels, each concatenated with Fourier
  features of its position: for each spatial axis d, x_d in [-1, 1] (linspace) and
  [sin(f_k pi x_d), cos(f_k pi x_d)]_{k=1..K}, f_k linearly spaced in [1, mu/2] (mu = max_resolution),
  plus x_d itself -> byte array [B, M, C + 2(2K + 1)].
- Latent array: a learned [L, D] parameter shared across the batch (Sec. 2).
- Cross-attention (Sec. 2.1, single head): Q = LN(z) W_q, K = LN(x) W_k, V = LN(x) W_v,
  A = softmax(Q K^T / sqrt(D)) [B, L, M], z <- z + (A V) W_o; then z <- z + MLP(LN(z)).
- Latent Transformer (Sec. 2.1): S pre-norm GPT-2-style blocks on the latents,
  z <- z + MHSA(LN(z)); z <- z + MLP(LN(z)); MLP = Linear, GELU, Linear.
  feed_forward="geglu" uses the GEGLU MLP of the perceiver-pytorch package instead:
  Linear(D, 2 widening D) -> [a, g], a * GELU(g), Linear(widening D, D).

This is one Perceiver block (the paper stacks several with optional weight sharing and average-pools
the final latents for classification); paper sizes (L = 512, D = 1024, K = 64, 6 self-attention
layers) are reduced in the defaults and exposed as hyper-parameters. Dropout is not used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import scaled_dot_product


def fourier_position_features(h: int, w: int, num_bands: int, max_resolution: float,
                              device=None, dtype=None) -> torch.Tensor:
    """[H*W, 2 (2K + 1)] position features of an H x W grid, row-major over positions."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) for n in (h, w)]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(h * w, 2)   # [M, 2]
    freqs = torch.linspace(1.0, max_resolution / 2, num_bands, device=device, dtype=dtype)  # f_k
    arg = math.pi * pos[:, :, None] * freqs                                               # [M, 2, K]
    return torch.cat([pos, torch.sin(arg).flatten(1), torch.cos(arg).flatten(1)], dim=-1)


class Mlp(nn.Module):
    """Linear, GELU, Linear (the paper); with ``geglu`` fc1 has 2 * hidden outputs [a, g] and the
    activation is a * GELU(g) (the GEGLU feed-forward of the perceiver-pytorch package)."""

    def __init__(self, dim: int, hidden: int, geglu: bool = False):
        super().__init__()
        self.geglu = geglu
        self.fc1 = nn.Linear(dim, 2 * hidden if geglu else hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = self.fc1(x)
        if self.geglu:
            a, g = h.chunk(2, dim=-1)
            return self.fc2(a * F.gelu(g))
        return self.fc2(F.gelu(h))


class CrossAttentionBlock(nn.Module):
    def __init__(self, latent_dim: int, input_dim: int, mlp_hidden: int, geglu: bool = False):
        super().__init__()
        self.norm_latent = nn.LayerNorm(latent_dim)
        self.norm_input = nn.LayerNorm(input_dim)
        self.q = nn.Linear(latent_dim, latent_dim)
        self.k = nn.Linear(input_dim, latent_dim)
        self.v = nn.Linear(input_dim, latent_dim)
        self.proj = nn.Linear(latent_dim, latent_dim)
        self.norm_mlp = nn.LayerNorm(latent_dim)
        self.mlp = Mlp(latent_dim, mlp_hidden, geglu)

    def forward(self, z, x, need_weights):
        zn, xn = self.norm_latent(z), self.norm_input(x)
        o, a = scaled_dot_product(self.q(zn)[:, None], self.k(xn)[:, None], self.v(xn)[:, None],
                                  need_weights=need_weights)
        z = z + self.proj(o[:, 0])
        z = z + self.mlp(self.norm_mlp(z))
        return z, None if a is None else a[:, 0]


class SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int, geglu: bool = False):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden, geglu)

    def forward(self, z, need_weights):
        b, n, d = z.shape
        q, k, v = self.qkv(self.norm1(z)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o, a = scaled_dot_product(q, k, v, need_weights=need_weights)
        z = z + self.proj(o.transpose(1, 2).reshape(b, n, d))
        return z + self.mlp(self.norm2(z)), a


class Perceiver(nn.Module):
    def __init__(self, channels: int, num_latents: int, latent_dim: int, num_bands: int,
                 max_resolution: float, self_layers: int, heads: int, widening: int,
                 feed_forward: str = "gelu"):
        super().__init__()
        self.num_bands, self.max_resolution = num_bands, max_resolution
        input_dim = channels + 2 * (2 * num_bands + 1)
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim) * 0.02)
        geglu = feed_forward == "geglu"
        self.cross = CrossAttentionBlock(latent_dim, input_dim, widening * latent_dim, geglu)
        self.layers = nn.ModuleList(SelfAttentionBlock(latent_dim, heads, widening * latent_dim, geglu)
                                    for _ in range(self_layers))

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        pos = fourier_position_features(h, w, self.num_bands, self.max_resolution, x.device, x.dtype)
        byte = torch.cat([x.flatten(2).transpose(1, 2), pos.expand(b, -1, -1)], dim=-1)  # [B, M, C_in]
        z = self.latents.expand(b, -1, -1)
        z, cross = self.cross(z, byte, need_weights)
        maps = []
        for layer in self.layers:
            z, a = layer(z, need_weights)
            maps.append(a)
        out = {"output": z}
        if need_weights:
            out["cross_attention"] = cross
            if maps:
                out["self_attention"] = torch.stack(maps, dim=1)
        return out


def _check(shapes, params):
    d, h = params["latent_dim"], params["heads"]
    return [] if d % h == 0 else [f"latent_dim={d} is not divisible by heads={h}"]


MECHANISM = Mechanism(
    slug="perceiver",
    title="Perceiver block (architecture): Fourier-feature byte array, single-head latent "
          "cross-attention + MLP, then a latent self-attention Transformer",
    reference="Jaegle et al., ICML 2021, Sec. 2 (Fig. 1) and Sec. 3.2 (Fourier position encodings)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "image / feature map (flattened to the byte array)"),),
    outputs=(OutputSpec("output", ("B", "L", "D"), "latent array after the block"),
             OutputSpec("cross_attention", ("B", "L", "M"), "latent-to-pixel softmax weights, M = H*W",
                        attention=True),
             OutputSpec("self_attention", ("B", "S", "heads", "L", "L"),
                        "latent self-attention weights of each of the S layers", attention=True)),
    hyperparams=(
        HyperParam("num_latents", "int", 32, "latent array length L (paper: 512)", 1, 4096),
        HyperParam("latent_dim", "int", 64, "latent channels D (paper: 1024)", 1, 4096),
        HyperParam("num_bands", "int", 16, "Fourier frequency bands K per axis (paper: 64)", 0, 256),
        HyperParam("max_resolution", "float", 32.0, "mu: highest frequency is mu/2 (paper: 224)", 1.0, 100000.0),
        HyperParam("self_layers", "int", 2, "latent self-attention layers S per block (paper: 6)", 0, 48),
        HyperParam("heads", "int", 8, "heads of latent self-attention (paper: 8)", 1, 64),
        HyperParam("widening", "int", 1, "MLP hidden size = widening * D", 1, 16),
        HyperParam("feed_forward", "choice", "gelu", "MLP form: gelu = Linear, GELU, Linear (paper); geglu = "
                   "Linear to 2x, a * GELU(g), Linear (perceiver-pytorch package)", choices=("gelu", "geglu")),
    ),
    build=lambda shapes, p: Perceiver(shapes["x"][1], p["num_latents"], p["latent_dim"], p["num_bands"],
                                      p["max_resolution"], p["self_layers"], p["heads"], p["widening"],
                                      p["feed_forward"]),
    example_shapes={"x": (2, 3, 6, 5)},
    test_shapes=({"x": (1, 5, 7, 1)}, {"x": (3, 8, 1, 1)}),
    constraints=("latent_dim divisible by heads",),
    check=_check,
    notes="One block of the architecture, not the whole network (no block repetition, no classifier). "
          "Sizes are reduced from the paper's ImageNet model; all are hyper-parameters. "
          "With need_weights=False attention uses scaled_dot_product_attention.",
)
