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
    catalog_check_interval_ms: int = Field(
        default=0, ge=0, description="how often a process checks the catalogue version in the database to see "
        "writes made through other processes (0: on every request, so a write is visible everywhere at once)")
    catalog_search_cache: int = Field(
        default=256, ge=0, description="search answers kept per catalogue version (0: ask the engine every time)")
    catalog_response_cache_bytes: int = Field(
        default=16 << 20, ge=0, description="bytes of catalogue response bodies (lists, field selections) kept per "
        "catalogue version so that a repeated request is answered before routing (0: build every response)")

    # run API limits (checked before any allocation)
    max_tensor_elements: int = Field(default=1 << 24, description="elements in one input tensor")
    max_total_elements: int = Field(default=1 << 25, description="elements in all inputs and weights")
    max_body_bytes: int = Field(default=256 << 20, description="binary request body size")
    max_json_body_bytes: int = Field(default=8 << 20, description="JSON request body size (JSON is for small "
                                     "tensors: parsing costs several times its size in memory)")
    max_batch_slugs: int = 16
    run_workers: int = Field(default=2, description="worker processes executing mechanisms (run slots)")
    run_spare_workers: int = Field(default=1, description="warm workers kept in reserve: one replaces a worker "
                                   "killed on timeout at once")
    run_queue: int = Field(default=8, description="runs waiting for a worker before 503")
    run_timeout_s: float = Field(default=60.0, description="wall time of one run; past it the worker is killed")
    run_max_parameters: int = Field(default=50_000_000, description="parameters a run may make the server build")
    run_max_bytes: int = Field(default=1 << 30, description="peak bytes a run may need (weights, inputs, "
                               "activations with margin), estimated before anything is allocated")
    run_budget_margin: float = Field(default=2.0, description="factor on the traced activation peak (kernel "
                                     "scratch memory is not visible to the trace)")
    run_overhead_bytes: int = Field(default=32 << 20, description="fixed allowance added to every run's budget")
    run_worker_memory_bytes: int = Field(default=3 << 30, description="address space a worker may add after "
                                         "start-up (RLIMIT_AS); 0 = no limit")
    run_module_cache_bytes: int = Field(default=256 << 20, description="weights of built modules kept per worker "
                                        "for repeated runs (never with client weights)")
    run_worker_malloc_tuning: bool = Field(default=True, description="workers keep freed heap memory for reuse "
                                           "(glibc MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_)")
    run_body_timeout_s: float = Field(default=10.0, description="base time allowed for a run body to arrive")
    run_body_min_bytes_per_s: int = Field(default=1 << 20, description="minimum upload rate: the allowance grows "
                                          "by Content-Length divided by this")
    run_body_idle_timeout_s: float = Field(default=5.0, description="longest pause between body chunks")
    run_shm_dir: str = Field(default="", description="tmpfs directory for shared-memory segments; default /dev/shm")
    run_shm_max_bytes: int = Field(default=2 << 30, description="shared memory that request bodies and outputs in "
                                   "flight may hold at once (503 beyond); keep it below the tmpfs size")
    run_shm_keep_bytes: int = Field(default=512 << 20, description="free shared-memory segments kept for reuse")
    run_shm_client_regions: bool = Field(default=False, description="accept client-named shared-memory regions "
                                         "(co-located clients only; off by default)")
    run_prestart: bool = Field(default=False, description="start the run workers with the app (the serve command "
                               "turns it on); otherwise on the first run")
    torch_threads: int = Field(default=0, description="intra-op threads per worker; 0 = cores / workers")

    # measured cost curves (data/costs/<profile>.json)
    cost_profile: str = Field(default="cpu", description="the machine profile the pages show and the cost "
                              "routes answer with when none is named")

    # write API
    api_keys: str = Field(default="", description="comma-separated 'name:role:sha256hex' (role: write|read)")
    max_import_bytes: int = Field(default=4 << 20, description="BibTeX/RIS import body size")
    max_field_chars: int = Field(default=10_000, description="characters in one imported BibTeX/RIS field "
                                 "(abstracts included)")
    max_name_chars: int = Field(default=200, ge=2, description="PATCH: a name, alias or legend symbol")
    max_item_chars: int = Field(default=1000, ge=15, description="PATCH: one strength, limitation, legend meaning "
                                                             "or complexity entry")
    max_text_chars: int = Field(default=8000, ge=80, description="PATCH: summary, formula and notes")
    max_list_items: int = Field(default=50, ge=2, description="PATCH: items of one list (aliases, strengths, ...)")

    # citations
    warm_citations: bool = Field(default=True, description="fill the citation cache (whole-library exports in "
                                 "every format and style) in a background thread at start")
    citation_cache_bytes: int = Field(default=64 << 20, description="memory for cached citation and export bodies")

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
