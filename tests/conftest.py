"""Shared fixtures: tiny local models, real Redis / PostgreSQL, and real uvicorn server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("COLECACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "COLECACHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


# --- benchmark data ---------------------------------------------------------------------------
def nb201_data_dir() -> Path | None:
    """Where nats_bench.csv lives: COLECACHE_NB201_DATA, else ../shared/data/nb201 beside the repo."""
    from colecache.benchdata import find_nb201_dir

    return find_nb201_dir()


@pytest.fixture(scope="session")
def nb201_table():
    folder = nb201_data_dir()
    if folder is None:
        pytest.skip("NB201 data not found: set COLECACHE_NB201_DATA to the folder holding nats_bench.csv")
    from colecache.benchdata import load_nb201

    return load_nb201(folder)


# --- tiny models --------------------------------------------------------------------------------
def _bundled_tokenizer():
    from colecache.embedding.backend import resolve_model_ref
    from colecache.settings import BUNDLED_MODEL
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_ref(BUNDLED_MODEL).source)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and MiniLM's tokenizer, saved like any local model."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = _bundled_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory) -> Path:
    """A 2-layer causal decoder that pads on the left, as code LMs do.

    GPT-2 has absolute position embeddings, so a left-padded row only matches its unpadded
    self when positions are taken from the attention mask (rotary models would hide that bug).
    """
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tiny-decoder")
    tokenizer = _bundled_tokenizer()
    tokenizer.padding_side = "left"
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2Model(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_backend(model_dir: Path, tmp_path: Path):
    from colecache.embedding.backend import TransformerBackend
    from colecache.settings import Settings

    return TransformerBackend.load(Settings(model=str(model_dir), data_dir=tmp_path, device="cpu"))


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir, tmp_path_factory):
    return load_backend(tiny_bert_dir, tmp_path_factory.mktemp("tiny-bert-state"))


@pytest.fixture(scope="session")
def tiny_decoder(tiny_decoder_dir, tmp_path_factory):
    return load_backend(tiny_decoder_dir, tmp_path_factory.mktemp("tiny-decoder-state"))


# --- real stores --------------------------------------------------------------------------------
@pytest.fixture
async def services(tmp_path, tiny_bert_dir, tiny_bert, request):
    """Stores and the tiny BERT in this process; SQLite, or the fixture named by an indirect param
    (e.g. `postgres_url`)."""
    from colecache.api.state import Services, load_model, open_stores, shutdown
    from colecache.settings import Settings

    url = request.getfixturevalue(request.param) if getattr(request, "param", None) else None
    settings = Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", database_url=url)
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, tiny_bert)
    yield services
    await shutdown(services)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis; every key a test writes is under a unique prefix and removed afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - CI starts Redis
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc} (bash .ci/run starts it)")
    yield REDIS_URL
    client.close()


@pytest.fixture
def redis_prefix(redis_url) -> Iterator[str]:
    import redis

    prefix = f"colecache-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the real server, migrated, dropped after the test."""
    from colecache.db.engine import migrate
    from sqlalchemy import create_engine, text

    name = f"colecache_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - CI starts PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc} (bash .ci/run starts it)")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    from colecache.db.engine import migrate

    url = f"sqlite:///{tmp_path / 'colecache.db'}"
    migrate(url)
    return url


# --- real server processes -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`colecache serve` in a child process, on loopback, with its own environment."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "COLECACHE_PORT": str(self.port), "COLECACHE_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it (for tests of a server that is not, or not yet, ready)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "colecache.cli", "serve"],
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    def start(self, timeout: float = 120.0) -> ServerProcess:
        keys = [k for k in self.env.get("COLECACHE_API_KEYS", "").split(",") if k]
        headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2, headers=headers).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return None if self.proc is None else self.proc.returncode

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 120, **kwargs})


@pytest.fixture
def server_factory(tmp_path) -> Iterator:
    """Start servers with extra COLECACHE_* settings; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(ready_timeout: float = 120.0, **env: str) -> ServerProcess:
        settings = {"COLECACHE_DATA_DIR": str(tmp_path / "data"), "COLECACHE_LOG_LEVEL": "warning", **env}
        server = ServerProcess(settings, tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server.start(ready_timeout)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory) -> Iterator[ServerProcess]:
    """One server on the embedded default (SQLite + in-process cache + bundled MiniLM) per test module."""
    folder = tmp_path_factory.mktemp("default-server")
    server = ServerProcess(
        {"COLECACHE_DATA_DIR": str(folder / "data"), "COLECACHE_LOG_LEVEL": "warning"}, folder / "server.log"
    )
    server.start()
    yield server
    server.stop()
