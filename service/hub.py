"""torch.hub entry points for the reference implementations (used by ``hubconf.py`` at the repository root).

Each technique becomes one entry point named after its slug with underscores
(``squeeze-and-excitation`` -> ``squeeze_and_excitation``). An entry point takes the technique's
hyper-parameters as keyword arguments, plus the input sizes the module's construction reads (for most
techniques only the channels ``C``), and returns the same ``torch.nn.Module`` that
``POST /techniques/{slug}/run`` builds for that seed:

    torch.hub.load("path/to/attention-atlas", "cbam", channels=64, reduction=8, source="local")

Only torch is needed: this module imports nothing from the service but the mechanisms.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

from torch import nn

from .mechanisms import registry, runtime
from .mechanisms.base import Mechanism, MechanismInputError

# Friendly keyword names for the usual size symbols; the symbol itself (``C=64``) is always accepted too.
ALIASES = {"C": "channels", "D": "dim", "E": "embed_dim", "F": "features", "H": "height", "W": "width",
           "N": "tokens"}


def entry_name(slug: str) -> str:
    return slug.replace("-", "_")


class _Watched(tuple):
    """A shape that records which of its positions were read."""

    def __new__(cls, values, name: str, seen: set):
        obj = super().__new__(cls, values)
        obj._name, obj._seen = name, seen
        return obj

    def __getitem__(self, index):
        picked = range(len(self))[index]
        self._seen.update((self._name, j) for j in ([picked] if isinstance(picked, int) else picked))
        return super().__getitem__(index)

    def __iter__(self):
        self._seen.update((self._name, j) for j in range(len(self)))
        return super().__iter__()


def _symbols(mech: Mechanism) -> list[str]:
    """The size symbols of the inputs, batch and fixed sizes left out, in order of first appearance."""
    out: list[str] = []
    for spec in mech.inputs:
        for sym in spec.dims:
            if sym != "B" and not sym.isdigit() and sym not in out:
                out.append(sym)
    return out


@cache
def build_dims(slug: str) -> tuple[str, ...]:
    """The size symbols the module's construction reads (found by building once on the meta device)."""
    import torch

    mech = registry.get(slug)
    seen: set[tuple[str, int]] = set()
    shapes = {name: _Watched(shape, name, seen) for name, shape in mech.example_shapes.items()}
    with torch.device("meta"):
        mech.build(shapes, mech.defaults())
    dims = {spec.name: spec.dims for spec in mech.inputs}
    read = {dims[name][j] for name, j in seen}
    return tuple(s for s in _symbols(mech) if s in read)


def size_keywords(mech: Mechanism) -> dict[str, str]:
    """keyword -> size symbol: the alias where it is free (not a hyper-parameter), and the symbol itself."""
    taken = {h.name for h in mech.hyperparams} | {"seed", "pretrained"}
    out: dict[str, str] = {}
    for sym in _symbols(mech):
        alias = ALIASES.get(sym)
        if alias and alias not in taken:
            out[alias] = sym
        if sym not in taken:
            out[sym] = sym
    return out


def _where(mech: Mechanism, sym: str) -> str:
    uses = [f"{spec.name}[{', '.join(spec.dims)}]" for spec in mech.inputs if sym in spec.dims]
    return f"{sym} of {' and '.join(uses)}"


def _keywords_for(mech: Mechanism, sym: str) -> list[str]:
    return [k for k, s in size_keywords(mech).items() if s == sym]


def build(slug: str, *, seed: int = 0, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build the reference module of ``slug`` from hyper-parameters and input sizes (see the module doc)."""
    mech = registry.get(slug)
    if mech is None:
        raise ValueError(f"no reference implementation named {slug!r}")
    if pretrained:
        raise ValueError(f"{slug}: there are no trained weights; the module is initialised from `seed` "
                         "(load your own with module.load_state_dict)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{slug}: seed must be a non-negative integer, got {seed!r}")
    keywords = size_keywords(mech)
    hyper = {h.name for h in mech.hyperparams}
    unknown = sorted(set(kwargs) - hyper - set(keywords))
    if unknown:
        raise TypeError(f"{slug}: unexpected keyword argument(s) {unknown}; hyper-parameters: {sorted(hyper)}, "
                        f"input sizes: {sorted(keywords)}")
    sizes: dict[str, int] = {}
    for key in sorted(set(kwargs) & set(keywords)):
        sym, value = keywords[key], kwargs[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{slug}: {key} must be a positive integer (the size {_where(mech, sym)}), got {value!r}")
        if sizes.setdefault(sym, value) != value:
            raise ValueError(f"{slug}: {key}={value} disagrees with {sizes[sym]} given for {sym} under another name")
    missing = [s for s in build_dims(slug) if s not in sizes]
    if missing:
        wanted = "; ".join(f"{' or '.join(_keywords_for(mech, s))}= (the size {_where(mech, s)})" for s in missing)
        raise TypeError(f"{slug}: the module's weights depend on input sizes that were not given: {wanted}. "
                        f"Example: torch.hub.load(repo, {entry_name(slug)!r}, "
                        + ", ".join(f"{_keywords_for(mech, s)[0]}={_example_size(mech, s)}" for s in missing) + ")")
    defaulted = [s for s in _symbols(mech) if s not in sizes]
    shapes = {spec.name: tuple(sizes.get(d, _example_size(mech, d)) if not d.isdigit() else int(d) for d in spec.dims)
              for spec in mech.inputs if spec.name in mech.example_shapes}
    try:
        params = mech.validate(shapes, {k: v for k, v in kwargs.items() if k in hyper})
    except MechanismInputError as exc:
        note = ""
        if defaulted:
            note = (" (sizes not given were taken from the example input: "
                    + ", ".join(f"{s}={_example_size(mech, s)}" for s in defaulted)
                    + "; pass " + ", ".join(f"{_keywords_for(mech, s)[0]}=" for s in defaulted if _keywords_for(mech, s))
                    + " to check with yours)")
        raise ValueError(f"{slug}: {exc}{note}") from None
    return runtime.build_module(mech, shapes, params, seed)


def _example_size(mech: Mechanism, sym: str) -> int:
    for spec in mech.inputs:
        if spec.name in mech.example_shapes and sym in spec.dims:
            return mech.example_shapes[spec.name][spec.dims.index(sym)]
    raise KeyError(sym)


def _fmt_default(h) -> str:
    bounds = ""
    if h.choices:
        bounds = f", one of {list(h.choices)}"
    elif h.minimum is not None or h.maximum is not None:
        bounds = f", {h.bounds()}"
    return f"{h.name}: {h.kind} = {h.default!r}{bounds}. {h.description}"


def docstring(slug: str) -> str:
    """What ``torch.hub.help`` shows: the call, the sizes and hyper-parameters, then the equations and shapes."""
    mech = registry.get(slug)
    module = sys.modules.get(mech.build.__module__) or inspect.getmodule(mech.build)
    needed = build_dims(slug)
    keywords = size_keywords(mech)
    example = ", ".join(f"{_keywords_for(mech, s)[0]}={_example_size(mech, s)}" for s in needed)
    lines = [f"{mech.title}.", "", f"Reference: {mech.reference}.", "",
             f"    torch.hub.load(repo, {entry_name(slug)!r}{', ' + example if example else ''}, source=...)",
             "", "Returns a torch.nn.Module in eval mode whose forward takes "
             + ", ".join(f"{i.name} [{', '.join(i.dims)}]{' (optional)' if i.optional else ''}" for i in mech.inputs)
             + " as keyword arguments" + (" plus generator=torch.Generator" if mech.stochastic else "")
             + " and returns a dict: "
             + ", ".join(f"{o.name} [{', '.join(o.dims)}]" for o in mech.outputs) + ".", "",
             "Input sizes (keyword arguments):"]
    for sym in _symbols(mech):
        names = " or ".join(k for k, s in keywords.items() if s == sym)
        default = _example_size(mech, sym)
        state = "required" if sym in needed else f"optional, the module does not depend on it (default {default})"
        lines.append(f"    {names}: the size {_where(mech, sym)}; {state}")
    lines += ["", "Hyper-parameters (keyword arguments):"]
    lines += [f"    {_fmt_default(h)}" for h in mech.hyperparams] or ["    none"]
    lines += ["    seed: int = 0. Initialises the weights (the run API builds the same module for the same seed).",
              "    pretrained: bool = False. There are no trained weights; True is refused."]
    if mech.constraints:
        lines += ["", "Constraints: " + "; ".join(mech.constraints) + "."]
    if mech.notes:
        lines += ["", mech.notes]
    if module is not None and module.__doc__:
        lines += ["", "Equations and shapes", "--------------------", module.__doc__.strip()]
    return "\n".join(lines)


class HubEntry:
    """A torch.hub entry point: callable, with the technique's documentation as ``__doc__`` (built on first
    access, so ``torch.hub.list`` stays cheap)."""

    def __init__(self, slug: str):
        self.slug = slug
        self.__name__ = self.__qualname__ = entry_name(slug)
        self.__module__ = "hubconf"

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        return docstring(self.slug)

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        if args:
            raise TypeError(f"{self.__name__} takes keyword arguments only, e.g. channels=64")
        return build(self.slug, **kwargs)

    def __repr__(self) -> str:
        return f"<torch.hub entry point {self.__name__} ({self.slug})>"


def entry_points() -> dict[str, Callable[..., nn.Module]]:
    return {entry_name(slug): HubEntry(slug) for slug in registry.all_mechanisms()}
