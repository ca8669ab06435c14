"""The export and run commands."""

from __future__ import annotations

import bibtexparser
import numpy as np
import torch
from safetensors.torch import load_file

from service.cli import main as cli_main
from service.mechanisms import registry, runtime


def test_export_writes_the_filtered_library(tmp_path, monkeypatch, client):
    monkeypatch.setenv("ATLAS_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    out = tmp_path / "channel.bib"
    assert cli_main(["export", "--subcategory", "channel", "--format", "bibtex", "-o", str(out)]) == 0
    keys = {e.key for e in bibtexparser.parse_string(out.read_text()).entries}
    channel = client.get("/techniques", params={"subcategory": "channel", "limit": 100}).json()["items"]
    assert keys == {t["citation"]["citekey"] for t in channel} | {"hassaninVisualAttentionMethods2022"}
    assert cli_main(["export", "--format", "no-such-format"]) == 1


def test_run_writes_outputs_matching_the_library(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(2, 32, 5, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.safetensors"
    assert cli_main(["run", "cbam", "-i", str(tmp_path / "x.npy"), "--hyperparameters", '{"reduction": 4}',
                     "--seed", "3", "-o", str(out)]) == 0
    got = load_file(out)
    want = runtime.run(registry.get("cbam"), {"x": torch.from_numpy(x)}, {"reduction": 4}, seed=3)
    assert set(got) == set(want)
    torch.testing.assert_close(got["output"], want["output"])
    assert cli_main(["run", "cbam", "-i", str(tmp_path / "x.npy"), "--hyperparameters", '{"reduction": 64}']) == 2
    assert "reduction=64" in capsys.readouterr().err
