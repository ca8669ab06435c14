"""Cost profiles in the database: written by ``db sync`` from data/costs/, read by the API and pages."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlmodel import Session

from ..models import CostCurve, CostProfile, utcnow
from .profile import ProfileModel


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def write_costs(session: Session, profiles: dict[str, ProfileModel]) -> list[str]:
    """Make the database hold exactly these profiles; unchanged profiles are not touched. Returns the
    names of the profiles written."""
    existing = {p.name: p for p in session.execute(select(CostProfile)).scalars()}
    written: list[str] = []
    for name in sorted(set(existing) - set(profiles)):
        session.execute(delete(CostCurve).where(CostCurve.profile == name))
        session.execute(delete(CostProfile).where(CostProfile.name == name))
    for name, prof in sorted(profiles.items()):
        dump = prof.model_dump(mode="json")
        digest = _hash(dump)
        have = existing.get(name)
        if have is not None and have.content_hash == digest:
            continue
        session.execute(delete(CostCurve).where(CostCurve.profile == name))
        if have is None:
            have = CostProfile(name=name)
            session.add(have)
        have.device = prof.machine["device"]
        have.machine, have.conditions, have.method = dump["machine"], dump["conditions"], dump["method"]
        have.content_hash = digest
        have.updated_at = utcnow()
        session.flush()
        for slug, tc in sorted(dump["techniques"].items()):
            for curve in tc["curves"]:
                session.add(CostCurve(profile=name, technique_slug=slug, axis=curve["axis"], x_label=curve["x"],
                                      stopped=curve["stopped"], hyperparameters=tc["hyperparameters"],
                                      points=curve["points"], fits=curve["fits"]))
        written.append(name)
    session.flush()
    return written


def profiles(session: Session) -> list[CostProfile]:
    return list(session.execute(select(CostProfile).order_by(CostProfile.name)).scalars())


def get_profile(session: Session, name: str) -> CostProfile | None:
    return session.get(CostProfile, name)


def curves(session: Session, profile: str, slugs: Iterable[str], axis: str | None = None) -> list[CostCurve]:
    q = select(CostCurve).where(CostCurve.profile == profile, CostCurve.technique_slug.in_(list(slugs)))
    if axis is not None:
        q = q.where(CostCurve.axis == axis)
    return list(session.execute(q.order_by(CostCurve.technique_slug, CostCurve.axis)).scalars())


def profile_public(p: CostProfile) -> dict[str, Any]:
    return {"name": p.name, "device": p.device, "machine": p.machine, "conditions": p.conditions,
            "method": p.method}


def curve_public(c: CostCurve) -> dict[str, Any]:
    return {"technique": c.technique_slug, "axis": c.axis, "x": c.x_label, "stopped": c.stopped,
            "hyperparameters": c.hyperparameters, "fits": c.fits,
            "points": [{k: p.get(k) for k in ("x", "shapes", "latency_s", "cpu_s", "peak_bytes", "parameters",
                                              "flops", "repeats", "spread")} for p in c.points]}
