"""Fixtures shared by the mechanism tests."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from unittest import mock

import pytest
import torch


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """timm's package imports torchvision for its data pipeline and FX helpers at import time; the
    attention layers compared against here never call into it. The CPU build of torch installed for
    the tests has no matching torchvision wheel, so this answers those imports with inert modules.
    It is only installed when the real torchvision cannot be imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda name: mock.MagicMock(name=f"{spec.name}.{name}")
        return module

    def exec_module(self, module):
        pass


def _import_timm_layers():
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _TorchvisionStandIn())
    import timm.layers
    return timm.layers


@pytest.fixture(autouse=True)
def _fixed_global_seed():
    """Tests that draw inputs from torch's global generator get the same inputs on every run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20240417)
        yield


@pytest.fixture(scope="session")
def timm_layers():
    """timm's attention layers, for conformance tests; skipped when timm is not installed."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    return _import_timm_layers()
