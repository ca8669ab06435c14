"""Slot Attention module.

Locatello, Weissenborn, Unterthiner, Mahendran, Heigold, Uszkoreit, Dosovitskiy, Kipf,
"Object-Centric Learning with Slot Attention", NeurIPS 2020 (Sec. 2.1, Algorithm 1).

Shapes: x [B, N, D_in] -> output (slots) [B, K, S]; attention [B, K, N] (softmax over slots, last
iteration); update_weights [B, K, N] (the renormalised weighted-mean coefficients); initial_slots
[B, K, S] (the sampled initialisation) and log_prob [B] (its log density).
qkv_bias=True adds biases to the three projections, as some public re-implementations do (the
authors' TensorFlow code has none).
- Initialisation: slots ~ N(mu, diag(sigma^2)), mu, log sigma in R^S learned (sampled from the generator).
- inputs = LayerNorm(inputs); k = inputs W_k, v = inputs W_v (no bias).
- Repeat T times (Algorithm 1):
  slots_prev = slots; slots = LayerNorm(slots); q = slots W_q
  Eq. 1: attn_{i,j} = softmax over slots j of (1/sqrt(S)) k(inputs_i) . q(slots_j)
  Eq. 2: updates = W^T v with W_{i,j} = attn_{i,j} / sum_l attn_{l,j} (weighted mean; attn += eps first)
  slots = GRU(state=slots_prev, inputs=updates); slots += MLP(LayerNorm(slots)).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class SlotAttention(nn.Module):
    def __init__(self, in_dim: int, num_slots: int = 7, iterations: int = 3, slot_dim: int = 64,
                 mlp_hidden: int = 128, epsilon: float = 1e-8, qkv_bias: bool = False):
        super().__init__()
        self.num_slots = num_slots
        self.iterations = iterations
        self.epsilon = epsilon
        self.slots_mu = nn.Parameter(torch.randn(1, 1, slot_dim))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
        nn.init.xavier_uniform_(self.slots_log_sigma)
        self.norm_inputs = nn.LayerNorm(in_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_mlp = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=qkv_bias)
        self.to_k = nn.Linear(in_dim, slot_dim, bias=qkv_bias)
        self.to_v = nn.Linear(in_dim, slot_dim, bias=qkv_bias)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp1 = nn.Linear(slot_dim, mlp_hidden)
        self.mlp2 = nn.Linear(mlp_hidden, slot_dim)

    def iterate(self, x: torch.Tensor, slots: torch.Tensor):
        """Algorithm 1 from given initial slots [B, K, S]; returns (slots, attn, update weights)."""
        b, k, s = slots.shape
        inputs = self.norm_inputs(x)
        keys, values = self.to_k(inputs), self.to_v(inputs)                        # [B, N, S]
        attn = weights = None
        for _ in range(self.iterations):
            slots_prev = slots
            q = self.to_q(self.norm_slots(slots))                                  # [B, K, S]
            logits = keys @ q.transpose(1, 2) / math.sqrt(s)                       # [B, N, K]
            attn = logits.softmax(dim=-1) + self.epsilon                           # Eq. 1, softmax over slots
            weights = attn / attn.sum(dim=1, keepdim=True)                         # Eq. 2, weighted mean
            updates = weights.transpose(1, 2) @ values                             # [B, K, S]
            slots = self.gru(updates.reshape(b * k, s), slots_prev.reshape(b * k, s)).reshape(b, k, s)
            slots = slots + self.mlp2(torch.relu(self.mlp1(self.norm_mlp(slots))))
        return slots, (attn - self.epsilon).transpose(1, 2), weights.transpose(1, 2)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        s = self.slots_mu.shape[-1]
        noise = torch.randn(b, self.num_slots, s, generator=generator, dtype=torch.float64,
                            device=x.device).to(x.dtype)
        sigma = self.slots_log_sigma.exp()
        init = self.slots_mu + sigma * noise
        log_prob = (-0.5 * noise ** 2 - self.slots_log_sigma - 0.5 * math.log(2 * math.pi)).sum(dim=(1, 2))
        slots, attn, weights = self.iterate(x, init)
        return {"output": slots, "attention": attn, "update_weights": weights, "initial_slots": init,
                "log_prob": log_prob}


MECHANISM = Mechanism(
    slug="slot-attention",
    title="Slot Attention module: iterative attention normalised over slots, weighted-mean updates, GRU + "
          "MLP slot refinement, from Gaussian-sampled initial slots",
    reference="Locatello et al., NeurIPS 2020, Algorithm 1, Eqs. 1-2",
    inputs=(InputSpec("x", ("B", "N", "D"), "set of input features (e.g. CNN features + position embedding, "
                      "flattened)"),),
    outputs=(OutputSpec("output", ("B", "K", "S"), "slots after the last iteration"),
             OutputSpec("attention", ("B", "K", "N"), "softmax over slots of the last iteration (each column sums "
                        "to 1 over K): which slot claims each input", attention=True),
             OutputSpec("update_weights", ("B", "K", "N"), "weighted-mean coefficients of Eq. 2 (each row sums to "
                        "1 over N)", attention=True),
             OutputSpec("initial_slots", ("B", "K", "S"), "sampled initial slots mu + sigma * eps", attention=True),
             OutputSpec("log_prob", ("B",), "log density of the initial slots under N(mu, diag sigma^2)",
                        attention=True)),
    hyperparams=(
        HyperParam("num_slots", "int", 7, "number of slots K (7 for CLEVR in the paper)", 1, 256),
        HyperParam("iterations", "int", 3, "attention iterations T (3 in the paper)", 1, 50),
        HyperParam("slot_dim", "int", 64, "slot width S (64 in the paper)", 1, 4096),
        HyperParam("mlp_hidden", "int", 128, "hidden width of the slot MLP (128 in the paper)", 1, 8192),
        HyperParam("epsilon", "float", 1e-8, "added to the attention before the weighted mean", 0.0, 1e-2),
        HyperParam("qkv_bias", "bool", False, "biases in the q, k, v projections (the paper and the authors' code "
                   "have none; lucidrains' slot-attention package has them)"),
    ),
    build=lambda shapes, p: SlotAttention(shapes["x"][2], p["num_slots"], p["iterations"], p["slot_dim"],
                                          p["mlp_hidden"], p["epsilon"], p["qkv_bias"]),
    example_shapes={"x": (2, 16, 32)},
    test_shapes=({"x": (1, 5, 3)}, {"x": (3, 49, 64)}),
    stochastic=True,
    notes="Stochastic only through the initial slots, drawn from the generator; everything after is "
          "deterministic. The GRU is PyTorch's GRUCell convention. Projections q, k, v have no bias by default, as in the "
          "authors' code (qkv_bias=true adds them). The encoder / decoder around the module are not included.",
)
