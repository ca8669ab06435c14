"""Auto Learning Attention (AutoLA): the searched High Order Group Attention (HOGA) module.

Ma, Zhang, Xia, Tao, "Auto Learning Attention", NeurIPS 2020, Sec. 3 (HOGA as a DAG over channel
groups, differentiable search) with the architecture found by the search as released by the authors
(genotype ``Attention`` of github.com/btma48/AutoLA, searched on CIFAR-10 with ResNet-20).

Shapes: x [B, C, H, W] -> output [B, C, H, W], channel_weights [B, C], group_weights [B, G],
spatial_maps [B, 2, H, W]   (G = C/4 channels per group).
- Group split (Sec. 3.1): x = [x_1, x_2, x_3, x_4], four groups of G = C/4 channels.
- High-order DAG: node k (k = 1..4) sums one attention operation per incoming edge; node k's edges start
  from its own group x_k ("input 0") and from the earlier nodes 1..k-1 (high-order connections):
    n1 = x_1
    n2 = SpatialSep(x_2) + SepGate(n1)
    n3 = CBAM(x_3) + n2 + SepGate(n1)
    n4 = SepGate(x_4) + n1 + SepGate(n3) + DilGate(n2)
  (every "SepGate"/"DilGate" edge has its own weights). The operations of the search space:
    SepGate(y)    = y * sigmoid(BN(pw(dw3x3(relu(BN(pw(dw3x3(y))))))))      separable-conv channel-spatial gate
    DilGate(y)    = y * sigmoid(BN(pw(dw3x3_dilation2(y))))                 dilated-conv gate
    SpatialSep(y) = y * sigmoid(the same separable stack on [max_c(y); mean_c(y)] -> 1 map)   spatial gate
    CBAM(y)       = CBAM channel gate (shared MLP on avg and max pool, r = 4) then spatial gate (7x7 conv + BN
                    on [max_c; mean_c])
- Aggregation: cat(n1..n4, SE(x_1 + x_2 + x_3 + x_4)) (5G channels, SE with r = 8) -> 1x1 conv + BN + ReLU ->
  1x1 conv + BN, added to x (residual), then an SE gate over all C channels (r = 8) gives the output.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import InputSpec, Mechanism, OutputSpec

# (operation, input) per edge, node by node; input 0 = the node's own channel group, k = node k.
GENOTYPE = (
    (("skip_connect", 0),),
    (("sep_conv_3x3_spatial", 0), ("sep_conv_3x3", 1)),
    (("cbam", 0), ("skip_connect", 2), ("sep_conv_3x3", 1)),
    (("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 3), ("dil_conv_3x3", 2)),
)
GROUPS = 4


def _channel_pool(y: torch.Tensor) -> torch.Tensor:
    return torch.cat([y.amax(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)], dim=1)


class SE(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction, bias=False)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=False)

    def forward(self, y):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean(dim=(2, 3))))))
        return y * s[:, :, None, None], s


class SepStack(nn.Sequential):
    """dw3x3 -> pw -> BN -> ReLU -> dw3x3 -> pw -> BN (channels cin -> cout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cin, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class SepGate(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.op = SepStack(c, c)

    def forward(self, y):
        return y * torch.sigmoid(self.op(y)), None


class DilGate(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.op = nn.Sequential(nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=c, bias=False),
                                nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, y):
        return y * torch.sigmoid(self.op(y)), None


class SpatialSep(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.op = SepStack(2, 1)

    def forward(self, y):
        m = torch.sigmoid(self.op(_channel_pool(y)))
        return y * m, m


class CBAMOp(nn.Module):
    def __init__(self, c: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(c, c // reduction)
        self.fc2 = nn.Linear(c // reduction, c)
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, y):
        mlp = lambda v: self.fc2(torch.relu(self.fc1(v)))  # noqa: E731
        y = y * torch.sigmoid(mlp(y.mean(dim=(2, 3))) + mlp(y.amax(dim=(2, 3))))[:, :, None, None]
        m = torch.sigmoid(self.bn(self.conv(_channel_pool(y))))
        return y * m, m


class Skip(nn.Module):
    def forward(self, y):
        return y, None


OPS = {"skip_connect": lambda c: Skip(), "sep_conv_3x3": SepGate, "dil_conv_3x3": DilGate,
       "sep_conv_3x3_spatial": SpatialSep, "cbam": CBAMOp}


class AutoLearningAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        g = channels // GROUPS
        self.edges = nn.ModuleList(nn.ModuleList(OPS[name](g) for name, _ in node) for node in GENOTYPE)
        self.group_se = SE(g, 8)
        self.channel_back = nn.Sequential(nn.Conv2d(5 * g, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                          nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
                                          nn.BatchNorm2d(channels))
        self.out_se = SE(channels, 8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        groups = torch.chunk(x, GROUPS, dim=1)
        nodes: list[torch.Tensor] = []
        maps = []
        for k, (spec, ops) in enumerate(zip(GENOTYPE, self.edges, strict=True)):
            total = 0
            for (_, src), op in zip(spec, ops, strict=True):
                y, m = op(groups[k] if src == 0 else nodes[src - 1])
                total = total + y
                if m is not None:
                    maps.append(m)
            nodes.append(total)
        summed, gw = self.group_se(sum(groups))
        out, cw = self.out_se(self.channel_back(torch.cat(nodes + [summed], dim=1)) + x)
        return {"output": out, "channel_weights": cw, "group_weights": gw, "spatial_maps": torch.cat(maps, dim=1)}


def _check(shapes, params):
    c = shapes["x"][1]
    if c % GROUPS or c < 32:
        return [f"C={c} must be a multiple of 4 and at least 32 (four groups of C/4 channels, SE with r = 8 on C/4)"]
    return []


MECHANISM = Mechanism(
    slug="auto-learning-attention",
    title="AutoLA: the searched high-order group attention (HOGA) module, four channel groups wired as a DAG",
    reference="Ma et al., NeurIPS 2020, Sec. 3 (HOGA, search space) with the released searched genotype",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "attended feature map"),
             OutputSpec("channel_weights", ("B", "C"), "final SE channel gate in (0, 1)", attention=True),
             OutputSpec("group_weights", ("B", "G"), "SE gate on the sum of the four groups (G = C/4)",
                        attention=True),
             OutputSpec("spatial_maps", ("B", "2", "H", "W"),
                        "spatial gates of the two spatial-attention edges (node 2 SpatialSep, node 3 CBAM)",
                        attention=True)),
    hyperparams=(),
    build=lambda shapes, p: AutoLearningAttention(shapes["x"][1]),
    example_shapes={"x": (2, 32, 7, 7)},
    test_shapes=({"x": (1, 32, 5, 3)}, {"x": (3, 64, 1, 1)}),
    constraints=("C multiple of 4", "C >= 32"),
    check=_check,
    notes="The block is the fixed architecture the differentiable search returned (the search itself, with "
          "softmax-relaxed mixtures over the candidate operations, is a training procedure and not part of "
          "the module). Group count 4 and SE reductions 8 are those of the released model.",
)
