"""The contract every reference implementation follows.

A mechanism is described by a :class:`Mechanism` record (what it takes, what it returns, its
hyper-parameters with defaults and bounds, and a ``build`` factory) and implemented as a plain
``torch.nn.Module`` whose ``forward`` takes the named input tensors as keyword arguments and returns
a ``dict`` of named tensors: ``"output"`` first, then the attention weights it computed.
Stochastic mechanisms also take ``generator: torch.Generator`` and draw every random number from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

Shapes = Mapping[str, tuple[int, ...]]
Params = Mapping[str, Any]


class MechanismInputError(ValueError):
    """A client-side problem with inputs or hyper-parameters; ``field`` names what to change."""

    def __init__(self, message: str, *, field: str | None = None, expected: str | None = None):
        super().__init__(message)
        self.field = field
        self.expected = expected


@dataclass(frozen=True)
class InputSpec:
    """A named input tensor. ``dims`` are symbolic sizes; the same symbol must agree across inputs."""

    name: str
    dims: tuple[str, ...]
    description: str
    optional: bool = False


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dims: tuple[str, ...]
    description: str
    attention: bool = False  # attention outputs are left out when the client asks for output only


@dataclass(frozen=True)
class HyperParam:
    name: str
    kind: str  # "int" | "float" | "bool" | "choice"
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None

    def coerce(self, value: Any) -> Any:
        """Return ``value`` checked and converted to this parameter's kind, or raise."""
        where = f"hyperparameters.{self.name}"
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise MechanismInputError(f"{self.name} must be true or false", field=where, expected="boolean")
        if self.kind == "choice":
            if value in (self.choices or ()):
                return value
            raise MechanismInputError(
                f"{self.name}={value!r} is not one of {list(self.choices or ())}", field=where,
                expected=f"one of {list(self.choices or ())}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MechanismInputError(f"{self.name} must be a number", field=where, expected=self.kind)
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise MechanismInputError(f"{self.name} must be an integer", field=where, expected="integer")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise MechanismInputError(f"{self.name} must be finite", field=where, expected="finite number")
        if self.minimum is not None and value < self.minimum:
            raise MechanismInputError(f"{self.name}={value} is below the minimum {self.minimum}",
                                      field=where, expected=self.bounds())
        if self.maximum is not None and value > self.maximum:
            raise MechanismInputError(f"{self.name}={value} is above the maximum {self.maximum}",
                                      field=where, expected=self.bounds())
        return value

    def bounds(self) -> str:
        lo = "-inf" if self.minimum is None else self.minimum
        hi = "inf" if self.maximum is None else self.maximum
        return f"{self.kind} in [{lo}, {hi}]"


@dataclass(frozen=True, eq=False)  # identity equality: hashable, one record per slug
class Mechanism:
    """Everything the registry, the API and the tests need to know about one implementation."""

    slug: str
    title: str  # what exactly is implemented, e.g. "SE block (squeeze, excitation, scale)"
    reference: str  # which paper and equations, e.g. "Hu et al., CVPR 2018, Eqs. 2-4"
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    hyperparams: tuple[HyperParam, ...]
    build: Callable[[Shapes, Params], nn.Module]
    example_shapes: dict[str, tuple[int, ...]]
    test_shapes: tuple[dict[str, tuple[int, ...]], ...] = ()  # further valid shape sets
    constraints: tuple[str, ...] = ()  # human-readable, e.g. "C divisible by reduction"
    check: Callable[[Shapes, Params], list[str]] | None = None  # returns constraint violations
    stochastic: bool = False
    notes: str = ""

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparams}

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        given = dict(given or {})
        known = {h.name: h for h in self.hyperparams}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise MechanismInputError(
                f"unknown hyper-parameter(s) {unknown} for {self.slug}", field="hyperparameters",
                expected=f"any of {sorted(known)}")
        return {name: h.coerce(given[name]) if name in given else h.default for name, h in known.items()}

    def bind_dims(self, shapes: Shapes) -> dict[str, int]:
        """Check names and ranks of the given shapes and that shared symbols agree; return the sizes."""
        names = {i.name for i in self.inputs}
        unknown = sorted(set(shapes) - names)
        if unknown:
            raise MechanismInputError(f"unknown input(s) {unknown}", field="inputs",
                                      expected=f"inputs named {sorted(names)}")
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            if spec.name not in shapes:
                if spec.optional:
                    continue
                raise MechanismInputError(f"missing input '{spec.name}'", field=f"inputs.{spec.name}",
                                          expected=f"a tensor of shape [{', '.join(spec.dims)}]")
            shape = tuple(shapes[spec.name])
            if len(shape) != len(spec.dims):
                raise MechanismInputError(
                    f"input '{spec.name}' has rank {len(shape)}, expected rank {len(spec.dims)} "
                    f"[{', '.join(spec.dims)}]", field=f"inputs.{spec.name}",
                    expected=f"shape [{', '.join(spec.dims)}]")
            for sym, n in zip(spec.dims, shape, strict=True):
                if n < 1:
                    raise MechanismInputError(f"input '{spec.name}' has an empty dimension {sym}",
                                              field=f"inputs.{spec.name}", expected="sizes >= 1")
                if sym.isdigit():
                    if n != int(sym):
                        raise MechanismInputError(
                            f"input '{spec.name}' dimension must be {sym}, got {n}",
                            field=f"inputs.{spec.name}", expected=f"shape [{', '.join(spec.dims)}]")
                elif sizes.setdefault(sym, n) != n:
                    raise MechanismInputError(
                        f"dimension {sym} of '{spec.name}' is {n} but {sizes[sym]} elsewhere",
                        field=f"inputs.{spec.name}", expected=f"the same {sym} in every input")
        return sizes

    def validate(self, shapes: Shapes, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validate shapes and hyper-parameters together; return the resolved hyper-parameters."""
        resolved = self.resolve_params(params)
        self.bind_dims(shapes)
        if self.check is not None:
            problems = self.check(shapes, resolved)
            if problems:
                raise MechanismInputError("; ".join(problems), field="inputs",
                                          expected="; ".join(self.constraints) or None)
        return resolved


@dataclass
class RegistryError(Exception):
    message: str
    problems: list[str] = field(default_factory=list)
