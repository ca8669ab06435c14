"""The compare page, the cost charts on technique pages and the index's compare selection, checked on
the DOM (standard-library parser), plus one check in a real headless Chromium when it is installed."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import threading
import time

import pytest
import uvicorn
from sqlmodel import select

from service.models import Technique
from service.settings import REPO_DATA
from tests.live import free_port

from .html_tree import parse, submission

PROFILE = json.loads((REPO_DATA / "costs" / "cpu.json").read_text(encoding="utf-8"))
TRIO = ["squeeze-and-excitation", "non-local", "transformer"]


def _no_inline_code_or_style(doc) -> None:
    """What a strict Content-Security-Policy (default-src 'self') would block."""
    for node in doc.iter():
        assert "style" not in node.attrs, f"inline style on <{node.tag}>"
        assert not any(k.startswith("on") for k in node.attrs), f"inline handler on <{node.tag}>"
        if node.tag == "script":
            assert node.attrs.get("src") and not node.text().strip()
        assert node.tag != "style"


def _check_chart(svg, doc) -> None:
    assert svg.attrs["role"] == "img"
    ids = svg.attrs["aria-labelledby"].split()
    title, desc = svg.find("title"), svg.find("desc")
    assert ids == [title.attrs["id"], desc.attrs["id"]]
    assert title.text().strip() and desc.text().strip()
    assert len(doc.find_all(id=ids[0])) == 1  # ids are unique on the page


def test_compare_page_shows_each_technique(web, db):
    r = web.get("/compare", params={"slugs": ",".join(TRIO)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    doc = parse(r.text)
    items = doc.find_all("article", cls="compare-item")
    assert [a.attrs["id"] for a in items] == [f"c-{s}" for s in TRIO]
    for article, slug in zip(items, TRIO, strict=True):
        t = db.execute(select(Technique).where(Technique.slug == slug)).scalar_one()
        assert article.find("h2").text().strip() == t.name
        assert article.find("span", cls="year").text() == str(t.year)
        assert article.find("code", cls="language-latex").text() == t.formula_latex
        assert [li.text() for li in article.find("ul", cls="strengths").find_all("li")] == t.strengths
        assert [li.text() for li in article.find("ul", cls="limitations").find_all("li")] == t.limitations
        assert article.find("p", cls="reference").text().strip()
    _no_inline_code_or_style(doc)


def test_compare_page_puts_every_curve_on_shared_axes(web):
    doc = parse(web.get("/compare", params={"slugs": TRIO}).text)  # repeated parameters work too
    section = doc.find("section", id="cost-positions")
    charts = section.find_all("svg", cls="cost-chart")
    assert len(charts) == 2  # latency and memory
    for svg in charts:
        _check_chart(svg, doc)
        series = svg.find_all("g", cls="series")
        assert [g.find("title").text() for g in series] == [
            doc.find("article", id=f"c-{s}").find("h2").text().strip() for s in TRIO]
        for g, slug in zip(series, TRIO, strict=True):
            curve = next(c for c in PROFILE["techniques"][slug]["curves"] if c["axis"] == "positions")
            assert len(g.find_all(cls="marker")) == len(curve["points"])
    # the fits table names each technique with its measured exponent from the data
    table = section.find("table", cls="fits")
    for slug in TRIO:
        curve = next(c for c in PROFILE["techniques"][slug]["curves"] if c["axis"] == "positions")
        assert f"{curve['fits']['time']['exponent']:.2f}" in table.text()


def test_compare_accepts_the_selection_parameter(web):
    """The index's selection sends slug=a&slug=b; both spellings combine without repeats."""
    doc = parse(web.get("/compare?slug=non-local&slug=transformer").text)
    assert [a.attrs["id"] for a in doc.find_all("article", cls="compare-item")] == ["c-non-local", "c-transformer"]
    doc = parse(web.get("/compare?slug=non-local&slug=transformer&slugs=non-local,cbam").text)
    assert sorted(a.attrs["id"] for a in doc.find_all("article", cls="compare-item")) == [
        "c-cbam", "c-non-local", "c-transformer"]


def test_channel_axis_only_for_techniques_measured_on_it(web):
    doc = parse(web.get("/compare?slugs=squeeze-and-excitation,non-local").text)
    channels = doc.find("section", id="cost-channels")
    (latency, _memory) = channels.find_all("svg", cls="cost-chart")
    assert len(latency.find_all("g", cls="series")) == 1


@pytest.mark.parametrize("query, fragment", [
    ("/compare?slugs=non-local", "2 to 6"),
    ("/compare", "2 to 6"),
    ("/compare?slugs=" + ",".join(["non-local", "transformer", "cbam", "dual-attention", "perceiver", "gatcluster",
                                   "slot-attention"]), "2 to 6"),
    ("/compare?slugs=non-local,Bad_Slug", "not a technique slug"),
    ("/compare?slugs=non-local,no-such-thing", "no-such-thing"),  # 404: unknown, like an unknown profile
])
def test_compare_refusals_are_pages(web, query, fragment):
    r = web.get(query)
    assert r.status_code == (404 if "no-such-thing" in query else 400)
    assert r.headers["content-type"].startswith("text/html")
    assert fragment in parse(r.text).find("p", cls="error").text()


def test_technique_page_shows_its_curves(web):
    r = web.get("/t/non-local")
    doc = parse(r.text)
    section = doc.find("section", id="cost")
    charts = section.find_all("svg", cls="cost-chart")
    assert len(charts) == 2 * len(PROFILE["techniques"]["non-local"]["curves"])
    for svg in charts:
        _check_chart(svg, doc)
    assert "cpu" in section.find("p", cls="profile").text()
    _no_inline_code_or_style(doc)


def test_index_offers_a_compare_selection(web, db):
    """One set of checkboxes on the index serves the paper downloads and the comparison: the Compare
    button submits the ticked slugs (slug=a&slug=b) to /compare, without JavaScript."""
    doc = parse(web.get("/").text)
    form = doc.find("form", id="selection")
    assert form.attrs["method"] == "get"
    compare_button = form.find("button", pred=lambda b: "formaction" in b.attrs)
    assert compare_button.attrs.get("type") == "submit" and compare_button.attrs["formaction"].endswith("/compare")
    assert "name" not in compare_button.attrs  # it adds nothing /compare would refuse
    boxes = doc.find_all("input", cls="pick")
    assert len(boxes) == len(db.execute(select(Technique.slug)).all())
    for box in boxes:
        assert box.attrs["type"] == "checkbox" and box.attrs["form"] == "selection"
        assert box.attrs["name"] == "slug"
        label = doc.find("label", for_=box.attrs["id"])
        assert label.text().startswith("Select ")
    action, params = submission(doc, "selection", compare_button, set(TRIO))
    r = web.get(action, params=params)
    assert r.status_code == 200, r.text
    shown = {a.attrs["id"] for a in parse(r.text).find_all("article", cls="compare-item")}
    assert shown == {f"c-{s}" for s in TRIO}
    _no_inline_code_or_style(doc)


# ------------------------------------------------------------------------ a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def live_server(web):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(web.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_compare_page_in_headless_chromium(live_server, tmp_path):
    url = f"{live_server}/compare?slugs={','.join(TRIO)}"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    doc = parse(dom)
    assert len(doc.find_all("article", cls="compare-item")) == 3
    assert len(doc.find_all("svg", cls="cost-chart")) >= 2
    shot = tmp_path / "compare.png"
    subprocess.run([*flags, "--window-size=1280,2400", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2400)
    assert len(data) > 50_000  # not a blank page


def test_technique_page_links_a_comparison_with_its_related_techniques(web, db):
    from service.models import TechniqueRelated

    related = list(db.execute(select(TechniqueRelated.related_slug).where(
        TechniqueRelated.technique_slug == "cbam").order_by(TechniqueRelated.position)).scalars())
    assert related
    link = parse(web.get("/t/cbam").text).find("a", cls="compare-link")
    assert link.attrs["href"] == "/compare?slugs=" + ",".join((["cbam"] + related)[:6])
    assert web.get(link.attrs["href"]).status_code == 200
