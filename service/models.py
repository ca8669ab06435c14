"""Database tables (SQLModel). The public API shapes live beside the routers that return them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _ts(**kw) -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False, **kw))


class Category(SQLModel, table=True):
    __tablename__ = "categories"
    id: str = Field(primary_key=True, max_length=64)
    name: str
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    parent_id: str | None = Field(default=None, sa_column=Column(
        String(64), ForeignKey("categories.id", ondelete="CASCADE"), nullable=True, index=True))
    position: int = 0


class Reference(SQLModel, table=True):
    __tablename__ = "references"
    citekey: str = Field(primary_key=True, max_length=128)
    entry_type: str
    fields: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    persons: dict[str, list[dict[str, str]]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    bibtex: str = Field(sa_column=Column(Text, nullable=False))
    source: str = "data"  # "data" (references.bib) or "api" (imported through the write API)
    updated_at: datetime = _ts()


class Technique(SQLModel, table=True):
    __tablename__ = "techniques"
    slug: str = Field(primary_key=True, max_length=96)
    name: str = Field(index=True)
    aliases: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    category_id: str = Field(sa_column=Column(String(64), ForeignKey("categories.id"), nullable=False, index=True))
    subcategory_id: str = Field(sa_column=Column(String(64), ForeignKey("categories.id"), nullable=False,
                                                 index=True))
    also_in: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    year: int = Field(index=True)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    formula_latex: str = Field(sa_column=Column(Text, nullable=False))
    formula_legend: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    strengths: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    limitations: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    complexity: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    citekey: str = Field(sa_column=Column(String(128), ForeignKey("references.citekey"), nullable=False, index=True))
    implementation_scope: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    has_implementation: bool = Field(default=False, index=True)
    verification: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    identification: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    survey_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    divergences: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    content_hash: str = Field(default="", max_length=64)
    edited_via_api: bool = False  # sync from data/ never overwrites such a record
    # raised by every write of the row; a conditional write names the version it read (compare-and-swap)
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    updated_at: datetime = _ts()


class Application(SQLModel, table=True):
    __tablename__ = "applications"
    tag: str = Field(primary_key=True, max_length=96)


class TechniqueApplication(SQLModel, table=True):
    __tablename__ = "technique_applications"
    technique_slug: str = Field(sa_column=Column(String(96), ForeignKey("techniques.slug", ondelete="CASCADE"),
                                                 primary_key=True))
    tag: str = Field(sa_column=Column(String(96), ForeignKey("applications.tag", ondelete="CASCADE"),
                                      primary_key=True))
    position: int = 0


class TechniqueRelated(SQLModel, table=True):
    __tablename__ = "technique_related"
    technique_slug: str = Field(sa_column=Column(String(96), ForeignKey("techniques.slug", ondelete="CASCADE"),
                                                 primary_key=True))
    related_slug: str = Field(sa_column=Column(String(96), ForeignKey("techniques.slug", ondelete="CASCADE"),
                                               primary_key=True))
    position: int = 0


class CatalogueVersion(SQLModel, table=True):
    """One row: a counter raised in the same transaction as every write to the catalogue (techniques,
    references, taxonomy, applications), so every process can tell cheaply whether its copy is current."""

    __tablename__ = "catalogue_version"
    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False))


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))


class CostProfile(SQLModel, table=True):
    """A machine profile of measured cost curves (data/costs/<name>.json)."""

    __tablename__ = "cost_profiles"
    name: str = Field(primary_key=True, max_length=64)
    device: str = Field(max_length=16)
    machine: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    conditions: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    method: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    content_hash: str = Field(default="", max_length=64)
    updated_at: datetime = _ts()


class CostCurve(SQLModel, table=True):
    """One measured curve: a technique's cost along one axis on one machine profile."""

    __tablename__ = "cost_curves"
    profile: str = Field(sa_column=Column(String(64), ForeignKey("cost_profiles.name", ondelete="CASCADE"),
                                          primary_key=True))
    technique_slug: str = Field(sa_column=Column(String(96), primary_key=True))
    axis: str = Field(sa_column=Column(String(16), primary_key=True))
    x_label: str
    stopped: str = Field(sa_column=Column(Text, nullable=False))
    hyperparameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    points: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    fits: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


Index("ix_technique_applications_tag", TechniqueApplication.__table__.c.tag)
