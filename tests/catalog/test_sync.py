"""Sync from data/: idempotent, all-or-nothing, never overwrites API edits; migrations keep data."""

from __future__ import annotations

import shutil

import pytest
import yaml
from sqlalchemy import inspect, text
from sqlmodel import Session, select

from service.catalog.loader import CatalogInvalid
from service.catalog.sync import sync
from service.cli import main as cli_main
from service.db import make_engine
from service.migrate import current_revision, head_revision, upgrade
from service.models import Reference, Technique


@pytest.fixture
def engine(migrated_engine):
    return migrated_engine


@pytest.fixture
def data_copy(tmp_path, knowledge_dir):
    dest = tmp_path / "knowledge"
    shutil.copytree(knowledge_dir, dest)
    return dest


def _snapshot(engine):
    with Session(engine) as s:
        return {t.slug: (t.content_hash, t.updated_at) for t in s.exec(select(Technique)).all()}


def test_sync_loads_everything_and_is_idempotent(engine, knowledge_dir):
    first = sync(engine, knowledge_dir)
    assert len(first.created) >= 50 and not first.updated
    before = _snapshot(engine)
    second = sync(engine, knowledge_dir)
    assert second.created == [] and second.updated == [] and len(second.unchanged) == len(first.created)
    assert _snapshot(engine) == before


def test_changed_file_updates_only_that_technique(engine, data_copy):
    sync(engine, data_copy)
    path = data_copy / "techniques" / "squeeze-and-excitation.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["summary"] += " Edited."
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    report = sync(engine, data_copy)
    assert report.updated == ["squeeze-and-excitation"]
    with Session(engine) as s:
        assert s.get(Technique, "squeeze-and-excitation").summary.endswith("Edited.")


@pytest.mark.parametrize("breakage,expected", [
    ("related", "related: unknown slug 'no-such-technique'"),
    ("citekey", "is not in references.bib"),
    ("bib", "references.bib"),
    ("latex", "formula.latex"),
    ("schema", "year"),
])
def test_bad_data_is_refused_with_file_and_field_and_nothing_written(engine, data_copy, breakage, expected):
    path = data_copy / "techniques" / "non-local.yaml"
    doc = yaml.safe_load(path.read_text())
    if breakage == "related":
        doc["related"].append("no-such-technique")
    elif breakage == "citekey":
        doc["citekey"] = "nobodyNoSuchPaper2020"
    elif breakage == "latex":
        doc["formula"]["latex"] += r" \frac{1}{"
    elif breakage == "schema":
        doc["year"] = "last year"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    if breakage == "bib":
        bib = data_copy / "references.bib"
        bib.write_text(bib.read_text() + "\n@article{brokenEntry2020,\n  title = {Unclosed\n")
    with pytest.raises(CatalogInvalid) as info:
        sync(engine, data_copy)
    assert any(expected in str(p) for p in info.value.problems), [str(p) for p in info.value.problems]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM techniques")).scalar_one() == 0
        assert conn.execute(text('SELECT count(*) FROM "references"')).scalar_one() == 0


def test_refusal_leaves_a_loaded_catalogue_untouched(engine, data_copy):
    sync(engine, data_copy)
    before = _snapshot(engine)
    (data_copy / "techniques" / "cbam.yaml").write_text("slug: cbam\nname: [unclosed\n")
    with pytest.raises(CatalogInvalid):
        sync(engine, data_copy)
    assert _snapshot(engine) == before


def test_sync_never_overwrites_an_api_edit(engine, data_copy):
    sync(engine, data_copy)
    with Session(engine) as s:
        t = s.get(Technique, "cbam")
        t.summary = "A summary written through the API, which sync must keep."
        t.edited_via_api = True
        s.add(t)
        s.commit()
    path = data_copy / "techniques" / "cbam.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["summary"] += " Changed in data/."
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    report = sync(engine, data_copy)
    assert "cbam" in report.kept_edited
    with Session(engine) as s:
        assert s.get(Technique, "cbam").summary.startswith("A summary written through the API")


def test_cli_sync_reports_problems_and_exit_code(monkeypatch, tmp_path, data_copy, capsys):
    monkeypatch.setenv("ATLAS_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    (data_copy / "techniques" / "transformer.yaml").write_text("slug: transformer\n")
    assert cli_main(["db", "sync", "--data", str(data_copy)]) == 1
    err = capsys.readouterr().err
    assert "nothing written" in err and "techniques/transformer.yaml" in err


def test_migrations_on_empty_and_existing_database(engine, knowledge_dir):
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        tables = set(inspect(conn).get_table_names())
    assert {"techniques", "categories", "references", "applications", "technique_applications",
            "technique_related"} <= tables
    sync(engine, knowledge_dir)
    with Session(engine) as s:
        n_tech, n_ref = len(s.exec(select(Technique)).all()), len(s.exec(select(Reference)).all())
    upgrade(engine)  # upgrading an up-to-date database with data is a no-op that loses nothing
    with Session(engine) as s:
        assert len(s.exec(select(Technique)).all()) == n_tech
        assert len(s.exec(select(Reference)).all()) == n_ref


def test_downgrade_and_upgrade_round_trip(fresh_settings):
    from alembic import command

    from service.migrate import alembic_config

    engine = make_engine(fresh_settings)
    upgrade(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert "techniques" not in inspect(conn).get_table_names()
    upgrade(engine)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    engine.dispose()
