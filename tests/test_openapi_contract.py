"""The OpenAPI document is true: schemathesis drives every operation of a real server from `/openapi.json`
(schema-valid and schema-breaking requests, boundary values, wrong methods and content types) and every
answer must be documented: no 5xx, a documented status code, content type, headers and body.

Bounded and reproducible: `derandomize` fixes the examples, a few hundred cases per operation. Half of the
cases that name a study name a real one, and half of the bodies carry real architectures, so the routes get
past their 404s and 422s into the real logic.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
import schemathesis
from colecache_client.spaces import get_space
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    allow_header_conformance,
]
SERVER_LIMITS = {"max_items_per_request": 16, "max_body_bytes": 65536}
EXAMPLES_PER_OPERATION = 150  # fuzzing; the coverage phase adds its own boundary cases on top
POOL = [cell.to_string() for cell in list(get_space("nb201").all_cells())[::499]]
CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    "|skip_connect~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
]


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory):
    """A real server as shipped (bundled model, SQLite, in-process hot tier) with small limits, so 413s are
    reachable too."""
    from conftest import ServerProcess

    folder = tmp_path_factory.mktemp("contract")
    server = ServerProcess(
        {
            "COLECACHE_DATA_DIR": str(folder / "data"),
            "COLECACHE_LOG_LEVEL": "warning",
            **{f"COLECACHE_{name.upper()}": str(value) for name, value in SERVER_LIMITS.items()},
        },
        folder / "server.log",
    )
    yield server.start()
    server.stop()


def _study(client: httpx.Client, name: str) -> str:
    """A study that fits in milliseconds (a Bayesian ridge head on the observed cells) and can predict."""
    created = client.post(
        "/studies",
        json={
            "name": name,
            "surrogate": {"head": {"kind": "bayesian_ridge"}, "features": {"reference": "observed"}},
        },
    )
    assert created.status_code == 201, created.text
    study = created.json()["id"]
    observations = [{"spec": cell, "value": float(i)} for i, cell in enumerate(CELLS)]
    assert client.post(f"/studies/{study}/observations", json={"observations": observations}).status_code == 200
    return study


@pytest.fixture(scope="module")
def study_id(contract_server) -> str:
    with contract_server.client() as client:
        return _study(client, "contract")


def _document() -> dict:
    """The document the contract server serves, built from the app itself: schemathesis parametrizes at
    collection time, before any server runs (its lazy, fixture-based loader fails on pytest 9.2). The
    served document is checked to be this one below."""
    from colecache.api.app import create_app
    from colecache.settings import Settings

    return create_app(Settings(_env_file=None, **SERVER_LIMITS)).openapi()


schema = schemathesis.openapi.from_dict(_document())


def _half(value) -> bool:
    """Half of the generated values, chosen by a hash of the value itself (reproducible, unbiased)."""
    return hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).digest()[0] % 2 == 0


def _steer_to_valid_specs(body):
    """Random strings are almost never architectures, so the success paths (vectors, predictions, stored
    observations) would go untested: in half of the bodies, every spec becomes a real NB201 cell."""
    if not isinstance(body, dict) or not _half(body):
        return
    if isinstance(body.get("specs"), list):
        body["specs"] = [POOL[i % len(POOL)] for i in range(len(body["specs"]))]
    if isinstance(body.get("observations"), list):
        for i, observation in enumerate(body["observations"]):
            if isinstance(observation, dict):
                observation["spec"] = POOL[i % len(POOL)]
    if isinstance(body.get("model"), str):  # /v1/embeddings: the served model
        body["model"] = "colecache"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_documented(case, contract_server, study_id):
    parameters = case.path_parameters or {}
    _steer_to_valid_specs(case.body)
    if "study_id" in parameters and _half(parameters["study_id"]):
        if case.method.upper() == "DELETE":  # deleting the shared study would starve every later case
            with contract_server.client() as client:
                parameters["study_id"] = _study(client, "to-delete")
        else:
            parameters["study_id"] = study_id
    case.call_and_validate(base_url=contract_server.url, checks=CHECKS, timeout=120)


def test_the_document_lists_every_route_with_its_errors(contract_server):
    """The served document is the one tested above, and every route in it declares its error answers."""
    document = httpx.get(contract_server.url + "/openapi.json").json()
    assert document == _document()
    operations = {(m.upper(), p): op for p, ops in document["paths"].items() for m, op in ops.items()}
    assert len(operations) >= 16
    assert ("PUT", "/studies/{study_id}/candidates") in operations
    assert ("GET", "/studies/{study_id}/candidates") in operations
    for (method, path), operation in operations.items():
        declared = set(operation["responses"])
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= declared, (method, path)
        if "{study_id}" in path:
            assert {"404", "503"} <= declared, (method, path)
        for code in ("429", "503"):
            if code in declared:
                assert operation["responses"][code]["headers"]["Retry-After"]["required"], (method, path, code)
    metrics = operations[("GET", "/metrics")]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


# --- the kinds of disagreement the first schemathesis run found, route by route --------------------------------------
def _operations() -> list[tuple[str, str, dict]]:
    return [(m.upper(), p, op) for p, ops in _document()["paths"].items() for m, op in ops.items()]


def _url(path: str, study: str) -> str:
    return path.replace("{study_id}", study)


def test_405_names_every_method_of_the_path(contract_server, study_id):
    """`Allow` lists what the path serves (Starlette named only the first matching route's methods)."""
    paths: dict[str, set[str]] = {}
    for method, path, _ in _operations():
        paths.setdefault(path, set()).add(method)
    with contract_server.client() as client:
        for path, methods in paths.items():
            response = client.request("OPTIONS", _url(path, study_id))
            assert response.status_code == 405, path
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed - {"HEAD"} == methods, (path, allowed)
            body = response.json()
            assert isinstance(body["error"]["message"] if path.startswith("/v1/") else body["detail"], str)


BODY_ROUTES = [(method, path) for method, path, op in _operations() if "requestBody" in op]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_body_that_is_not_json_text_is_a_documented_4xx(contract_server, study_id, method, path):
    """Not UTF-8: 400 naming the cause; not sent as JSON: 415. Both in the route's documented shape."""
    declared = dict(_operations_by_key()[(method, path)]["responses"])
    with contract_server.client() as client:
        url = _url(path, study_id)
        garbled = client.request(
            method, url, content=b'{"specs": ["\xff\xfe"]}', headers={"content-type": "application/json"}
        )
        form = client.request(
            method, url, content=b"specs=x", headers={"content-type": "application/x-www-form-urlencoded"}
        )
    assert garbled.status_code == 400 and form.status_code == 415
    for response in (garbled, form):
        assert str(response.status_code) in declared
        body = response.json()
        message = body["error"]["message"] if path.startswith("/v1/") else body["detail"]
        assert isinstance(message, str)
    assert "UnicodeDecodeError" in str(garbled.json()) and "application/json" in str(form.json())


def _operations_by_key() -> dict[tuple[str, str], dict]:
    return {(method, path): op for method, path, op in _operations()}


@pytest.mark.parametrize("bad", [None, 3, 2.5, True])
def test_a_spec_that_is_not_a_string_list_or_object_is_refused_by_the_schema_and_the_server(
    contract_server, study_id, bad
):
    """Every field that holds specs: the schema says string, array or object, and the server's 422 names the item."""
    fields = [
        ("POST", "/embed", {"specs": [CELLS[0], bad]}, "body.specs[1]"),
        ("POST", "/studies/{study_id}/predict", {"specs": [CELLS[0], bad]}, "body.specs[1]"),
        ("PUT", "/studies/{study_id}/candidates", {"specs": [CELLS[0], bad]}, "body.specs[1]"),
        ("POST", "/studies", {"name": "x", "candidates": [CELLS[0], bad]}, "body.candidates[1]"),
        (
            "POST",
            "/studies/{study_id}/observations",
            {"observations": [{"spec": CELLS[0], "value": 1.0}, {"spec": bad, "value": 1.0}]},
            "body.observations[1].spec",
        ),
    ]
    document = _document()
    with contract_server.client() as client:
        for method, path, body, field in fields:
            response = client.request(method, _url(path, study_id), json=body)
            assert response.status_code == 422, (path, response.text)
            (error,) = response.json()["errors"]
            assert (
                error["field"] == field and error["index"] == 1 and "a string, a list or an object" in error["reason"]
            )
    spec = document["components"]["schemas"]["EmbedRequest"]["properties"]["specs"]["items"]
    assert {branch["type"] for branch in spec["anyOf"]} == {"string", "array", "object"}
