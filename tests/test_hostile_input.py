"""Input that JSON (as Python reads it) allows but that cannot be stored or served back, through a real server.

Lone surrogates, NUL characters, NaN/Infinity, integers past 64 bits and values the surrogate cannot train
with must be refused with a 422 that names the field, on every route, with nothing stored and the connection
kept; whatever is accepted must read back. Also: the CLI's spec arguments, one whitespace rule for code on
/embed and /v1/embeddings, and reject_truncated deciding before it computes.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid

import pytest
from colecache_client.spaces import get_space
from colecache_client.spaces.nb201 import OPS

pytestmark = pytest.mark.integration

NB201 = get_space("nb201")
CELLS = [c.to_string() for c in NB201.dedupe([NB201.parse([a, b, 3, 1, 3, 1]) for a in range(5) for b in range(5)])]
FAST = {"head": {"epochs": 40}}
GRAPH = {
    "nodes": [
        {"id": "in", "op": "input"},
        {"id": "a", "op": "ReLU"},
        {"id": "c", "op": "MyAttention", "params": {"heads": 4}},
        {"id": "out", "op": "output"},
    ],
    "edges": [["in", "a"], ["a", "c"], ["c", "out"]],
}
SURROGATE = "\ud83d"  # half of a UTF-16 pair: json.loads accepts "\\ud83d", UTF-8 cannot hold it
NUL = "\x00"  # JSON allows "\\u0000"; PostgreSQL text cannot store it


def _set(body: dict, path: tuple, value) -> dict:
    """A copy of `body` with the value at `path` (which must exist) replaced."""
    out = copy.deepcopy(body)
    node = out
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        assert path[-1] in node, path
    else:
        assert path[-1] < len(node), path
    node[path[-1]] = value
    return out


def _printable(text: str) -> str:
    """How the server writes a field name that holds a lone surrogate: escaped, as valid UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _field(path: tuple) -> str:
    return _printable("body" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path))


def _send(client, method: str, url: str, body) -> object:
    """Raw JSON text: json.dumps writes lone surrogates as \\uXXXX escapes and NaN/Infinity as bare words."""
    return client.request(method, url, content=json.dumps(body), headers={"content-type": "application/json"})


def _assert_refused(response, field: str, needle: str = "", prefix: bool = False) -> None:
    assert response.status_code == 422, (field, response.status_code, response.text)
    assert response.headers.get("connection", "") != "close", field
    body = response.json()
    errors = body.get("errors") or []
    named = [e for e in errors if e.get("field") == field or (prefix and e.get("field", "").startswith(field))]
    assert named, (field, body)
    assert needle in named[0]["reason"], (needle, named[0])


def _study_state(client, sid: str) -> tuple:
    study = client.get(f"/studies/{sid}").json()
    listed = client.get(f"/studies/{sid}/observations")
    assert listed.status_code == 200, listed.text
    return (
        len(client.get("/studies").json()["studies"]),
        study["version"],
        study["n_observations"],
        study["n_candidates"],
    )


@pytest.fixture(scope="module")
def study(default_server) -> str:
    """A study with observations and candidates; every base body below is accepted as it is (so each refusal
    is caused by the one value a test changes)."""
    with default_server.client() as client:
        created = client.post("/studies", json={"name": "hostile", "surrogate": FAST, "candidates": CELLS[:3]})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        obs = {"observations": [{"spec": c, "value": float(i)} for i, c in enumerate(CELLS[:2])]}
        assert client.post(f"/studies/{sid}/observations", json=obs).status_code == 200
        assert client.post(f"/studies/{sid}/observations", json=OBS_BODY).status_code == 200
        assert client.put(f"/studies/{sid}/candidates", json=CANDIDATES_BODY).status_code == 200
        assert client.post(f"/studies/{sid}/predict", json=PREDICT_BODY).status_code == 200
        assert client.post("/embed", json=_embed_body("base")).status_code == 200
        assert client.post("/v1/embeddings", json=V1_BODY).status_code == 200
        base = client.post("/studies", json=STUDY_BODY)
        assert base.status_code == 201, base.text
        assert client.delete(f"/studies/{base.json()['id']}").status_code == 204
    return sid


def _embed_body(tag: str) -> dict:
    return {
        "specs": [
            CELLS[0],
            {"code": f"x = 1  # {tag}"},
            {"arch": CELLS[1], "space": "nb201"},
            {"arch": GRAPH, "space": "graph"},
        ],
        "space": "nb201",
        "render": {"primitives": "exclude_helper", "context": "none", "dataset": "cifar10"},
        "embedder": {"pooling": "mean", "model": "sentence-transformers/all-MiniLM-L6-v2"},
        "encoding": "float",
    }


EMBED_STRINGS = [
    ("specs", 0),
    ("specs", 1, "code"),
    ("specs", 2, "arch"),
    ("specs", 2, "space"),
    ("specs", 3, "arch", "nodes", 2, "op"),
    ("specs", 3, "arch", "edges", 0, 1),
    ("space",),
    ("render", "primitives"),
    ("embedder", "pooling"),
    ("embedder", "model"),
    ("encoding",),
]
V1_BODY = {"input": ["def f():\n    return 1", "y = 2"], "model": "colecache", "encoding_format": "float", "user": "u"}
V1_STRINGS = [("input", 1), ("model",), ("user",), ("encoding_format",)]
STUDY_BODY = {
    "name": "n",
    "space": "nb201",
    "objective": "acc",
    "direction": "maximize",
    "render": {"primitives": "exclude_helper", "context": "none", "dataset": "cifar10", "canonical": True},
    "embedder": {"pooling": "mean", "layer": 5, "max_length": 512, "normalize": False, "reject_truncated": False},
    "surrogate": {
        "features": {
            "cole": True,
            "reduce": "pca",
            "components": 8,
            "reference": "observed",
            "structural": ["path"],
            "structural_weight": 2.0,
        },
        "head": {
            "kind": "mlp_ensemble",
            "members": 2,
            "hidden": 8,
            "layers": 1,
            "epochs": 10,
            "learning_rate": 0.01,
            "weight_decay": 0.0,
            "loss": "mse",
            "ranking_weight": 1.0,
            "bootstrap": True,
        },
        "seed": 0,
    },
    "candidates": [CELLS[3], {"arch": CELLS[4], "space": "nb201"}],
}
STUDY_STRINGS = [
    ("name",),
    ("space",),
    ("objective",),
    ("direction",),
    ("render", "primitives"),
    ("render", "context"),
    ("render", "dataset"),
    ("embedder", "pooling"),
    ("surrogate", "features", "reduce"),
    ("surrogate", "features", "reference"),
    ("surrogate", "features", "structural", 0),
    ("surrogate", "head", "kind"),
    ("surrogate", "head", "loss"),
    ("candidates", 0),
    ("candidates", 1, "arch"),
]
OBS_BODY = {
    "observations": [
        {"spec": CELLS[5], "value": 70.0, "metadata": {"note": "ok", "tags": ["a", "b"], "run": {"host": "h"}}}
    ],
    "on_conflict": "reject",
}
OBS_STRINGS = [
    ("observations", 0, "spec"),
    ("observations", 0, "metadata", "note"),
    ("observations", 0, "metadata", "tags", 1),
    ("observations", 0, "metadata", "run", "host"),
    ("on_conflict",),
]
PREDICT_BODY = {"specs": [CELLS[6], {"arch": CELLS[7]}]}
PREDICT_STRINGS = [("specs", 0), ("specs", 1, "arch")]
CANDIDATES_BODY = {"specs": [CELLS[8], CELLS[9]]}
CANDIDATES_STRINGS = [("specs", 0), ("specs", 1)]


# --- item 5: text that JSON allows but UTF-8 does not ----------------------------------------------------------
@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["lone-surrogate", "nul"])
def test_bad_text_in_every_string_field_of_every_route_is_a_422_naming_it(default_server, study, bad):
    """Every string field (and object key) of every JSON body; nothing stored, the connection kept."""
    with default_server.client() as client:
        before = _study_state(client, study)
        for path in EMBED_STRINGS:
            tag = uuid.uuid4().hex
            body = _embed_body(tag)
            _assert_refused(_send(client, "POST", "/embed", _set(body, path, f"a{bad}b")), _field(path))
            # the valid code item of the refused request was neither computed nor cached
            again = client.post("/embed", json={"specs": [{"code": f"x = 1  # {tag}"}]})
            assert again.json()["items"][0]["source"] == "computed", path
        for path in V1_STRINGS:
            _assert_refused(_send(client, "POST", "/v1/embeddings", _set(V1_BODY, path, f"a{bad}")), _field(path))
        _assert_refused(_send(client, "POST", "/v1/embeddings", {"input": bad, "model": "colecache"}), "body.input")
        for path in STUDY_STRINGS:
            _assert_refused(_send(client, "POST", "/studies", _set(STUDY_BODY, path, f"{bad}x")), _field(path))
        for path in OBS_STRINGS:
            url = f"/studies/{study}/observations"
            _assert_refused(_send(client, "POST", url, _set(OBS_BODY, path, f"{bad}")), _field(path))
        for path in PREDICT_STRINGS:
            url = f"/studies/{study}/predict"
            _assert_refused(_send(client, "POST", url, _set(PREDICT_BODY, path, f"z{bad}")), _field(path))
        for path in CANDIDATES_STRINGS:
            url = f"/studies/{study}/candidates"
            _assert_refused(_send(client, "PUT", url, _set(CANDIDATES_BODY, path, f"{bad}")), _field(path))
        # keys: an unknown field, a metadata key, a graph parameter name
        _assert_refused(
            _send(client, "POST", "/embed", {"specs": [CELLS[0]], f"k{bad}": 1}), _printable(f"body.k{bad}")
        )
        meta = _set(OBS_BODY, ("observations", 0, "metadata"), {f"k{bad}": 1})
        response = _send(client, "POST", f"/studies/{study}/observations", meta)
        assert response.status_code == 422 and response.json()["errors"][0]["index"] == 0, response.text
        graph = copy.deepcopy(GRAPH)
        graph["nodes"][2]["params"] = {f"h{bad}": 4}
        _assert_refused(
            _send(client, "POST", "/embed", {"specs": [{"arch": graph, "space": "graph"}]}),
            _printable(f"body.specs[0].arch.nodes[2].params.h{bad}"),
        )
        assert _study_state(client, study) == before
        assert client.get("/health").status_code == 200


def test_nul_text_never_reaches_postgresql(server_factory, postgres_url):
    """PostgreSQL text refuses NUL: every such value is a 422 up front (and a %00 id a 404), never a 500."""
    server = server_factory(COLECACHE_DATABASE_URL=postgres_url)
    with server.client() as client:
        sid = client.post("/studies", json={"name": "pg", "space": "graph", "surrogate": {**FAST}}).json()["id"]
        for path in STUDY_STRINGS:
            _assert_refused(_send(client, "POST", "/studies", _set(STUDY_BODY, path, f"x{NUL}")), _field(path))
        graph = _set(GRAPH, ("nodes", 1, "id"), f"a{NUL}")
        graph = _set(graph, ("edges", 0, 1), f"a{NUL}")
        obs = {"observations": [{"spec": graph, "value": 1.0, "metadata": {"note": f"n{NUL}"}}]}
        response = _send(client, "POST", f"/studies/{sid}/observations", obs)
        assert response.status_code == 422 and {e["field"] for e in response.json()["errors"]} == {
            "body.observations[0].spec.nodes[1].id",
            "body.observations[0].spec.edges[0][1]",
            "body.observations[0].metadata.note",
        }
        _assert_refused(
            _send(client, "PUT", f"/studies/{sid}/candidates", {"specs": [graph]}), "body.specs[0].nodes[1].id"
        )
        for method in ("GET", "DELETE"):
            assert client.request(method, "/studies/a%00b").status_code == 404
        assert client.get("/studies/a%00b/observations").status_code == 404
        assert len(client.get("/studies").json()["studies"]) == 1
        study = client.get(f"/studies/{sid}").json()
        assert study["n_observations"] == 0 and study["n_candidates"] == 0


# --- items 6 and 10: numbers the error handler, the code or the store cannot hold -------------------------------
STUDY_FIELDS = [
    ("name",),
    ("objective",),
    ("space",),
    ("direction",),
    ("render", "canonical"),
    ("render", "primitives"),
    ("embedder", "layer"),
    ("embedder", "max_length"),
    ("embedder", "normalize"),
    ("embedder", "pooling"),
    ("surrogate", "seed"),
    ("surrogate", "features", "cole"),
    ("surrogate", "features", "components"),
    ("surrogate", "features", "structural_weight"),
    ("surrogate", "features", "structural", 0),
    ("surrogate", "head", "kind"),
    ("surrogate", "head", "members"),
    ("surrogate", "head", "hidden"),
    ("surrogate", "head", "layers"),
    ("surrogate", "head", "epochs"),
    ("surrogate", "head", "learning_rate"),
    ("surrogate", "head", "weight_decay"),
    ("surrogate", "head", "ranking_weight"),
    ("surrogate", "head", "bootstrap"),
    ("candidates", 0),
]
HOSTILE_NUMBERS = [float("nan"), float("inf"), float("-inf"), 2**64, -(2**64), 10**400]


def test_a_field_with_several_accepted_types_names_itself_once(default_server):
    """`surrogate.head.bootstrap` takes true, false or "bayesian": a bad value is one error on that field that
    lists the choices (not one per branch of the union, with `.bool` / `.literal[...]` on the field name)."""
    with default_server.client() as client:
        count = len(client.get("/studies").json()["studies"])
        for value in ("sometimes", 1, None, ["bayesian"]):
            response = _send(client, "POST", "/studies", _set(STUDY_BODY, ("surrogate", "head", "bootstrap"), value))
            _assert_refused(response, "body.surrogate.head.bootstrap", '"bayesian"')
            assert len(response.json()["errors"]) == 1, response.text
        assert len(client.get("/studies").json()["studies"]) == count


def test_non_finite_and_huge_numbers_in_every_field_of_study_create_are_422(default_server):
    """NaN, +-Infinity and integers past 64 bits (JSON's `1e400` reads as Infinity), anywhere: a 422 naming the
    field (the old handler echoed the value and could not render it), nothing stored, the connection kept."""
    with default_server.client() as client:
        count = len(client.get("/studies").json()["studies"])
        for path in STUDY_FIELDS:
            for value in HOSTILE_NUMBERS:
                _assert_refused(_send(client, "POST", "/studies", _set(STUDY_BODY, path, value)), _field(path))
        text = json.dumps(STUDY_BODY).replace('"seed": 0', '"seed": 1e400')
        response = client.post("/studies", content=text, headers={"content-type": "application/json"})
        _assert_refused(response, "body.surrogate.seed", "Infinity")
        assert len(client.get("/studies").json()["studies"]) == count
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("surrogate", "seed"), 18446744073709551616),  # the example: answered 500 but stored
        (("surrogate", "seed"), -1),
        (("surrogate", "seed"), 2**32),
        (("surrogate", "seed"), 2**63 - 1),
        (("surrogate", "head", "learning_rate"), 1e300),
        (("surrogate", "head", "learning_rate"), 0.0),
        (("surrogate", "head", "weight_decay"), 1e300),
        (("surrogate", "head", "ranking_weight"), 1e300),
        (("surrogate", "features", "structural_weight"), 1e300),
        (("surrogate", "features", "components"), 2**62),
        (("surrogate", "head", "members"), 2**62),
        (("surrogate", "head", "hidden"), 2**62),
        (("surrogate", "head", "layers"), 2**62),
        (("surrogate", "head", "epochs"), 2**62),
        (("embedder", "layer"), 2**62),
        (("embedder", "max_length"), 2**62),
    ],
)
def test_values_the_surrogate_cannot_use_are_refused_before_anything_is_stored(default_server, path, value):
    with default_server.client() as client:
        count = len(client.get("/studies").json()["studies"])
        _assert_refused(_send(client, "POST", "/studies", _set(STUDY_BODY, path, value)), _field(path))
        assert len(client.get("/studies").json()["studies"]) == count
        for study in client.get("/studies").json()["studies"]:
            assert client.get(f"/studies/{study['id']}").status_code == 200


@pytest.mark.parametrize("kind", ["gp", "mlp_ensemble", "bayesian_ridge"])
def test_a_study_at_the_edge_of_every_bound_reads_back_and_predicts(default_server, kind):
    """What is accepted is served: the largest seed every head takes, then GET, observe, predict."""
    body = _set(STUDY_BODY, ("surrogate", "seed"), 2**32 - 1)
    body = _set(body, ("surrogate", "head", "kind"), kind)
    body = _set(body, ("surrogate", "features", "reduce"), "standardize")
    with default_server.client() as client:
        created = client.post("/studies", json=body)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert client.get(f"/studies/{sid}").json()["surrogate"]["seed"] == 2**32 - 1
        obs = [
            {"spec": c, "value": float(i), "metadata": {"big": 2**63 - 1, "small": -(2**63)}}
            for i, c in enumerate(CELLS[:4])
        ]
        assert client.post(f"/studies/{sid}/observations", json={"observations": obs}).status_code == 200
        listed = client.get(f"/studies/{sid}/observations").json()["observations"]
        assert listed[0]["metadata"] == {"big": 2**63 - 1, "small": -(2**63)}
        predicted = client.post(f"/studies/{sid}/predict", json={"specs": CELLS[4:6]})
        assert predicted.status_code == 200, predicted.text
        for p in predicted.json()["predictions"]:
            assert isinstance(p["mean"], float) and isinstance(p["std"], float)


def test_observation_metadata_that_could_not_be_served_back_is_refused(default_server, study):
    """Metadata is free-form JSON, stored and echoed by GET .../observations: it must be servable when stored."""
    deep: object = 1
    for _ in range(300):  # orjson writes at most 254 levels: this was stored, then every listing was a 500
        deep = [deep]
    cases = [
        ({"deep": deep}, "body.observations[1].metadata.deep[0][0]", "nests deeper"),
        ({"big": 2**64}, "body.observations[1].metadata.big", "64-bit"),
        ({"nan": float("nan")}, "body.observations[1].metadata.nan", "NaN"),
        ({"inf": [1.0, float("inf")]}, "body.observations[1].metadata.inf[1]", "Infinity"),
    ]
    with default_server.client() as client:
        before = _study_state(client, study)
        for metadata, field, needle in cases:
            body = {
                "observations": [
                    {"spec": CELLS[10], "value": 1.0},
                    {"spec": CELLS[11], "value": 2.0, "metadata": metadata},
                ]
            }
            response = _send(client, "POST", f"/studies/{study}/observations", body)
            _assert_refused(response, field, needle, prefix=True)
            assert response.json()["errors"][0]["index"] == 1
        assert _study_state(client, study) == before


def test_any_validation_error_renders_as_a_422_without_echoing_the_value(default_server, study):
    """Wrong types holding unrenderable values, broken JSON, bad query parameters: always a 422 with a message."""
    cases = [
        ("POST", "/studies", '{"name": NaN}'),
        ("POST", "/studies", '{"name": {"\\ud83d": Infinity}}'),
        ("POST", "/studies", '{"name": "x", "surrogate": {"head": {"epochs": "\\udc00"}}}'),
        ("POST", "/studies", '{"name": "x", "extra\\ud83d": 1}'),
        ("POST", "/embed", '{"specs": NaN}'),
        ("POST", "/embed", '{"specs": ["x"], "encoding": -Infinity}'),
        ("POST", "/embed", '{"specs": [1'),
        ("POST", "/embed", "[NaN]"),
        ("POST", "/v1/embeddings", '{"input": [1e400], "model": NaN}'),
        ("POST", f"/studies/{study}/observations", '{"observations": [{"spec": "x", "value": "\\ud83d"}]}'),
        ("POST", f"/studies/{study}/predict", '{"specs": "\\ud83d"}'),
        ("PUT", f"/studies/{study}/candidates", '{"specs": 18446744073709551616}'),
        ("GET", f"/studies/{study}/observations?offset=100000000000000000000000", None),
        ("GET", f"/studies/{study}/observations?limit=NaN", None),
    ]
    with default_server.client() as client:
        before = _study_state(client, study)
        for method, url, text in cases:
            headers = {"content-type": "application/json"}
            response = client.request(method, url, content=text, headers=headers if text else None)
            assert response.status_code == 422, (url, text, response.status_code, response.text)
            assert response.headers.get("connection", "") != "close"
            body = response.json()
            message = body["error"]["message"] if url.startswith("/v1/") else body["detail"]
            assert isinstance(message, str) and "invalid field" in message and body["errors"], body
        assert _study_state(client, study) == before


# --- item 13: one whitespace rule, reject_truncated before computing, the CLI ----------------------------------
@pytest.mark.parametrize("text", ["", " ", "\n\t  \n", "x", "  def f(): pass  "])
def test_embed_and_v1_embeddings_apply_one_rule_to_code_text(default_server, text):
    with default_server.client() as client:
        embed = client.post("/embed", json={"specs": [{"code": "ok = 1"}, {"code": text}]})
        v1 = client.post("/v1/embeddings", json={"input": ["ok = 1", text], "model": "colecache"})
    assert embed.status_code == v1.status_code, (embed.text, v1.text)
    if text.strip():
        assert embed.status_code == 200
    else:
        assert embed.status_code == 422 and embed.json()["errors"][0]["index"] == 1
        assert "input[1]" in v1.json()["error"]["message"] and "whitespace" in v1.json()["error"]["message"]


def test_reject_truncated_computes_and_caches_nothing(default_server):
    """The refused request's misses are not computed or cached; its hits stay as they were."""
    tag = uuid.uuid4().hex
    short = {"code": f"a = 1  # {tag}"}
    long_ = {"code": "".join(f"layer_{i} = nn.Linear({i}, {i + 1})  # {tag}\n" for i in range(60))}
    fits = {"code": f"b = 2  # {tag}"}
    options = {"max_length": 64}
    with default_server.client() as client:
        assert client.post("/embed", json={"specs": [short], "embedder": options}).status_code == 200
        refused = client.post(
            "/embed", json={"specs": [short, long_, fits], "embedder": {**options, "reject_truncated": True}}
        )
        assert refused.status_code == 422 and [e["index"] for e in refused.json()["errors"]] == [1]
        after = client.post("/embed", json={"specs": [short, long_, fits], "embedder": options}).json()
    assert [i["source"] for i in after["items"]] == ["memory", "computed", "computed"]
    assert [i["truncated"] for i in after["items"]] == [False, True, False]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colecache.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_cli_render_takes_json_specs_and_bad_input_is_one_line(tmp_path):
    as_string = _cli("render", CELLS[0])
    assert as_string.returncode == 0, as_string.stderr
    as_list = _cli("render", json.dumps(list(NB201.parse(CELLS[0]).ops)))
    as_indices = _cli("render", json.dumps([OPS.index(op) for op in NB201.parse(CELLS[0]).ops]))
    assert as_list.stdout == as_indices.stdout == as_string.stdout
    graph = _cli("render", json.dumps(GRAPH), "--space", "graph")
    assert graph.returncode == 0 and "ReLU" in graph.stdout, graph.stderr
    for args in (
        ["render", "|nor_conv_3x3~0|+|typo~0|none~1|+|none~0|none~1|none~2|"],
        ["render", "[3, 3, 4, 1, 3]"],
        ["render", "{broken json"],
        ["render", CELLS[0], "--space", "nope"],
        ["render", json.dumps(GRAPH), "--space", "graph", "--context", "backbone"],
    ):
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_embed_takes_json_specs_and_bad_input_is_one_line(default_server, tmp_path):
    env = {"COLECACHE_DATA_DIR": str(tmp_path), "COLECACHE_LOG_LEVEL": "warning"}
    ops = json.dumps([OPS.index(op) for op in NB201.parse(CELLS[0]).ops])
    over_http = _cli("embed", ops, CELLS[1], "--url", default_server.url)
    assert over_http.returncode == 0, over_http.stderr
    rows = [json.loads(line) for line in over_http.stdout.splitlines()]
    assert [r["arch"] for r in rows] == CELLS[:2]
    for extra in ([], ["--url", default_server.url]):
        for args in (
            ["embed", CELLS[0], "typo"],
            ["embed", ops, "--pooling", "maxx"],
            ["embed", json.dumps({"code": "  "})],
        ):
            result = _cli(*args, *extra, env=env)
            assert result.returncode == 2, (args, extra, result.stderr)
            assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    # refused before any model loads or any store is written
    assert not (tmp_path / "colecache.db").exists()
