"""`attention-atlas bench costs` end to end on a small plan: a profile file that db sync accepts, and a
partial re-run that replaces only its own entries."""

from __future__ import annotations

import json
import shutil

import yaml

from service.catalog.sync import sync
from service.cli import main as cli_main
from service.db import make_engine
from service.migrate import upgrade
from service.settings import REPO_DATA

from ..conftest import make_settings

SMALL = {
    "tolerance": 0.35, "memory_floor_bytes": 1 << 20,
    "techniques": {
        "squeeze-and-excitation": {"fixed": {"B": 1, "C": 32}, "curves": {
            "positions": {"dims": ["H", "W"], "sizes": [4, 8, 16, 32]},
            "channels": {"dims": ["C"], "sizes": [16, 32, 64, 128], "fixed": {"H": 4, "W": 4}}}},
        "efficient-channel-attention": {"fixed": {"B": 1, "C": 32}, "curves": {
            "positions": {"dims": ["H", "W"], "sizes": [4, 8, 16, 32]}}},
    }}


def test_sweep_command_writes_a_profile_that_sync_loads(tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(REPO_DATA, root)
    for f in (root / "costs").glob("*.json"):
        f.unlink()
    (root / "costs" / "plan.yaml").write_text(yaml.safe_dump(SMALL))
    args = ["bench", "costs", "--data", str(root), "--profile", "small", "--curve-budget", "10"]

    assert cli_main([*args, "--axis", "positions"]) == 0
    path = root / "costs" / "small.json"
    first = json.loads(path.read_text())
    assert sorted(first["techniques"]) == ["efficient-channel-attention", "squeeze-and-excitation"]
    assert [c["axis"] for c in first["techniques"]["squeeze-and-excitation"]["curves"]] == ["positions"]

    # re-measure one technique: its entry is replaced, the other is kept, the re-run is recorded
    assert cli_main([*args, "--only", "squeeze-and-excitation"]) == 0
    second = json.loads(path.read_text())
    assert second["techniques"]["efficient-channel-attention"] == first["techniques"]["efficient-channel-attention"]
    assert sorted(c["axis"] for c in second["techniques"]["squeeze-and-excitation"]["curves"]) == ["channels", "positions"]
    assert second["partial_runs"][0]["techniques"] == ["squeeze-and-excitation"]

    engine = make_engine(make_settings(tmp_path))
    upgrade(engine)
    assert sync(engine, root).cost_profiles == ["small"]
    engine.dispose()

    assert cli_main([*args, "--only", "no-such-technique"]) == 2
    assert "no-such-technique" in capsys.readouterr().err
    assert cli_main(["bench", "costs", "--data", str(root), "--profile", "Not A Name"]) == 2
    assert cli_main(["bench", "costs", "--data", str(root), "--device", "abacus"]) == 2
