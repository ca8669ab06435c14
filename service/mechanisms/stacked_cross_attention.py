"""Stacked Cross Attention (SCAN) between image regions and words.

Lee, Chen, Hua, Hu, He, "Stacked Cross Attention for Image-Text Matching", ECCV 2018, Sec. 3.

Inputs: regions f [B, R, F] (detector region features), words e [B, N, D] (word features).
- Region projection (Eq. 1): v_i = W_v f_i + b_v  -> [B, R, D]
- Cosine similarities s_ij = v_i^T e_j / (||v_i|| ||e_j||)  -> [B, R, N]
Text-Image formulation ("t-i", Sec. 3.2): each word attends to the regions
- s'_ij = [s_ij]_+ / sqrt(sum_j [s_ij]_+^2)   (normalised over the words)
- alpha'_ij = softmax_i(lambda_1 s'_ij)        (over the regions)
- a'_j = sum_i alpha'_ij v_i ;  R'(e_j, a'_j) = cos(e_j, a'_j)                     -> queries Q = N
Image-Text formulation ("i-t", Sec. 3.1): each region attends to the words
- s'_ij = [s_ij]_+ / sqrt(sum_i [s_ij]_+^2)   (normalised over the regions)
- alpha_ij = softmax_j(lambda_1 s'_ij) ;  a_i = sum_j alpha_ij e_j ; R(v_i, a_i) = cos(v_i, a_i) -> Q = R
Pooling of the relevances into the image-sentence similarity:
- AVG: S = mean_q R_q ;  LSE: S = (1/lambda_2) log sum_q exp(lambda_2 R_q)
Each batch element b is the pair (image b, sentence b). A 1e-8 is added to the denominators.
Released-code forms: clip="leaky_relu" replaces [.]_+ by LeakyReLU(0.1) (the authors' default
raw_feature_norm "clipped_l2norm"); l2_normalise=true L2-normalises the projected regions and the words
before attending, so the attended vectors are sums of unit vectors (the authors' encoders normalise
their outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec

EPS = 1e-8


def _cos(a, b):
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + EPS)


class StackedCrossAttention(nn.Module):
    def __init__(self, region_dim: int, dim: int, direction: str = "t-i", lambda_1: float = 9.0,
                 pooling: str = "avg", lambda_2: float = 6.0, clip: str = "relu", l2_normalise: bool = False):
        super().__init__()
        self.fc = nn.Linear(region_dim, dim)
        self.direction, self.lambda_1, self.pooling, self.lambda_2 = direction, lambda_1, pooling, lambda_2
        self.clip, self.l2_normalise = clip, l2_normalise

    def forward(self, regions: torch.Tensor, words: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.fc(regions)                                                        # Eq. 1 [B, R, D]
        if self.l2_normalise:
            v = v / (v.norm(dim=-1, keepdim=True) + EPS)
            words = words / (words.norm(dim=-1, keepdim=True) + EPS)
        norms = v.norm(dim=-1).unsqueeze(2) * words.norm(dim=-1).unsqueeze(1)
        s = v @ words.transpose(1, 2) / (norms + EPS)                               # s_ij [B, R, N]
        s = s.clamp_min(0) if self.clip == "relu" else F.leaky_relu(s, 0.1)        # [s_ij]_+
        if self.direction == "t-i":
            s = s / (s.pow(2).sum(2, keepdim=True).sqrt() + EPS)                    # over words j
            alpha = torch.softmax(self.lambda_1 * s, dim=1).transpose(1, 2)         # over regions, [B, N, R]
            attended = alpha @ v                                                    # a'_j [B, N, D]
            rel = _cos(words, attended)                                             # R'(e_j, a'_j) [B, N]
        else:
            s = s / (s.pow(2).sum(1, keepdim=True).sqrt() + EPS)                    # over regions i
            alpha = torch.softmax(self.lambda_1 * s, dim=2)                         # over words, [B, R, N]
            attended = alpha @ words                                                # a_i [B, R, D]
            rel = _cos(v, attended)                                                 # R(v_i, a_i) [B, R]
        if self.pooling == "avg":
            sim = rel.mean(1)
        else:
            sim = torch.logsumexp(self.lambda_2 * rel, dim=1) / self.lambda_2
        return {"output": attended, "attention": alpha, "relevance": rel, "similarity": sim}


MECHANISM = Mechanism(
    slug="stacked-cross-attention",
    title="SCAN: stacked cross attention between regions and words (t-i or i-t) with AVG/LSE pooling",
    reference="Lee et al., ECCV 2018 (SCAN), Eq. 1 and Sec. 3.1 (Image-Text) / 3.2 (Text-Image)",
    inputs=(InputSpec("regions", ("B", "R", "F"), "image region features f_i (e.g. Faster R-CNN)"),
            InputSpec("words", ("B", "N", "D"), "word features e_j of the paired sentence")),
    outputs=(OutputSpec("output", ("B", "Q", "D"),
                        "attended vectors: a'_j per word (t-i, Q=N) or a_i per region (i-t, Q=R)"),
             OutputSpec("attention", ("B", "Q", "P"),
                        "cross-attention weights, each row sums to 1 (t-i: words over regions; "
                        "i-t: regions over words)", attention=True),
             OutputSpec("relevance", ("B", "Q"), "cosine relevance R(query, attended vector)", attention=True),
             OutputSpec("similarity", ("B",), "image-sentence similarity S (AVG or LSE pooling)", attention=True)),
    hyperparams=(HyperParam("direction", "choice", "t-i", "which side attends: t-i (words attend to "
                            "regions) or i-t (regions attend to words)", choices=("t-i", "i-t")),
                 HyperParam("lambda_1", "float", 9.0, "inverse temperature of the attention softmax", 0.0, 100.0),
                 HyperParam("pooling", "choice", "avg", "relevance pooling", choices=("avg", "lse")),
                 HyperParam("lambda_2", "float", 6.0, "LSE pooling factor", 1e-3, 100.0),
                 HyperParam("clip", "choice", "relu", "thresholding of the similarities: relu = [.]_+ (paper); "
                            "leaky_relu = LeakyReLU(0.1) (authors' code)", choices=("relu", "leaky_relu")),
                 HyperParam("l2_normalise", "bool", False, "L2-normalise projected regions and words before "
                            "attending (authors' code)")),
    build=lambda shapes, p: StackedCrossAttention(shapes["regions"][2], shapes["words"][2], p["direction"],
                                                  p["lambda_1"], p["pooling"], p["lambda_2"], p["clip"],
                                                  p["l2_normalise"]),
    example_shapes={"regions": (2, 6, 20), "words": (2, 5, 16)},
    test_shapes=({"regions": (1, 1, 3), "words": (1, 7, 4)}, {"regions": (3, 9, 8), "words": (3, 2, 8)}),
    notes="Defaults follow the paper's t-i AVG setting (lambda_1 = 9); its i-t LSE setting uses lambda_1 = 4, "
          "lambda_2 = 6. Word features are taken as given (the paper's bi-GRU text encoder is not part of the "
          "block). By default regions are projected by Eq. 1 without the L2 normalisation of the released code "
          "and similarities are thresholded with [.]_+; clip=leaky_relu and l2_normalise=true give the "
          "released code's forms.",
)
