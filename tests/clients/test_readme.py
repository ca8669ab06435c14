"""What the README says the catalogue queries return is what they return."""

from __future__ import annotations

import re

from .conftest import REPO


def _documented_totals() -> list[tuple[str, int]]:
    lines = (REPO / "README.md").read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        m = re.match(r"curl '(?:http://127\.0\.0\.1:8000)(/techniques\?[^']*)'", line.strip())
        if not m:
            continue
        for follow in lines[i + 1:i + 3]:
            if not follow.startswith("#"):
                break
            total = re.search(r'"total": (\d+)', follow)
            if total:
                found.append((m.group(1), int(total.group(1))))
                break
    return found


def test_readme_totals_match_the_api(client):
    documented = _documented_totals()
    assert len(documented) >= 2
    for path, total in documented:
        assert client.get(path).json()["total"] == total, path
