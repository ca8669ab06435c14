"""All configuration in one place. Environment variables use the prefix ATLAS_ (DATABASE_URL is
also accepted without it)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATLAS_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ATLAS_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; default: an SQLite file in var_dir")
    var_dir: Path = Field(default=Path("var"), description="runtime files (the SQLite database, backups)")
    knowledge_dir: Path = Field(default=REPO_DATA, description="the data/ folder with taxonomy, techniques, bib")
    host: str = "127.0.0.1"
    port: int = 8000
    json_logs: bool = Field(default=False, description="configure JSON logging (the serve command turns it on)")
    log_level: str = "info"
    sync_on_start: bool = Field(default=True, description="migrate and sync data/ at start when the DB is empty")

    # queries
    page_size_default: int = 20
    page_size_max: int = 100

    # run API limits (checked before any allocation)
    max_tensor_elements: int = Field(default=1 << 24, description="elements in one input tensor")
    max_total_elements: int = Field(default=1 << 25, description="elements in all inputs and weights")
    max_body_bytes: int = Field(default=256 << 20, description="binary request body size")
    max_json_body_bytes: int = Field(default=16 << 20, description="JSON request body size")
    max_batch_slugs: int = 16
    run_workers: int = Field(default=2, description="threads executing mechanisms")
    run_queue: int = Field(default=8, description="runs waiting for a worker before 503")
    run_timeout_s: float = Field(default=60.0, description="wall time of one run")
    module_cache_size: int = Field(default=16, description="built modules kept for repeated runs (0: none)")
    torch_threads: int = Field(default=0, description="intra-op threads per run; 0 = torch default")

    # measured cost curves (data/costs/<profile>.json)
    cost_profile: str = Field(default="cpu", description="the machine profile the pages show and the cost "
                              "routes answer with when none is named")

    # write API
    api_keys: str = Field(default="", description="comma-separated 'name:role:sha256hex' (role: write|read)")
    max_import_bytes: int = Field(default=4 << 20, description="BibTeX/RIS import body size")

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        from .auth import parse_api_keys

        parse_api_keys(value)  # raises ValueError naming the malformed entry
        return value

    @cached_property
    def url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://"):]
            elif url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{(self.var_dir / 'atlas.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


def get_settings() -> Settings:
    return Settings()
