"""Where the authors' released code differs from the paper, per technique (from data/techniques/*.yaml)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from ..models import Technique


def divergences_for(session: Session, slug: str) -> list[dict[str, Any]]:
    """The technique's recorded paper-vs-released-code differences, in file order; [] when none or unknown.

    Each item has ``what``, ``paper``, ``released_code``, ``evidence`` (a link to the released file at a
    commit) and, where one hyper-parameter setting of the reference implementation gives the released
    form, ``reproduce_with`` ({name: value})."""
    t = session.get(Technique, slug)
    return [dict(d) for d in t.divergences] if t is not None else []
