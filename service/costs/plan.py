"""The sweep plan (data/costs/plan.yaml): for each mechanism, which input sizes grow along which axis,
how the stated complexity's symbols relate to those sizes, and where the data records that constants
dominate at the measured sizes.

An axis is one of ``positions`` (H x W of a feature map, N tokens), ``channels`` (C or D) and
``batch`` (B). A curve grows the named dimensions together over ``sizes`` (dimensions in ``ratios``
follow at a fixed fraction); the curve's x is the product of the dimensions in ``x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..mechanisms.base import Mechanism
from . import bigo

Axis = Literal["positions", "channels", "batch"]
AXES: tuple[str, ...] = ("positions", "channels", "batch")
Quantity = Literal["time", "memory"]


class CurvePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dims: list[str] = Field(min_length=1, description="dimension symbols set to each size")
    sizes: list[int] = Field(min_length=3)
    ratios: dict[str, float] = Field(default_factory=dict, description="dims set to round(size * ratio)")
    x: list[str] | None = Field(default=None, description="dims whose product is the curve's x (default: dims)")
    fixed: dict[str, int] = Field(default_factory=dict, description="dims held at these sizes on this curve")

    @field_validator("sizes")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:], strict=False)) or v[0] < 1:
            raise ValueError("sizes must be positive and strictly increasing")
        return v


class TechniquePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fixed: dict[str, int] = Field(default_factory=dict, description="dims held fixed on every curve")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    attention_outputs: bool = Field(default=True, description="whether the forward also forms the attention "
                                    "maps the API returns (false where they are an N x N view of a sparse or "
                                    "linear computation that the method itself never forms)")
    curves: dict[Axis, CurvePlan]
    symbols: dict[str, list[str]] = Field(
        default_factory=dict, description="stated symbol -> the input dims whose product it stands for")
    stated: dict[Quantity, str] = Field(
        default_factory=dict, description="the part of complexity.time/memory that the implementation "
        "computes, when the text states several costs")
    constants_dominate: dict[Axis, dict[Quantity, str]] = Field(
        default_factory=dict, description="why a curve grows slower than stated at the measured sizes")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(gt=0, lt=1)
    memory_floor_bytes: int = Field(ge=0, description="peaks below this are under the measurement's resolution")
    techniques: dict[str, TechniquePlan]


def plan_path(knowledge_dir: Path) -> Path:
    return knowledge_dir / "costs" / "plan.yaml"


def load_plan(knowledge_dir: Path) -> Plan:
    return Plan.model_validate(yaml.safe_load(plan_path(knowledge_dir).read_text(encoding="utf-8")))


@dataclass
class Point:
    size: int
    x: int
    dims: dict[str, int]
    shapes: dict[str, tuple[int, ...]]


@dataclass
class CurveSpec:
    slug: str
    axis: str
    x_label: str
    points: list[Point] = field(default_factory=list)

    def weights(self) -> dict[str, float]:
        """d log(dim) / d log(x) for every dimension that changes along the curve."""
        first, last = self.points[0], self.points[-1]
        span = math.log(last.x) - math.log(first.x)
        return {d: (math.log(last.dims[d]) - math.log(first.dims[d])) / span
                for d in first.dims if first.dims[d] != last.dims[d]}


def expand(mech: Mechanism, tp: TechniquePlan, axis: str) -> CurveSpec:
    """The points of one curve: each size turned into every input's shape."""
    cp = tp.curves[axis]  # type: ignore[index]
    base = mech.bind_dims(mech.example_shapes)
    base.update(tp.fixed)
    base.update(cp.fixed)
    x_dims = cp.x or cp.dims
    spec = CurveSpec(mech.slug, axis, " × ".join(x_dims))
    for s in cp.sizes:
        dims = dict(base)
        for d in cp.dims:
            dims[d] = s
        for d, r in cp.ratios.items():
            dims[d] = max(1, round(s * r))
        shapes = {}
        for inp in mech.inputs:
            if inp.optional and inp.name not in mech.example_shapes:
                continue
            shapes[inp.name] = tuple(int(sym) if sym.isdigit() else dims[sym] for sym in inp.dims)
        spec.points.append(Point(s, math.prod(dims[d] for d in x_dims), dims, shapes))
    return spec


def symbol_weights(tp: TechniquePlan, curve: CurveSpec) -> dict[str, float]:
    """How fast each symbol of the stated complexity grows with the curve's x."""
    dim_w = curve.weights()
    out = dict(dim_w)  # a stated symbol spelled like an input dimension is that dimension
    for symbol, dims in tp.symbols.items():
        out[symbol] = sum(dim_w.get(d, 0.0) for d in dims)
    return out


def stated_expression(complexity: dict[str, str], tp: TechniquePlan, quantity: str) -> str:
    """The expression the measurement is held against: the plan's choice, else the catalogue's text."""
    text = tp.stated.get(quantity) or complexity.get(quantity) or ""  # type: ignore[call-overload]
    return bigo.inner(text)
