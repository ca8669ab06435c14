"""Sequential (saliency-based) attention with inhibition of return and sampled labels.

Welleck, Mao, Cho, Zhang, "Saliency-based Sequential Image Attention with Multiset Prediction",
NIPS 2017, Sec. 3 (meta-controller with covert attention, controller, REINFORCE-trained label policy).
The survey's "sequential attention" reference could not be read; this paper is the best-supported
candidate (see the technique's survey_note).

Shapes: activations A [B, C, H, W], optional saliency S_1 [B, H, W] -> output probabilities [B, T, K].
For t = 1..T (meta-controller steps):
- Covert attention mask: M_t = (S_t * G) / max_u (S_t * G)   (S_t convolved with a Gaussian filter G of
  std sigma, 'same' padding; scaled to a peak of 1)
- Glimpse: g_t = sum_u M_t(u) A(u) / sum_u M_t(u)                             [B, C]
- Controller: h_t = GRUCell(g_t, h_{t-1}), h_0 = 0                             [B, E]
- Label policy: pi(y | h_t) = softmax(W h_t + b); y_t ~ pi (drawn from the generator); log pi(y_t | h_t)
- Inhibition of return: S_{t+1} = S_t ⊙ (1 - M_t)
When no saliency map is given, S_1 = sigmoid(conv1x1(A)) stands in for the paper's pretrained bottom-up
saliency model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .sampling import sample_categorical


class SequentialAttention(nn.Module):
    def __init__(self, channels: int, classes: int = 10, steps: int = 3, hidden: int = 64,
                 kernel_size: int = 5, sigma: float = 1.0):
        super().__init__()
        self.steps = steps
        self.saliency = nn.Conv2d(channels, 1, 1)
        self.rnn = nn.GRUCell(channels, hidden)
        self.policy = nn.Linear(hidden, classes)
        self.kernel_size, self.sigma = kernel_size, sigma

    def gaussian_filter(self, like: torch.Tensor) -> torch.Tensor:
        r = torch.arange(self.kernel_size, dtype=like.dtype, device=like.device) - (self.kernel_size - 1) / 2
        g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * self.sigma ** 2))
        return (g / g.sum())[None, None]

    def forward(self, activations: torch.Tensor, saliency: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if generator is None:
            raise ValueError("sequential-attention samples its labels from a torch.Generator")
        b = activations.shape[0]
        s = torch.sigmoid(self.saliency(activations))[:, 0] if saliency is None else saliency
        h = activations.new_zeros(b, self.rnn.hidden_size)
        gauss, pad = self.gaussian_filter(activations), self.kernel_size // 2
        probs, labels, logps, masks, sals = [], [], [], [], []
        for _ in range(self.steps):
            blurred = F.conv2d(s.unsqueeze(1), gauss, padding=pad)[:, 0]
            m = blurred / blurred.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            g = torch.einsum("bhw,bchw->bc", m, activations) / m.sum(dim=(1, 2)).clamp_min(1e-12)[:, None]
            h = self.rnn(g, h)
            p = torch.softmax(self.policy(h), dim=1)
            y = sample_categorical(p, generator)
            probs.append(p), labels.append(y), masks.append(m), sals.append(s)
            logps.append(torch.log(p.gather(1, y[:, None])[:, 0]))
            s = s * (1 - m)
        return {"output": torch.stack(probs, 1), "labels": torch.stack(labels, 1), "log_prob": torch.stack(logps, 1),
                "masks": torch.stack(masks, 1), "saliency": torch.stack(sals, 1)}


def _check(shapes, p):
    return [] if p["kernel_size"] % 2 == 1 else [f"kernel_size={p['kernel_size']} must be odd"]


MECHANISM = Mechanism(
    slug="sequential-attention",
    title="Saliency-based sequential attention: Gaussian covert masks, GRU controller, sampled labels, "
          "inhibition of return",
    reference="Welleck et al., NIPS 2017 (Saliency-based Sequential Image Attention with Multiset Prediction), Sec. 3",
    inputs=(InputSpec("activations", ("B", "C", "H", "W"), "CNN activation volume A"),
            InputSpec("saliency", ("B", "H", "W"), "bottom-up saliency map S_1 (optional)", optional=True)),
    outputs=(OutputSpec("output", ("B", "T", "K"), "label policy pi(y | h_t) at each step"),
             OutputSpec("labels", ("B", "T"), "sampled label y_t per step (the predicted multiset)", attention=True),
             OutputSpec("log_prob", ("B", "T"), "log pi(y_t | h_t) of the sampled labels (REINFORCE term)",
                        attention=True),
             OutputSpec("masks", ("B", "T", "H", "W"), "covert attention masks M_t (peak 1)", attention=True),
             OutputSpec("saliency", ("B", "T", "H", "W"), "saliency S_t before each step (after inhibition)",
                        attention=True)),
    hyperparams=(HyperParam("classes", "int", 10, "label vocabulary K", 1, 10000),
                 HyperParam("steps", "int", 3, "meta-controller steps T (labels predicted)", 1, 32),
                 HyperParam("hidden", "int", 64, "controller GRU size E", 1, 4096),
                 HyperParam("kernel_size", "int", 5, "size of the Gaussian attention filter (odd)", 1, 63),
                 HyperParam("sigma", "float", 1.0, "std of the Gaussian attention filter (pixels)", 0.1, 100.0)),
    build=lambda shapes, p: SequentialAttention(shapes["activations"][1], p["classes"], p["steps"], p["hidden"],
                                                p["kernel_size"], p["sigma"]),
    example_shapes={"activations": (2, 8, 7, 7)},
    test_shapes=({"activations": (1, 3, 1, 4)}, {"activations": (3, 16, 9, 5), "saliency": (3, 9, 5)}),
    constraints=("kernel_size is odd",),
    check=_check,
    stochastic=True,
    notes="UNCERTAIN IDENTIFICATION and SIMPLIFIED: one Gaussian component instead of a learned mixture, one "
          "glimpse per step instead of several controller glimpses inside the mask, a GRU controller, and a "
          "1x1-conv saliency stand-in when no saliency map is supplied. Labels are drawn from the policy (the "
          "paper samples during REINFORCE training and takes argmax at test time).",
)
