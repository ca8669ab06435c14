"""What the cost section of a technique page and the compare page show."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from ..catalog import query
from ..costs import store, svg
from ..costs.profile import AXES
from ..models import CostCurve, CostProfile, Reference, Technique
from . import biblio, pages


def _time(p: dict[str, Any]) -> float:
    """What the time fit reads: the CPU time of the forward where measured, else its wall time."""
    return p.get("cpu_s") or p["latency_s"]


def _memory(p: dict[str, Any]) -> int:
    return p["peak_bytes"] + 4 * p["parameters"]


def _series(label: str, c: CostCurve, quantity: str) -> svg.Series:
    xs = [p["x"] for p in c.points]
    ys = [_time(p) if quantity == "time" else _memory(p) for p in c.points]
    f = c.fits.get(quantity, {})
    return svg.Series(label, xs, ys, f.get("exponent"), f.get("stated_exponent"))


def _profile_line(prof: CostProfile) -> str:
    m = prof.machine
    where = m.get("gpu") or m.get("cpu_model") or prof.device
    extra = f", CUDA {m['cuda']}" if m.get("cuda") else f", {m.get('torch_threads')} thread(s)"
    return f"{prof.name}: {where}{extra}, torch {m.get('torch')}"


def charts(curves: list[tuple[str, CostCurve]], prof: CostProfile, axis: str, id_prefix: str) -> dict[str, Any]:
    """Latency and memory charts of several techniques' curves on one axis, and a table of the fits."""
    rows = []
    for label, c in curves:
        rows.append({"label": label, "slug": c.technique_slug, "x": c.x_label, "stopped": c.stopped,
                     "time": c.fits.get("time", {}), "memory": c.fits.get("memory", {}),
                     "flops": c.fits.get("flops", {}),
                     "cpu_time": any(p.get("cpu_s") for p in c.points),
                     "points": [{"x": p["x"], "shapes": p["shapes"], "ms": p["latency_s"] * 1e3,
                                 "cpu_ms": p["cpu_s"] * 1e3 if p.get("cpu_s") else None,
                                 "mib": _memory(p) / (1 << 20), "flops": p["flops"], "parameters": p["parameters"]}
                                for p in c.points]})
    return {
        "axis": axis, "axis_name": svg.AXIS_NAMES.get(axis, axis), "cpu_time": prof.device == "cpu",
        "latency": svg.chart([_series(lbl, c, "time") for lbl, c in curves], svg.LATENCY, axis,
                             f"{id_prefix}-{axis}-latency", prof.name),
        "memory": svg.chart([_series(lbl, c, "memory") for lbl, c in curves], svg.MEMORY, axis,
                            f"{id_prefix}-{axis}-memory", prof.name),
        "rows": rows,
    }


def cost_section(session: Session, t: Technique, profile_name: str) -> dict[str, Any] | None:
    """The technique page's measured curves (None when the profile has none for it)."""
    prof = store.get_profile(session, profile_name)
    if prof is None:
        return None
    rows = store.curves(session, prof.name, [t.slug])
    if not rows:
        return None
    return {"profile": prof, "profile_line": _profile_line(prof),
            "charts": [charts([(t.name, c)], prof, c.axis, f"cost-{t.slug}") for c in rows]}


def compare_context(session: Session, techniques: list[Technique], prof: CostProfile | None,
                    root: str) -> dict[str, Any]:
    slugs = [t.slug for t in techniques]
    rel = query.load_related(session, slugs)
    items = []
    for t in techniques:
        paper = pages.paper_for(rel.references.get(t.citekey))
        items.append({"t": query.to_public(t, rel, base_url=root), "paper": paper,
                      "authors": biblio.author_list(paper) if paper else ""})
    names = {t.slug: t.name for t in techniques}
    chart_list = []
    if prof is not None:
        by_axis: dict[str, list[tuple[str, CostCurve]]] = {}
        for c in store.curves(session, prof.name, slugs):
            by_axis.setdefault(c.axis, []).append((names[c.technique_slug], c))
        for axis in AXES:
            if axis in by_axis:
                ordered = sorted(by_axis[axis], key=lambda lc: slugs.index(lc[1].technique_slug))
                chart_list.append(charts(ordered, prof, axis, "compare"))
    survey_key = query.survey_citekey(session)
    survey = pages.paper_for(session.get(Reference, survey_key)) if survey_key else None
    return {"root": root, "items": items, "slugs": slugs, "charts": chart_list, "profile": prof,
            "profile_line": _profile_line(prof) if prof else None, "survey": survey,
            "json_url": f"{root}/costs?slugs={','.join(slugs)}" + (f"&profile={prof.name}" if prof else "")}
