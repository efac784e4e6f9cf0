"""Studies over HTTP on a real server process, including a restart."""

from __future__ import annotations

import random

import pytest
from colecache_client.spaces import get_space

pytestmark = pytest.mark.integration

SPACE = get_space("nb201")
CENTRE = SPACE.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
FAST = {"head": {"epochs": 80}}
NB101_CELL = {"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv3x3-bn-relu", "output"]}


def _value(cell) -> float:
    return 50.0 + 4 * cell.ops.count("nor_conv_3x3") - 3 * cell.ops.count("none")


def _near_and_far(seed=0):
    rng = random.Random(seed)
    near = SPACE.dedupe([SPACE.mutate(CENTRE, rng, rng.choice([1, 2])) for _ in range(200)])[:40]
    held = [c for c in SPACE.neighbours(CENTRE) if c not in near][:20]  # unobserved, one edit from the centre
    far = [c for c in (SPACE.mutate(CENTRE, rng, 6) for _ in range(300)) if "nor_conv_3x3" not in c.ops][:20]
    return near, held, far


def test_study_round_trip_and_restart(server_factory):
    server = server_factory()
    near, held, far = _near_and_far()
    with server.client() as client:
        study = client.post("/studies", json={"name": "c100", "objective": "test_acc", "surrogate": FAST}).json()
        sid = study["id"]
        assert study["version"] == 0 and study["embedder"]["pooling"] and study["embedder"]["max_length"] == 512
        body = {"observations": [{"spec": c.to_string(), "value": _value(c), "metadata": {"seed": 1}} for c in near]}
        written = client.post(f"/studies/{sid}/observations", json=body).json()
        assert written == {"inserted": 40, "unchanged": 0, "replaced": 0, "kept": 0, "version": 1, "n_observations": 40}
        predicted = client.post(f"/studies/{sid}/predict", json={"specs": [c.to_string() for c in held + far]}).json()
        assert predicted["surrogate_version"] == 1 and predicted["n_observations"] == 40
        stds = [p["std"] for p in predicted["predictions"]]
        assert min(stds) > 0
        near_std, far_std = stds[: len(held)], stds[len(held) :]
        assert sum(far_std) / len(far_std) > 1.1 * sum(near_std) / len(near_std)
        listed = client.get(f"/studies/{sid}/observations", params={"limit": 5}).json()["observations"]
        assert len(listed) == 5 and listed[0]["metadata"] == {"seed": 1}
    server.stop()

    restarted = server_factory()
    with restarted.client() as client:
        again = client.get(f"/studies/{sid}").json()
        assert again["n_observations"] == 40 and again["version"] == 1 and again["fitted"] is None
        assert again["best"]["value"] == max(_value(c) for c in near)
        repeat = client.post(f"/studies/{sid}/predict", json={"specs": [c.to_string() for c in held + far]}).json()
        assert repeat["surrogate_version"] == 1
        for a, b in zip(predicted["predictions"], repeat["predictions"]):
            assert a["mean"] == pytest.approx(b["mean"], abs=1e-3)
        assert client.get(f"/studies/{sid}").json()["fitted"]["version"] == 1


def test_study_errors_are_clear_4xx(default_server):
    with default_server.client() as client:
        assert client.get("/studies/nope").status_code == 404
        assert client.post("/studies/nope/predict", json={"specs": [CENTRE.to_string()]}).status_code == 404
        sid = client.post("/studies", json={"name": "errors", "surrogate": FAST}).json()["id"]
        cell = CENTRE.to_string()
        # JSON has no NaN, but Python clients send it anyway: it must be refused with the item named.
        other = SPACE.neighbours(CENTRE)[0].to_string()
        raw = f'{{"observations": [{{"spec": "{cell}", "value": 1.0}}, {{"spec": "{other}", "value": NaN}}]}}'
        nan = client.post(f"/studies/{sid}/observations", content=raw, headers={"content-type": "application/json"})
        assert nan.status_code == 422 and nan.json()["errors"][0]["index"] == 1
        wrong = client.post(
            f"/studies/{sid}/observations",
            json={"observations": [{"spec": {"arch": NB101_CELL, "space": "nb101"}, "value": 1.0}]},
        )
        assert wrong.status_code == 422 and "spec is from search space 'nb101'; this study is in 'nb201'" in wrong.text
        unknown = client.post(
            f"/studies/{sid}/observations",
            json={"observations": [{"spec": {"arch": cell, "space": "nb999"}, "value": 1.0}]},
        )
        assert unknown.status_code == 422 and "unknown search space 'nb999'" in unknown.text
        assert client.get(f"/studies/{sid}").json()["n_observations"] == 0  # nothing stored
        few = client.post(f"/studies/{sid}/predict", json={"specs": [cell]})
        assert few.status_code == 409 and "at least 2" in few.text
        client.post(f"/studies/{sid}/observations", json={"observations": [{"spec": cell, "value": 70.0}]})
        conflict = client.post(f"/studies/{sid}/observations", json={"observations": [{"spec": cell, "value": 60.0}]})
        assert conflict.status_code == 409 and "on_conflict" in conflict.text
        assert client.post("/studies", json={"name": "x", "space": "nb999"}).status_code == 422
        assert client.post("/studies", json={"name": "x", "embedder": {"layer": 50}}).status_code == 422
        assert client.post("/studies", json={"name": "x", "surrogate": {"head": {"kind": "xgb"}}}).status_code == 422
        # A list field given one value: the reason says what to send (pydantic says "valid tuple" / "valid list").
        for field, body in (
            ("surrogate.features.structural", {"surrogate": {"features": {"structural": "path"}}}),
            ("surrogate.features.proxies", {"surrogate": {"features": {"proxies": "synflow"}}}),
            ("candidates", {"candidates": cell}),
        ):
            single = client.post("/studies", json={"name": "x", **body})
            assert single.status_code == 422, single.text
            assert single.json()["errors"] == [
                {"field": f"body.{field}", "reason": 'Input should be a list (a JSON array), e.g. ["a", "b"]'}
            ]
        assert client.delete(f"/studies/{sid}").status_code == 204
        assert client.get(f"/studies/{sid}").status_code == 404
