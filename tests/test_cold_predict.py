"""Issue 11 item 8: cold predicts and the whole-space reference hold no surprises.

- `colecache precompute` fills, by default, exactly the keys a default study reads (both the
  in-process and the `--url` path), so the study gets its whole-space reference;
- a degraded reference is visible: in `/predict`, in the SDK (a `ReferenceWarning`), in `GET /info`
  (per space, precomputed or not) and in the server's log;
- long SDK calls wait in proportion to their size and are never re-sent on their own timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
from colecache_client import AsyncClient, Client, ReferenceWarning, Timeout
from colecache_client.client import Study
from colecache_client.types import StudyInfo
from space_contract import pip_install_package

# --- the SDK: timeouts that fit the call, no silent re-send -------------------------------------------
INFO = {"limits": {"max_items_per_request": 1000}}
CELLS = [f"|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~{i % 3}|" for i in range(40)]


class Script:
    """A fake server: replies in order, records each request and the timeout it was sent with."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def read_timeouts(self) -> list[tuple[str, float]]:
        return [(r.url.path, r.extensions["timeout"]["read"]) for r in self.requests]


def _embed_reply(n: int) -> httpx.Response:
    items = [
        {
            "index": i,
            "embedding": [0.0],
            "source": "computed",
            "n_tokens": 1,
            "truncated": False,
            "key": "k",
            "renderer_version": "v",
            "arch": None,
        }
        for i in range(n)
    ]
    return httpx.Response(200, json={"dim": 1, "fingerprint": {}, "items": items, "counts": {}})


def _predict_reply(n: int, reference: str = "space") -> httpx.Response:
    predictions = [{"index": i, "arch": None, "mean": 1.0, "std": 0.1} for i in range(n)]
    body = {"study_id": "s", "surrogate_version": 1, "n_observations": 3, "reference": reference}
    return httpx.Response(200, json={**body, "predictions": predictions})


def test_long_calls_wait_in_proportion_to_their_size():
    script = Script(
        httpx.Response(200, json=INFO),
        _embed_reply(40),
        _predict_reply(40),
        _predict_reply(4),
        httpx.Response(200, json={"studies": []}),
    )
    client = Client("http://test", transport=httpx.MockTransport(script), timeout=10.0, timeout_per_item=0.5)
    client.embed(CELLS)
    client.predict("s", CELLS)
    client.predict("s", CELLS[:4])
    client.list_studies()
    assert script.read_timeouts() == [
        ("/info", 10.0),
        ("/embed", 30.0),
        ("/studies/s/predict", 30.0),
        ("/studies/s/predict", 12.0),
        ("/studies", 10.0),
    ]
    # Chunked calls each get the allowance of their own chunk; the async client does the same.
    script = Script(httpx.Response(200, json=INFO), _embed_reply(25), _embed_reply(15), _predict_reply(40))

    async def run():
        async with AsyncClient(
            "http://test",
            transport=httpx.MockTransport(script),
            timeout=httpx.Timeout(5.0, read=20.0),
            timeout_per_item=1.0,
            max_chunk=25,
        ) as client:
            await client.embed(CELLS)
        async with AsyncClient(
            "http://test", transport=httpx.MockTransport(script), timeout=httpx.Timeout(5.0, read=20.0)
        ) as client:
            client._chunk = 1000
            await client.predict("s", CELLS)

    asyncio.run(run())
    assert script.read_timeouts() == [
        ("/info", 20.0),
        ("/embed", 45.0),
        ("/embed", 35.0),
        ("/studies/s/predict", 40.0),  # the default allowance: 0.5 s per spec
    ]


@pytest.mark.parametrize("call", ["predict", "embed"])
def test_a_long_call_is_not_resent_on_its_own_read_timeout(call):
    """The reported failure: the SDK's timeout re-sent a cold /predict that the server was still computing."""
    script = Script(httpx.Response(200, json=INFO), httpx.ReadTimeout("timed out"), _predict_reply(2))
    client = Client("http://test", transport=httpx.MockTransport(script), timeout=10.0, backoff=0.001)
    with pytest.raises(Timeout) as info:
        client.predict("s", CELLS[:2]) if call == "predict" else client.embed(CELLS[:2])
    assert len(script.requests) == 2  # /info, then the call once
    message = str(info.value)
    assert "not re-sent" in message and "11 s" in message and "2 spec(s)" in message

    # The same in the async client.
    script = Script(httpx.Response(200, json=INFO), httpx.ReadTimeout("timed out"), _predict_reply(2))

    async def run():
        async with AsyncClient("http://test", transport=httpx.MockTransport(script), backoff=0.001) as client:
            await (client.predict("s", CELLS[:2]) if call == "predict" else client.embed(CELLS[:2]))

    with pytest.raises(Timeout, match="not re-sent"):
        asyncio.run(run())
    assert len(script.requests) == 2


def test_short_idempotent_calls_still_retry_a_read_timeout():
    script = Script(httpx.ReadTimeout("timed out"), httpx.Response(200, json={"studies": []}))
    client = Client("http://test", transport=httpx.MockTransport(script), backoff=0.001)
    assert client.list_studies() == [] and len(script.requests) == 2


def _study(script: Script, space: str = "nb201", reference: str = "space", cole: bool = True, info=False) -> Study:
    client = Client("http://test", transport=httpx.MockTransport(script), backoff=0.001)
    if not info:  # no GET /info: the SDK falls back on its own registry of spaces
        client._chunk = 1000
    info = StudyInfo(
        id="abc",
        name="run-1",
        space=space,
        objective="acc",
        direction="maximize",
        version=3,
        n_observations=3,
        render={"primitives": "exclude_helper", "context": "none", "dataset": "cifar10", "canonical": True},
        embedder={"pooling": "mean", "layer": 5, "max_length": 512, "normalize": False},
        surrogate={"features": {"reference": reference, "cole": cole}},
    )
    return Study(client, info)


@pytest.mark.parametrize("served", ["observed", "candidates"])
def test_study_predict_warns_when_the_whole_space_reference_was_not_used(served):
    study = _study(Script(_predict_reply(2, served)))
    with pytest.warns(ReferenceWarning) as caught:
        result = study.predict(CELLS[:2])
    assert result.reference == served
    message = str(caught[0].message)
    assert "whole nb201 space" in message and "run-1" in message
    assert "colecache precompute --space nb201 --primitives exclude_helper --context none" in message
    assert "--canonical --pooling mean --layer 5 --max-length 512 --no-normalize" in message


def test_whether_a_space_is_enumerable_is_the_servers_word():
    """A plugin space installed only beside the server: its /info entry decides."""
    info = {**INFO, "spaces": {"plugin": {"enumerable": True}, "nb201": {"enumerable": False}}}
    study = _study(Script(httpx.Response(200, json=info), _predict_reply(2, "observed")), space="plugin", info=True)
    with pytest.warns(ReferenceWarning, match="whole plugin space"):
        study.predict(CELLS[:2])
    study = _study(Script(httpx.Response(200, json=info), _predict_reply(2, "observed")), space="nb201", info=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceWarning)
        study.predict(CELLS[:2])
    study = _study(Script(_predict_reply(2, "observed")), space="unknown-plugin")  # nobody knows: quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceWarning)
        study.predict(CELLS[:2])


@pytest.mark.parametrize(
    "space, reference, cole, served",
    [
        ("nb201", "space", True, "space"),  # got what it asked for
        ("nb201", "observed", True, "observed"),  # asked for the observed cells
        ("nb201", "space", False, "observed"),  # no COLE features: nothing to reduce
        ("darts", "space", True, "candidates"),  # cannot be enumerated: the pool is the best there is
        ("darts", "space", True, "observed"),
    ],
)
def test_study_predict_is_quiet_when_nothing_better_was_possible(space, reference, cole, served):
    study = _study(Script(_predict_reply(2, served)), space=space, reference=reference, cole=cole)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceWarning)
        assert study.predict(CELLS[:2]).reference == served


# --- the command line's defaults --------------------------------------------------------------------
def test_precompute_defaults_are_the_default_studys_options():
    from colecache.cli import PRECOMPUTE_DEFAULTS
    from colecache.studies.defaults import STUDY_EMBEDDER, STUDY_RENDER

    render = {k: PRECOMPUTE_DEFAULTS[k] for k in ("primitives", "context", "dataset", "canonical")}
    assert render == STUDY_RENDER.model_dump()
    assert (PRECOMPUTE_DEFAULTS["pooling"], PRECOMPUTE_DEFAULTS["layer"]) == (
        STUDY_EMBEDDER.pooling,
        STUDY_EMBEDDER.layer,
    )
    assert STUDY_EMBEDDER.max_length is None and STUDY_EMBEDDER.normalize is None  # server defaults on both sides

    shown = subprocess.run(
        [sys.executable, "-m", "colecache.cli", "precompute", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "default study" in text and "--canonical" in text and "Default: 5" in text and "Default: mean" in text


# --- end to end: a plugin space small enough to enumerate in a test ---------------------------------------
ENUMERABLE_TOY = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "toyenum-colecache-space"
        version = "0.0.1"

        [project.entry-points."colecache.spaces"]
        toyenum = "toyenum_space:ToyEnumSpace"

        [tool.setuptools]
        py-modules = ["toyenum_space"]
    """,
    "toyenum_space.py": '''
        """1 or 2 Linear layers of 4 widths: 20 architectures, so a test can precompute the whole space."""
        from colecache_client.spaces import OpGraph, ProxyNetwork, SearchSpace, SpecError

        WIDTHS = (8, 16, 32, 64)


        class ToyEnumSpace(SearchSpace):
            name = "toyenum"
            renderer_version = "toyenum-pytorch/1"
            encodings = ("widths",)
            default_encodings = ("widths",)
            render_choices = {"primitives": ("exclude_helper",), "context": ("none", "backbone")}

            def parse(self, value):
                if isinstance(value, str):
                    value = value.split("-")
                if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 2:
                    raise SpecError("a toyenum net is 1 or 2 widths, e.g. '8-16'")
                widths = tuple(int(v) for v in value)
                if any(w not in WIDTHS for w in widths):
                    raise SpecError(f"widths must be in {WIDTHS}")
                return widths

            def to_string(self, arch):
                return "-".join(map(str, arch))

            def canonical(self, arch):
                return self.to_string(arch)

            def sample(self, rng):
                return tuple(rng.choice(WIDTHS) for _ in range(rng.randint(1, 2)))

            def mutate(self, arch, rng, edits=1):
                i = rng.randrange(len(arch))
                return arch[:i] + (rng.choice([w for w in WIDTHS if w != arch[i]]),) + arch[i + 1:]

            def neighbours(self, arch):
                return [arch[:i] + (w,) + arch[i + 1:] for i in range(len(arch)) for w in WIDTHS if w != arch[i]]

            def all_cells(self):
                yield from ((w,) for w in WIDTHS)
                yield from ((a, b) for a in WIDTHS for b in WIDTHS)

            def encode(self, arch, kind):
                if kind != "widths":
                    return super().encode(arch, kind)
                return [float(arch.count(w)) for w in WIDTHS] + [float(len(arch))]

            def proxy_network(self):
                return ProxyNetwork({"context": "backbone"}, "Network()", input_shape=(4,), num_classes=10)

            def op_graph(self, arch):
                ops = ("input", *(f"linear({w})" for w in arch), "output")
                return OpGraph(ops, tuple((i, i + 1) for i in range(len(ops) - 1)))

            def render(self, arch, *, primitives="exclude_helper", context="none", dataset="cifar10"):
                self.check_render_options(primitives=primitives, context=context)
                if context == "backbone":  # the whole network zero-cost proxies score: ReLU modules, 10 logits
                    layers, previous = [], 4
                    for width in arch:
                        layers += [f"nn.Linear({previous}, {width})", "nn.ReLU()"]
                        previous = width
                    return (
                        "class Network(nn.Sequential):\\n    def __init__(self):\\n"
                        f"        super().__init__({', '.join(layers)}, nn.Linear({previous}, 10))\\n"
                    )
                lines = ["class Net(nn.Module):", "    def __init__(self):", "        super().__init__()"]
                previous = 4
                for i, width in enumerate(arch):
                    lines.append(f"        self.layer_{i} = nn.Linear({previous}, {width})")
                    previous = width
                lines += ["", "    def forward(self, x):"]
                lines += [f"        x = torch.relu(self.layer_{i}(x))" for i in range(len(arch))]
                return "\\n".join(lines + ["        return x"]) + "\\n"
    ''',
}
TOY_ROWS = [("8", 1.0), ("8-16", 2.0), ("32-64", 3.5), ("64", 1.5), ("16-16", 2.5)]
NB201_CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|",
]


def _install(tmp_path: Path) -> str:
    return pip_install_package(ENUMERABLE_TOY, tmp_path)


def _references(server, timeout: float = 180.0) -> dict:
    """/info's per-space reference status, once the server has finished checking."""
    deadline = time.monotonic() + timeout
    while True:
        spaces = httpx.get(server.url + "/info", timeout=60).json()["spaces"]
        status = {name: entry.get("reference") for name, entry in spaces.items()}
        if all(s is None or "proxies" in s for s in status.values()):  # `proxies` comes with a finished check
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colecache.cli", *args], capture_output=True, text=True, env={**os.environ, **env}
    )


@pytest.mark.integration
@pytest.mark.slow
def test_default_precompute_gives_default_studies_their_whole_space_reference(tmp_path, server_factory, monkeypatch):
    pythonpath = _install(tmp_path)
    monkeypatch.syspath_prepend(pythonpath.split(os.pathsep)[0])
    from toyenum_space import ToyEnumSpace as ToyEnum

    env = {"PYTHONPATH": pythonpath, "COLECACHE_DATA_DIR": str(tmp_path / "data"), "COLECACHE_LOG_LEVEL": "warning"}
    # Looks for a missing reference every second (default: a minute), so the refit below is quick to see.
    first = server_factory(PYTHONPATH=pythonpath, COLECACHE_REFERENCE_RECHECK_S="1")

    # Nothing precomputed: /info says so per enumerable space, and the server log warns.
    status = _references(first)
    assert status["toyenum"]["precomputed"] is False and status["toyenum"]["total"] == 20
    assert status["toyenum"]["command"] == "colecache precompute --space toyenum"
    assert status["darts"] is None  # darts cannot be enumerated
    # NB201's default study reads op graphs, no embeddings (studies/defaults.py): nothing to fill.
    assert status["nb201"]["precomputed"] is None and "nothing to precompute" in status["nb201"]["detail"]
    assert "colecache precompute --space toyenum" in first.log_path.read_text()

    # A default study then fits on its observed cells: the answer and the SDK say so.
    with Client(first.url, timeout=300) as client:
        study = client.create_study("toy-default", space="toyenum")
        study.observe(TOY_ROWS)
        with pytest.warns(ReferenceWarning, match="colecache precompute --space toyenum"):
            degraded = study.predict(["8-8", "64-64"])
            assert degraded.reference == "observed" and not degraded.smoothed  # smoothing needs the space
            study.predict(["8-8"])
    # The fit's fallback is logged once per study, naming the study and the command.
    warned = [line for line in first.log_path.read_text().splitlines() if "asked for the whole-space" in line]
    assert len(warned) == 1 and study.id in warned[0] and "colecache precompute --space toyenum" in warned[0]

    # `colecache precompute --space toyenum` with no other option, in process, into the same data dir.
    filled = _cli("precompute", "--space", "toyenum", env=env)
    assert filled.returncode == 0, filled.stderr
    assert "'canonical': True" in filled.stderr and "pooling mean" in filled.stderr and "layer 5" in filled.stderr

    # The running server notices (within its recheck interval) and refits the same observations on the space.
    time.sleep(1.5)
    with Client(first.url, timeout=300) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReferenceWarning)
            upgraded = client.study(study.id).predict(["8-8", "64-64"])
    assert upgraded.reference == "space" and upgraded.surrogate_version == degraded.surrogate_version

    # A server on that cache: /info says precomputed, and default studies (old and new) use the whole space.
    second = server_factory(PYTHONPATH=pythonpath)
    status = _references(second)
    assert status["toyenum"]["precomputed"] is True and status["toyenum"]["cached"] == 20
    with Client(second.url, timeout=300) as client:
        fresh = client.create_study("toy-default-2", space="toyenum")
        fresh.observe(TOY_ROWS)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReferenceWarning)
            assert fresh.predict(["8-8", "64-64"]).reference == "space"
            assert client.study(study.id).predict(["8-8"]).reference == "space"

        # Neighbourhood smoothing (default 0.8) on the whole-space reference: each mean is 0.2 x its own raw
        # prediction + 0.8 x the mean raw prediction of its one-edit neighbours, the raw ones being what the same
        # fit (same observations, same seed) answers with smoothing off.
        raw_study = client.create_study("toy-raw", space="toyenum", surrogate={"smoothing": 0})
        raw_study.observe(TOY_ROWS)
        cells = ["-".join(map(str, c)) for c in ToyEnum().all_cells()]

        def check_blend(smoothed, raw) -> None:
            assert smoothed.smoothed and not raw.smoothed and raw.reference == "space"
            raw_of = dict(zip(cells, raw.means))
            for cell, mean in zip(cells, smoothed.means):
                near = ["-".join(map(str, n)) for n in ToyEnum().neighbours(ToyEnum().parse(cell))]
                expected = 0.2 * raw_of[cell] + 0.8 * sum(raw_of[n] for n in near) / len(near)
                assert mean == pytest.approx(expected, rel=1e-4, abs=1e-4), cell

        check_blend(fresh.predict(cells), raw_study.predict(cells))
        # The same for a graph head: the space's op graphs are read for every class to smooth its predictions.
        gin = {"head": {"kind": "gin_ensemble", "epochs": 60}}
        gin_study = client.create_study("toy-gin", space="toyenum", surrogate=gin)
        gin_raw = client.create_study("toy-gin-raw", space="toyenum", surrogate={**gin, "smoothing": 0})
        for each in (gin_study, gin_raw):
            each.observe(TOY_ROWS)
        assert gin_study.info.surrogate["head"]["kind"] == "gin_ensemble"
        check_blend(gin_study.predict(cells), gin_raw.predict(cells))

        # The --url path with its defaults fills the keys a default NB201 study reads (a few cells via --archs).
        archs = tmp_path / "cells.txt"
        archs.write_text("\n".join(NB201_CELLS) + "\n")
        over_http = _cli("precompute", "--space", "nb201", "--archs", str(archs), "--url", second.url, env=env)
        assert over_http.returncode == 0, over_http.stderr
        nb201 = client.create_study("nb201-default")
        read = client.embed(NB201_CELLS, render=nb201.info.render, embedder=nb201.info.embedder)
        assert "computed" not in read.counts, read.counts
        assert json.dumps(nb201.info.render, sort_keys=True) == json.dumps(
            {"canonical": True, "context": "none", "dataset": "cifar10", "primitives": "exclude_helper"}
        )


@pytest.mark.integration
@pytest.mark.slow
def test_default_studies_take_the_proxies_once_the_whole_space_is_scored(tmp_path, server_factory):
    """Unset `features.proxies` resolves at creation: off while any network of the space is unscored (a cold
    server would score on demand), all seven at structural weight 1 once every one is cached (the best
    measured setting); a study that sets either field keeps its own value, and stored studies never change."""
    pythonpath = _install(tmp_path)
    env = {"PYTHONPATH": pythonpath, "COLECACHE_DATA_DIR": str(tmp_path / "data"), "COLECACHE_LOG_LEVEL": "warning"}
    filled = _cli("precompute", "--space", "toyenum", env=env)
    assert filled.returncode == 0, filled.stderr
    server = server_factory(PYTHONPATH=pythonpath, COLECACHE_REFERENCE_RECHECK_S="1")
    cells = ["8", "16", "32", "64"] + [f"{a}-{b}" for a in (8, 16, 32, 64) for b in (8, 16, 32, 64)]
    with Client(server.url, timeout=300) as client:
        before = client.create_study("before", space="toyenum")
        assert before.info.surrogate["features"]["proxies"] == []
        assert before.info.surrogate["features"]["structural_weight"] == 2.0
        client.proxies(cells[:10], space="toyenum")  # half the space scored: still off
        assert client.create_study("half", space="toyenum").info.surrogate["features"]["proxies"] == []

        assert _references(server)["toyenum"]["proxies"]["cached"] is False  # /info says so, with the command
        unscored = httpx.get(server.url + "/info").json()["spaces"]["toyenum"]["default_surrogate"]
        assert unscored["features"]["proxies"] == [] and unscored["features"]["structural_weight"] == 2.0
        assert _references(server)["toyenum"]["proxies"]["command"] == "colecache proxies --space toyenum"
        suite = _references(server)["toyenum"]["proxies"]["suite"]
        assert suite["id"].startswith("zc/2:toyenum:") and suite["inputs"] == "power_law" and suite["batch_size"] > 1
        assert len(client.proxies(cells[10:], space="toyenum").items) == 10
        time.sleep(1.5)  # the server's recheck interval for a space found unscored
        deadline = time.monotonic() + 60
        while not _references(server)["toyenum"]["proxies"]["cached"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        after = client.create_study("after", space="toyenum")
        features = after.info.surrogate["features"]
        # /info tells what a default study gets now: the same surrogate the study just resolved to.
        assert httpx.get(server.url + "/info").json()["spaces"]["toyenum"]["default_surrogate"] == after.info.surrogate
        assert features["proxies"] == ["params", "flops", "synflow", "naswot", "jacov", "snip", "grad_norm"]
        assert features["structural_weight"] == 1.0 and features["structural"] == ["widths"]
        assert client.study(after.id).info.surrogate == after.info.surrogate  # stored concrete

        own_weight = client.create_study("own", space="toyenum", surrogate={"features": {"structural_weight": 3}})
        assert own_weight.info.surrogate["features"]["proxies"] == features["proxies"]
        assert own_weight.info.surrogate["features"]["structural_weight"] == 3.0
        off = client.create_study("off", space="toyenum", surrogate={"features": {"proxies": []}})
        assert off.info.surrogate["features"]["proxies"] == []
        assert off.info.surrogate["features"]["structural_weight"] == 2.0
        assert client.study(before.id).info.surrogate["features"]["proxies"] == []  # created earlier: unchanged
        # Proxies asked for by name get the same structural weight as the resolved ones, unless set.
        named = client.create_study("named", space="toyenum", surrogate={"features": {"proxies": ["synflow"]}})
        assert named.info.surrogate["features"]["structural_weight"] == 1.0
        # A study for code specs (no structural encodings) gets none: code has no network to score.
        code = client.create_study("code", space="toyenum", surrogate={"features": {"structural": []}})
        assert code.info.surrogate["features"]["proxies"] == []
        code.observe([({"code": "class A(nn.Module):\n    pass\n"}, 1.0)])
        # ... and one that asks for proxies anyway refuses code specs up front, naming why.
        mixed = client.create_study(
            "mixed", space="toyenum", surrogate={"features": {"structural": [], "proxies": ["params"]}}
        )
        refused = httpx.post(
            f"{server.url}/studies/{mixed.id}/observations",
            json={"observations": [{"spec": {"code": "class A(nn.Module):\n    pass\n"}, "value": 1.0}]},
            timeout=60,
        )
        assert refused.status_code == 422 and "zero-cost proxies" in refused.text, refused.text

        # The resolved study fits and predicts from cached proxies only, on the whole space, smoothed.
        after.observe(TOY_ROWS)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReferenceWarning)
            answer = after.predict(cells)
        assert answer.reference == "space" and answer.smoothed and len(answer.means) == 20
