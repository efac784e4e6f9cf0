"""The SDK: retries and typed errors against scripted transports, real calls against a real server."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from array import array
from pathlib import Path

import httpx
import pytest
from colecache_client import (
    AsyncClient,
    Bananas,
    Client,
    Conflict,
    NotFound,
    RateLimited,
    TransportError,
    ValidationError,
    choose,
    expected_improvement,
)
from colecache_client._transport import parse_retry_after
from colecache_client.spaces import get_space

SPACE = get_space("nb201")
REPO = Path(__file__).resolve().parents[1]


# --- transport behaviour (scripted server) ----------------------------------------------------------
class Script:
    """A fake server: replies in order; records the requests it got."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _client(script, **kwargs) -> Client:
    return Client("http://test", transport=httpx.MockTransport(script), backoff=0.001, **kwargs)


def test_retries_429_and_503_honouring_retry_after():
    script = Script(
        httpx.Response(429, json={"detail": "queue full"}, headers={"Retry-After": "0"}),
        httpx.Response(503, json={"detail": "loading"}, headers={"Retry-After": "0"}),
        httpx.Response(200, json={"status": "ok"}),
    )
    assert _client(script).health() == {"status": "ok"}
    assert len(script.requests) == 3


def test_gives_up_after_max_retries_with_the_typed_error():
    script = Script(*[httpx.Response(429, json={"detail": "queue full"}, headers={"Retry-After": "0"})] * 3)
    with pytest.raises(RateLimited) as info:
        _client(script, max_retries=2).health()
    assert info.value.detail == "queue full" and info.value.retry_after == 0 and len(script.requests) == 3


def test_connection_errors_are_retried_then_wrapped():
    script = Script(httpx.ConnectError("refused"), httpx.Response(200, json={"status": "ok"}))
    assert _client(script).health() == {"status": "ok"}
    with pytest.raises(TransportError):
        _client(Script(*[httpx.ConnectError("refused")] * 3), max_retries=2).health()


def test_non_idempotent_create_is_not_resent_after_the_request_may_have_arrived():
    script = Script(httpx.ReadError("connection reset"), httpx.Response(201, json={"id": "x"}))
    with pytest.raises(TransportError):
        _client(script).create_study("s")
    assert len(script.requests) == 1


def test_4xx_are_typed_and_carry_the_servers_message():
    body = {"detail": "1 invalid spec(s): item 1: unknown op 'x'", "errors": [{"index": 1, "reason": "unknown op"}]}
    with pytest.raises(ValidationError) as info:
        _client(Script(httpx.Response(422, json=body))).get_study("s")
    assert info.value.errors == body["errors"] and "unknown op 'x'" in str(info.value)
    with pytest.raises(NotFound):
        _client(Script(httpx.Response(404, json={"detail": "study 's' not found"}))).get_study("s")


def test_api_key_is_sent_as_bearer():
    script = Script(httpx.Response(200, json={"status": "ok"}))
    _client(script, api_key="secret-key").health()
    assert script.requests[0].headers["authorization"] == "Bearer secret-key"


def test_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None


def test_a_single_spec_where_a_list_belongs_is_a_type_error_before_any_request():
    """`list()` of a cell string would send one bad spec per character; the SDK says what it wanted instead
    (nothing listens on port 9: a request would fail with a transport error, not this one)."""
    cell = CELLS[0]
    with Client("http://127.0.0.1:9", max_retries=0) as client:
        calls = {
            "specs": [
                lambda: client.embed(cell),
                lambda: client.proxies(cell),
                lambda: client.predict("s", cell),
                lambda: client.predict("s", {"code": "class Net: ..."}),
            ],
            "candidates": [lambda: client.set_candidates("s", cell), lambda: client.create_study("x", candidates=cell)],
        }
        for what, group in calls.items():
            for call in group:
                with pytest.raises(TypeError, match=rf"^{what} is a list of specs; wrap a single one in a list"):
                    call()


# --- acquisition ---------------------------------------------------------------------------------
def test_acquisition_functions():
    rng = random.Random(0)
    means, stds = [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]
    assert choose(means, stds, 1, "ucb", rng, ucb_beta=1.0) == [2]
    assert choose(means, stds, 2, "ucb", rng, ucb_beta=0.0) == [1, 0]
    assert expected_improvement(2.0, 0.0, 1.0) == 1.0 and expected_improvement(0.0, 1.0, 0.0) > 0.39
    picks = choose(means, stds, 3, "its", rng)
    assert sorted(picks) == [0, 1, 2]  # independent draws, but never the same candidate twice
    wins = sum(choose([0.0, 0.1], [0.0, 0.0], 1, "its", rng) == [1] for _ in range(50))
    assert wins == 50


def test_expected_improvement_batches_believe_each_pick_at_its_mean():
    """Kriging believer: once the first pick is believed at 2.0, a near-copy at 1.9 improves on nothing,
    and the uncertain candidate is worth more; a plain top-n of EI would pick the two near-copies."""
    rng = random.Random(0)
    means, stds = [2.0, 1.9, 0.0], [0.01, 0.01, 2.0]
    assert choose(means, stds, 1, "ei", rng, best=0.0) == [0]
    assert choose(means, stds, 2, "ei", rng, best=0.0) == [0, 2]
    assert choose(means, stds, 3, "ei", rng, best=0.0)[:2] == [0, 2]


# --- against a real server ----------------------------------------------------------------------
CELLS = [c.to_string() for c in list(SPACE.all_cells())[3::1777][:8]]


@pytest.mark.integration
def test_embed_chunks_under_the_limit_and_keeps_order(default_server):
    with Client(default_server.url, max_chunk=3) as client:
        result = client.embed(CELLS)
    assert [item.arch for item in result.items] == CELLS and [i.index for i in result.items] == list(range(8))
    with httpx.Client(base_url=default_server.url) as raw:
        direct = raw.post("/embed", json={"specs": CELLS}).json()["items"]
    # The SDK decodes base64 float32; the JSON floats are the same float32 values, spelled shortest.
    assert [array("f", i.embedding).tobytes() for i in result.items] == [
        array("f", d["embedding"]).tobytes() for d in direct
    ]
    assert result.dim == 384 and len(result.embeddings[0]) == 384


@pytest.mark.integration
def test_async_client_matches(default_server):
    async def run():
        async with AsyncClient(default_server.url) as client:
            return await client.embed(CELLS[:2]), await client.ready()

    result, ready = asyncio.run(run())
    assert ready and [i.arch for i in result.items] == CELLS[:2]


@pytest.mark.integration
def test_bananas_ask_tell_shared_by_two_workers(default_server):
    def value(arch: str) -> float:
        ops = SPACE.parse(arch).ops
        return 50 + 3 * ops.count("nor_conv_3x3") - 2 * ops.count("none")

    with Client(default_server.url) as client:
        study = client.create_study("bananas-test", surrogate={"head": {"epochs": 60}})
        a = Bananas(study, initial_samples=6, candidates=30, seed=1)
        b = Bananas(client.study(study.id), initial_samples=6, candidates=30, seed=2)
        first = a.ask(4)
        assert len({SPACE.canonical(SPACE.parse(x)) for x in first}) == 4
        for arch in first:
            a.tell(arch, value(arch))
        second = b.ask(3)  # b sees a's results: random phase continues to 6, nothing repeated
        assert not {SPACE.canonical(SPACE.parse(x)) for x in second} & {SPACE.canonical(SPACE.parse(x)) for x in first}
        for arch in second:
            b.tell(arch, value(arch))
        result = a.run(value, budget=8, batch_size=4)  # model-guided phase, through /predict
        assert len(result.history) == 8 and result.best_value == max(v for _, v in result.history)
        assert client.get_study(study.id).n_observations == 4 + 3 + 8
        with pytest.raises(Conflict):
            client.observe(study.id, [(first[0], value(first[0]) + 1)])
        with pytest.raises(ValidationError) as info:
            client.observe(study.id, [(first[0], value(first[0])), ("|bad~0|", 1.0)])
        assert info.value.errors[0]["index"] == 1


@pytest.mark.integration
def test_whole_space_bananas_scores_every_class_not_yet_taken(default_server):
    """`whole_space`: after the random start each ask predicts every NB201 class (6,466) not yet observed or
    pending, in one /predict, and never proposes a taken one; with a pool, or in a space that cannot be
    enumerated, it is refused up front."""

    def value(arch: str) -> float:
        ops = SPACE.parse(arch).ops
        return 50 + 3 * ops.count("nor_conv_3x3") - 2 * ops.count("none")

    structural = {"features": {"cole": False, "structural": ["path"]}, "head": {"epochs": 40}}  # no model needed
    with Client(default_server.url, timeout=300) as client:
        study = client.create_study("whole-space", surrogate=structural)
        search = Bananas(study, seed=0, whole_space=True, initial_samples=4, acquisition="ei")
        sizes: list[int] = []
        predict = study.predict
        study.predict = lambda specs: sizes.append(len(specs)) or predict(specs)  # a spy on the real call
        taken: set[str] = set()
        for batch in (4, 3, 3):
            asked = search.ask(batch)
            keys = {SPACE.canonical(SPACE.parse(a)) for a in asked}
            assert len(keys) == batch and not keys & taken
            taken |= keys
            for arch in asked:
                search.tell(arch, value(arch))
        assert sizes == [6466 - 4, 6466 - 7]  # the random start predicts nothing; then all the rest, each ask
        with pytest.raises(TypeError, match=r"^pool is a list of specs"):
            Bananas(study, pool=CELLS[0])
        with pytest.raises(ValueError, match="either pool or whole_space"):
            Bananas(study, whole_space=True, pool=[CELLS[0]])
        nb101 = client.create_study("whole-nb101", space="nb101", surrogate={"head": {"epochs": 40}})
        with pytest.raises(ValueError, match="'nb101' cannot be enumerated"):
            Bananas(nb101, whole_space=True)


@pytest.mark.integration
def test_bananas_dispatches_before_results_and_believes_pending_trials(default_server):
    """Asynchronous workers on the default NB201 study: dispatch 10, refill 2, one result, refill 2 more;
    then, with trials still pending, the surrogate phase never re-proposes them and believes them at the
    surrogate's mean. A cell measured twice counts once, at its mean."""

    def value(arch: str) -> float:
        ops = SPACE.parse(arch).ops
        return 50 + 3 * ops.count("nor_conv_3x3") - 2 * ops.count("none")

    def canon(archs) -> list[str]:
        return [SPACE.canonical(SPACE.parse(a)) for a in archs]

    with Client(default_server.url, timeout=300) as client:
        study = client.create_study("async-workers", objective="test_acc")  # every option at its default
        search = Bananas(study, seed=0)
        first = search.ask(10)
        second = search.ask(2)  # no result yet
        assert len(first) == 10 and len(second) == 2 and len(set(canon(first + second))) == 12
        search.tell(first[0], value(first[0]))
        third = search.ask(2)  # one result, 11 pending: random new cells, nothing pending proposed again
        assert len(third) == 2 and len(set(canon(first + second + third))) == 14
        for arch in first[1:] + second:
            search.tell(arch, value(arch))
        fourth = search.ask(3)  # 12 results, `third` pending: the surrogate chooses
        assert len(fourth) == 3 and len(set(canon(first + second + third + fourth))) == 17
        assert set(search.believed) == set(canon(third))
        direct = client.predict(study.id, third).predictions
        believed = [search.believed[k][1] for k in canon(third)]
        assert believed == pytest.approx([p.mean for p in direct], abs=1e-6)

        client.observe(study.id, [(first[1], value(first[1]) + 2.0, {"seed": 2})])  # a second run of one cell
        search.sync()
        assert search.observed[canon([first[1]])[0]][1] == pytest.approx(value(first[1]) + 1.0)
        for arch in third + fourth:
            search.tell(arch, value(arch))
        assert search.pending == {} and client.get_study(study.id).n_observations == 18


@pytest.mark.integration
@pytest.mark.slow
def test_client_installs_without_torch_and_example_runs(default_server, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([venv / "bin" / "pip", "install", "-q", str(REPO / "client")], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    listed = subprocess.run([venv / "bin" / "pip", "list"], capture_output=True, text=True).stdout.lower()
    assert "colecache-client" in listed and "torch" not in listed and "numpy" not in listed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [
            venv / "bin" / "python",
            REPO / "client" / "examples" / "bananas_nb201.py",
            "--url",
            default_server.url,
            "--budget",
            "15",
            "--batch-size",
            "5",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "best after 15 evaluations" in run.stdout
