"""Slug -> :class:`Mechanism`. Every module in this package that defines ``MECHANISM`` is registered."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Mechanism

_SKIP = {"base", "registry", "runtime", "heads", "sampling"}


@cache
def all_mechanisms() -> dict[str, Mechanism]:
    found: dict[str, Mechanism] = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        mech = getattr(module, "MECHANISM", None)
        if mech is None:
            continue
        if mech.slug in found:
            raise RuntimeError(f"two modules register the slug {mech.slug!r}")
        if mech.slug.replace("-", "_") != info.name:
            raise RuntimeError(f"module {info.name} registers slug {mech.slug!r}; names must match")
        found[mech.slug] = mech
    return found


@cache
def slugs() -> frozenset[str]:
    """The implemented slugs, found from the module files alone (no torch import): the HTTP process
    knows which techniques can run without loading the mechanisms."""
    found = set()
    for path in Path(__file__).parent.glob("*.py"):
        name = path.stem
        if name in _SKIP or name.startswith("_"):
            continue
        if "\nMECHANISM = " in path.read_text(encoding="utf-8"):
            found.add(name.replace("_", "-"))
    return frozenset(found)


def get(slug: str) -> Mechanism | None:
    return all_mechanisms().get(slug)
