"""Store faults: Redis killed, absent or frozen and PostgreSQL stopped under load, against real processes.

The hot tier is an optimisation: while Redis is down every request must still succeed from SQL.
The durable store down is a 503 with Retry-After (never a 500), and nothing acknowledged is lost.
Every error response leaves its connection usable, or says `Connection: close`.
These tests start their OWN redis-server and PostgreSQL on free ports; the shared ones are never touched.
"""

from __future__ import annotations

import base64
import glob
import itertools
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess, free_port

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Disjoint slices per test, so a "new" cell really is new to the shared server.
CELLS = random.Random(11).sample(list(itertools.product(range(5), repeat=6)), 5**6)


def nb201(cell) -> str:
    a, b, c, d, e, f = (OPS[i] for i in cell)
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout} s")


# --- our own store processes ------------------------------------------------------------------
class RedisServer:
    """A private redis-server (no persistence) that tests may kill, freeze and restart."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ping(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        if self.running:
            return
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ping, 10, "own redis-server answers")

    def kill(self) -> None:
        """kill -9: no goodbye to the clients, and the keys are gone (no persistence)."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)


def postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        pytest.fail(f"{name} not found (PostgreSQL server binaries are needed for the PostgreSQL fault test)")
    return found


class PostgresServer:
    """A private PostgreSQL cluster in a temporary folder (trust auth), run as `postgres` when we are root."""

    def __init__(self):
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="colecache-faults-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            os.chown(self.folder, pwd.getpwnam("postgres").pw_uid, -1)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self.as_user, *args], cwd=self.folder, check=True, timeout=timeout, capture_output=True, text=True
        )

    def init(self) -> None:
        self._run(postgres_bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            postgres_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash: no checkpoint, clients cut off; the restart replays the WAL."""
        self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.folder, ignore_errors=True)


# --- load ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None
    error: str | None
    response: httpx.Response | None


class Load:
    """Client threads, each on one kept-alive connection (so a connection an error response broke shows up)."""

    def __init__(self, url: str, path: str, body: Callable[[int, int], dict], threads: int, max_requests: int):
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._worker, args=(url, path, body, i, max_requests), daemon=True)
            for i in range(threads)
        ]

    def _worker(self, url: str, path: str, body: Callable[[int, int], dict], index: int, max_requests: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(max_requests):
                if self.stop.is_set():
                    return
                payload = body(index, n)
                started = time.monotonic()
                try:
                    response = client.post(path, json=payload)
                    outcome = Outcome(started, time.monotonic(), response.status_code, None, response)
                except httpx.HTTPError as exc:
                    outcome = Outcome(started, time.monotonic(), None, f"{type(exc).__name__}: {exc}", None)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.status != 200:
                    time.sleep(0.1)  # a refused request costs nothing: do not spin through the whole budget

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float = 60) -> None:
        """Wait for every thread to send its `max_requests` (bounded)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.join()

    def failures(self) -> list[str]:
        return [o.error or f"{o.status}: {o.response.text[:300]}" for o in self.outcomes if o.status != 200]


def metric_total(client: httpx.Client, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def embed(client: httpx.Client, cells) -> dict:
    response = client.post("/embed", json={"specs": [nb201(c) for c in cells], "encoding": "base64"})
    assert response.status_code == 200, response.text
    return response.json()


def test_circuit_breaker_skips_for_a_cooldown_then_lets_one_trial_through():
    """After a failure the hot tier is skipped (not tried per request) until the cool-down ends; then one call tries."""
    from colecache.cache.hot import CircuitBreaker

    now = [100.0]
    breaker = CircuitBreaker(cooldown_s=2.0, clock=lambda: now[0])
    assert breaker.allow() and breaker.allow()
    assert breaker.failure() is True  # just opened: the caller logs once
    assert breaker.failure() is False
    assert not breaker.allow()
    now[0] += 1.9
    assert not breaker.allow()
    now[0] += 0.2
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else keeps skipping while it runs
    breaker.failure()
    now[0] += 2.1
    assert breaker.allow()
    assert breaker.success() is True
    assert breaker.allow() and breaker.allow() and not breaker.is_open


# --- Redis faults -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_fault_setup(tmp_path_factory) -> Iterator[tuple[RedisServer, ServerProcess, str]]:
    """A server whose hot tier is our own Redis, started while nothing listens on that port.

    The server must come up (degraded) without it; the tests start, kill, freeze and restart it.
    """
    folder = tmp_path_factory.mktemp("redis-faults")
    redis_server = RedisServer(folder)
    database_url = f"sqlite:///{folder / 'colecache.db'}"
    server = ServerProcess(
        {
            "COLECACHE_DATA_DIR": str(folder / "data"),
            "COLECACHE_DATABASE_URL": database_url,
            "COLECACHE_REDIS_URL": redis_server.url,
            "COLECACHE_LOG_LEVEL": "warning",
        },
        folder / "server.log",
    )
    try:
        server.start()
        yield redis_server, server, database_url
    finally:
        server.stop()
        redis_server.kill()


@pytest.mark.integration
@pytest.mark.slow
def test_redis_absent_serves_from_sql_and_ready_says_degraded(redis_fault_setup):
    """Nothing listening on the Redis port: every request works, /ready is a fast 200 "degraded" naming redis."""
    redis_server, server, _ = redis_fault_setup
    redis_server.kill()
    cells = CELLS[0:24]
    with server.client() as client:
        first = embed(client, cells)
        again = embed(client, cells)  # cached now: from SQL, since the hot tier is down
        assert first["counts"] == {"computed": len(cells)}
        assert again["counts"] == {"sql": len(cells)}
        assert [i["embedding"] for i in again["items"]] == [i["embedding"] for i in first["items"]]
        ready = client.get("/ready", timeout=5)  # what a readiness probe with a 5 s timeout sees
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["degraded"] == ["redis"]
        assert ready.json()["stores"] == {"redis": False, "sql": True}
        assert metric_total(client, "colecache_hot_tier_errors_total", tier="redis") > 0
        assert metric_total(client, "colecache_hot_tier_available", tier="redis") == 0


@pytest.mark.integration
@pytest.mark.slow
def test_redis_killed_mid_load_fails_no_request(redis_fault_setup):
    """kill -9 of Redis under 8 clients and its restart (empty): 0 failed requests, every vector the one SQL holds."""
    from sqlalchemy import create_engine, text

    redis_server, server, database_url = redis_fault_setup
    redis_server.start()
    warm, new = CELLS[100:116], iter(CELLS[200:3000])
    new_lock = threading.Lock()
    with server.client() as client:
        embed(client, warm)
        wait_until(lambda: set(embed(client, warm)["counts"]) == {"redis"}, 15, "the hot tier serves before the kill")
        errors_before = metric_total(client, "colecache_hot_tier_errors_total", tier="redis")

    def body(thread: int, n: int) -> dict:
        """Two cached cells, and every fourth request a new one (a model forward, an SQL insert, a hot-tier fill)."""
        cells = [warm[(thread + n) % len(warm)], warm[(thread + 2 * n + 5) % len(warm)]]
        if n % 4 == 0:
            with new_lock:
                cells.append(next(new))
        return {"specs": [nb201(c) for c in cells], "encoding": "base64"}

    with Load(server.url, "/embed", body, threads=8, max_requests=400) as load:
        time.sleep(2)
        killed = time.monotonic()
        redis_server.kill()
        time.sleep(4)
        restarted = time.monotonic()
        redis_server.start()
        time.sleep(3)

    assert load.failures() == []
    assert any(killed <= o.started and o.ended <= restarted for o in load.outcomes), "no request ran during the outage"
    with server.client() as client:
        assert metric_total(client, "colecache_hot_tier_errors_total", tier="redis") > errors_before
        # The breaker closes again: the restarted (empty) Redis is refilled from SQL and then serves.
        wait_until(lambda: set(embed(client, warm)["counts"]) == {"redis"}, 15, "the hot tier serves again")

    served: dict[str, bytes] = {}
    for outcome in load.outcomes:
        for item in outcome.response.json()["items"]:
            vector = base64.b64decode(item["embedding"])
            assert served.setdefault(item["key"], vector) == vector, "one key served two different vectors"
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = {
                bytes(key).hex(): bytes(vector)
                for key, vector in conn.execute(text("SELECT key, vector FROM embeddings"))
            }
    finally:
        engine.dispose()
    assert len(served) > len(warm)
    assert {key: stored.get(key) for key in served} == served


@pytest.mark.integration
@pytest.mark.slow
def test_frozen_redis_neither_stalls_requests_nor_readiness(redis_fault_setup):
    """SIGSTOPped Redis (accepts connections, never answers): requests succeed, /ready answers a 5 s probe."""
    redis_server, server, _ = redis_fault_setup
    redis_server.start()
    warm, new = CELLS[3000:3008], iter(CELLS[3100:3400])
    new_lock = threading.Lock()
    with server.client() as client:
        wait_until(lambda: set(embed(client, warm)["counts"]) == {"redis"}, 15, "the hot tier serves before freezing")

    def body(thread: int, n: int) -> dict:
        with new_lock:
            fresh = next(new)
        return {"specs": [nb201(warm[(thread + n) % len(warm)]), nb201(fresh)], "encoding": "base64"}

    redis_server.freeze()
    try:
        with Load(server.url, "/embed", body, threads=4, max_requests=6) as load:
            with server.client() as client:
                ready = client.get("/ready", timeout=5)
            load.join()
        assert len(load.outcomes) == 24
        assert load.failures() == []
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded" and ready.json()["degraded"] == ["redis"]
    finally:
        redis_server.thaw()
    with server.client() as client:
        wait_until(lambda: client.get("/ready", timeout=5).json().get("status") == "ready", 15, "ready again")
        wait_until(lambda: set(embed(client, warm)["counts"]) == {"redis"}, 15, "the hot tier serves again")


# --- PostgreSQL faults --------------------------------------------------------------------------
@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.close()


@pytest.mark.integration
@pytest.mark.slow
def test_postgres_outage_is_503_with_retry_after_and_loses_no_acknowledged_observation(own_postgres, server_factory):
    """PostgreSQL crashes (stop -m immediate) and restarts under observation posts: only 200s and 503 + Retry-After.

    Every acknowledged observation is there afterwards; the SDK rides the outage out on Retry-After.
    """
    from colecache_client import Client

    server = server_factory(COLECACHE_DATABASE_URL=own_postgres.url)
    with server.client() as client:
        created = client.post("/studies", json={"name": "pg-faults", "render": {"canonical": False}})
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
    cells, cells_lock, rng = iter(CELLS[5000:]), threading.Lock(), random.Random(5)

    def next_observation() -> tuple[str, float]:
        with cells_lock:
            return nb201(next(cells)), round(rng.uniform(0, 100), 3)

    def body(thread: int, n: int) -> dict:
        spec, value = next_observation()
        return {"observations": [{"spec": spec, "value": value}]}

    sdk_acked: list[tuple[str, float]] = []
    sdk_calls: list[tuple[float, float]] = []
    sdk_errors: list[str] = []

    def sdk_worker(stop: threading.Event) -> None:
        with Client(server.url, max_retries=10) as sdk:
            for _ in range(400):
                if stop.is_set():
                    return
                spec, value = next_observation()
                started = time.monotonic()
                try:
                    sdk.observe(study_id, [(spec, value)])
                except Exception as exc:
                    sdk_errors.append(f"{type(exc).__name__}: {exc}")
                    return
                sdk_acked.append((spec, value))
                sdk_calls.append((started, time.monotonic()))
                time.sleep(0.02)

    path = f"/studies/{study_id}/observations"
    with Load(server.url, path, body, threads=3, max_requests=400) as load:
        sdk_thread = threading.Thread(target=sdk_worker, args=(load.stop,), daemon=True)
        sdk_thread.start()
        try:
            time.sleep(2)
            own_postgres.stop("immediate")
            stopped = time.monotonic()
            with server.client() as client:
                ready = client.get("/ready", timeout=5)
            time.sleep(3)
        finally:
            restarting = time.monotonic()
            own_postgres.start()
        restarted = time.monotonic()
        time.sleep(3)
        load.stop.set()
        sdk_thread.join(60)

    assert [o.error for o in load.outcomes if o.error] == []
    assert {o.status for o in load.outcomes} <= {200, 503}, load.failures()
    unavailable = [o for o in load.outcomes if o.status == 503]
    assert unavailable, "no request ran into the outage"
    assert all(o.response.headers.get("retry-after", "").isdigit() for o in unavailable)
    assert any(o.status == 200 and o.started > restarted for o in load.outcomes), "no success after the restart"
    assert any(o.status == 503 and o.started >= stopped for o in load.outcomes)
    assert ready.status_code == 503 and ready.headers.get("retry-after"), ready.text
    assert sdk_errors == []
    assert any(started < restarting < ended for started, ended in sdk_calls), "no SDK call rode the outage out"

    acked = list(sdk_acked)
    for outcome in load.outcomes:
        if outcome.status == 200:
            sent = json.loads(outcome.response.request.content)
            acked += [(o["spec"], o["value"]) for o in sent["observations"]]
    with server.client() as client:
        listed = client.get(path, params={"limit": 100_000})
        assert listed.status_code == 200, listed.text
        stored = {o["spec"]: o["value"] for o in listed.json()["observations"]}
    assert len(acked) > 0
    assert {spec: stored.get(spec) for spec, _ in acked} == dict(acked)


# --- error responses and the connection they leave ------------------------------------------------
def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request and its response (Content-Length bodies) on a raw socket."""
    sock.sendall(request)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        buffer += chunk
    head, body = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def _request(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.integration
def test_every_error_response_leaves_the_connection_usable_or_says_close(tiny_bert, tmp_path):
    """After a 4xx/5xx the same connection serves the next request, or the response said `Connection: close`.

    Includes an unhandled exception (a 500): uvicorn drops that connection, so the 500 must say so.
    """
    import uvicorn
    from colecache.api.app import create_app
    from colecache.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, max_body_bytes=2048), backend=tiny_bert)

    async def boom():
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "in-process server started")
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200, 60, "ready")
        errors = {
            "unhandled exception": _request("GET", "/boom"),
            "unknown route": _request("GET", "/nope"),
            "wrong method": _request("GET", "/embed"),
            "invalid spec": _request("POST", "/embed", b'{"specs": ["|not_an_op~0|"]}'),
            "malformed json": _request("POST", "/embed", b'{"specs": ['),
            "body too large": _request("POST", "/embed", b'{"specs": ["' + b"x" * 4096 + b'"]}'),
            "unknown study": _request("POST", "/studies/nope/observations", b'{"observations": []}'),
        }
        seen = {}
        for name, request in errors.items():
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    status, headers, _ = _exchange(sock, request)
                    seen[name] = status
                    assert status >= 400, name
                    if headers.get("connection", "").lower() == "close":
                        assert sock.recv(1) == b"", f"{name}: said close but kept the connection"
                    else:
                        after = _exchange(sock, _request("GET", "/health"))
                        assert after[0] == 200, f"{name}: the connection is unusable after a {status}"
        assert seen["unhandled exception"] == 500
        assert seen["body too large"] == 413
    finally:
        server.should_exit = True
        thread.join(30)
