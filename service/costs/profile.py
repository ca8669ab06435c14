"""Cost profiles on disk: ``data/costs/<profile>.json``, one per machine, written by the sweep and
loaded by ``db sync``. The files are JSON laid out for reading and diffing: one point per line.

A profile names its machine (CPU model, threads, torch; GPU and CUDA version on a GPU), the load on
the machine before and after the sweep, the method, and per technique its curves with fitted exponents.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..catalog.loader import Problem

AXES: tuple[str, ...] = ("positions", "channels", "batch")
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class PointModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int = Field(gt=0)
    shapes: dict[str, list[int]]
    latency_s: float = Field(gt=0)
    cpu_s: float | None = Field(default=None, ge=0)
    repeats: int = Field(ge=1)
    spread: float = Field(ge=0)
    peak_bytes: int = Field(ge=0)
    flops: int | None = Field(default=None, ge=0)
    parameters: int = Field(ge=0)
    output_elements: int = Field(ge=0)

    @field_validator("latency_s", "spread")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


class FitModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exponent: float | None
    points: int
    stated: str | None = None
    stated_exponent: float | None = None
    lowest_term: float | None = None
    verdict: str | None = None
    note: str | None = None


class CurveModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    axis: Literal["positions", "channels", "batch"]
    x: str
    points: list[PointModel]
    stopped: str
    weights: dict[str, float]
    fits: dict[Literal["time", "memory", "flops"], FitModel]

    @field_validator("points")
    @classmethod
    def _increasing(cls, v: list[PointModel]) -> list[PointModel]:
        if any(b.x <= a.x for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("points must have strictly increasing x")
        return v


class TechniqueCosts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: dict[str, Any]
    attention_outputs: bool = True
    curves: list[CurveModel]


class ProfileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    profile: str
    machine: dict[str, Any]
    conditions: dict[str, Any]
    method: dict[str, Any]
    techniques: dict[str, TechniqueCosts]
    partial_runs: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("profile")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PROFILE_NAME.match(v):
            raise ValueError("profile names are lowercase letters, digits and hyphens")
        return v

    @field_validator("machine")
    @classmethod
    def _machine(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("device") not in ("cpu", "cuda"):
            raise ValueError("machine.device must be 'cpu' or 'cuda'")
        return v


def costs_dir(knowledge_dir: Path) -> Path:
    return knowledge_dir / "costs"


def _round(value: Any) -> Any:
    """Floats to four significant digits (timings are not more precise than that)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _layout(value: Any, indent: int = 0, width: int = 110, flat_items: bool = False) -> str:
    """JSON with containers on one line when they fit, else one member per line; the items of a
    ``points`` list are always one line each."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or len(flat) + indent <= width or not value:
        return flat
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: "
                 f"{_layout(v, indent + 1, width, flat_items=(k == 'points')).lstrip()}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if flat_items:
        items = [inner + json.dumps(v, ensure_ascii=False) for v in value]
    else:
        items = [inner + _layout(v, indent + 1, width).lstrip() for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def dumps(profile: dict[str, Any]) -> str:
    profile = _round(profile)
    ProfileModel.model_validate(profile)
    return _layout(profile) + "\n"


def write(profile: dict[str, Any], knowledge_dir: Path) -> Path:
    path = costs_dir(knowledge_dir) / f"{profile['profile']}.json"
    text = dumps(profile)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def profile_files(knowledge_dir: Path) -> list[Path]:
    d = costs_dir(knowledge_dir)
    return sorted(d.glob("*.json")) if d.is_dir() else []


def load_profiles(knowledge_dir: Path, known_slugs: set[str]) -> tuple[dict[str, ProfileModel], list[Problem]]:
    """Every profile under data/costs/, validated; problems are returned (file and field), not raised."""
    profiles: dict[str, ProfileModel] = {}
    problems: list[Problem] = []
    for path in profile_files(knowledge_dir):
        where = f"costs/{path.name}"
        try:
            prof = ProfileModel.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(Problem(file=where, message=f"not readable as JSON: {exc}"))
            continue
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(Problem(file=where, field=loc, message=err["msg"]))
            continue
        if path.stem != prof.profile:
            problems.append(Problem(file=where, field="profile",
                                    message=f"is {prof.profile!r}; the file must be {prof.profile}.json"))
        for slug in sorted(set(prof.techniques) - known_slugs):
            problems.append(Problem(file=where, field=f"techniques.{slug}",
                                    message="no such technique in the catalogue"))
        for slug, tc in prof.techniques.items():
            axes = [c.axis for c in tc.curves]
            if len(set(axes)) != len(axes):
                problems.append(Problem(file=where, field=f"techniques.{slug}", message="one curve per axis"))
        profiles[prof.profile] = prof
    return profiles, problems


__all__ = ["AXES", "ProfileModel", "dumps", "load_profiles", "write"]
