"""Two api processes on loopback sharing one Redis and one PostgreSQL: consistent answers,
no duplicate rows, no lost observations."""

from __future__ import annotations

import random
import threading

import httpx
import pytest
from colecache_client.spaces import get_space
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.integration

SPACE = get_space("nb201")


@pytest.fixture
def replicas(server_factory, postgres_url, redis_url, redis_prefix):
    env = {
        "COLECACHE_DATABASE_URL": postgres_url,
        "COLECACHE_REDIS_URL": redis_url,
        "COLECACHE_REDIS_PREFIX": redis_prefix,
        "COLECACHE_MIGRATE_ON_START": "true",  # both race to migrate: the advisory lock serialises them
        # This file checks agreement between replicas, not fault handling (test_faults.py does that): a
        # generous Redis timeout keeps a CPU-starved CI box from tripping the breaker mid-test.
        "COLECACHE_REDIS_TIMEOUT_S": "10",
    }
    a, b = server_factory(**env), server_factory(**env)
    return a, b, postgres_url


def _parallel(*calls):
    results = [None] * len(calls)

    def run(i, fn):
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def test_replicas_agree_on_vectors_and_store_each_once(replicas):
    a, b, url = replicas
    rng = random.Random(3)
    cells = list(dict.fromkeys(SPACE.sample(rng).to_string() for _ in range(40)))[:30]
    body = {"specs": cells, "encoding": "base64"}
    first_a, first_b = _parallel(
        lambda: httpx.post(a.url + "/embed", json=body, timeout=300).json(),
        lambda: httpx.post(b.url + "/embed", json=body, timeout=300).json(),
    )
    vectors_a = [i["embedding"] for i in first_a["items"]]
    vectors_b = [i["embedding"] for i in first_b["items"]]
    assert vectors_a == vectors_b  # the first committed vector is the one both serve
    # Afterwards each replica answers from the shared hot tier, with the same bytes.
    again_a = httpx.post(a.url + "/embed", json=body, timeout=300).json()
    again_b = httpx.post(b.url + "/embed", json=body, timeout=300).json()
    assert again_a["counts"] == {"redis": 30} and again_b["counts"] == {"redis": 30}
    assert [i["embedding"] for i in again_b["items"]] == vectors_a
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT key) FROM embeddings")).one()
    engine.dispose()
    assert rows == (30, 30)


def test_observations_through_both_replicas_are_all_kept(replicas):
    a, b, url = replicas
    study = httpx.post(a.url + "/studies", json={"name": "shared", "surrogate": {"head": {"epochs": 40}}}).json()
    rng = random.Random(5)
    # One cell per isomorphism class: studies render canonically, so isomorphic cells are one spec.
    cells = [c.to_string() for c in SPACE.dedupe(SPACE.sample(rng) for _ in range(200))][:120]
    value = {c: 50.0 + SPACE.parse(c).ops.count("nor_conv_3x3") + (hash(c) % 7) / 10 for c in cells}

    def post(server, part):
        def send():
            for i in range(0, len(part), 10):  # many small commits, interleaved across replicas
                chunk = [{"spec": c, "value": value[c]} for c in part[i : i + 10]]
                response = httpx.post(
                    f"{server.url}/studies/{study['id']}/observations", json={"observations": chunk}, timeout=120
                )
                assert response.status_code == 200, response.text

        return send

    shared = cells[:20]  # both replicas post these too (same values: idempotent)
    _parallel(post(a, cells[20:70] + shared), post(b, cells[70:] + shared), post(a, shared), post(b, shared))
    listed = httpx.get(f"{b.url}/studies/{study['id']}/observations", params={"limit": 1000}).json()["observations"]
    assert sorted(o["arch"] for o in listed) == sorted(cells)
    assert all(o["value"] == value[o["arch"]] for o in listed)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM observations")).scalar() == 120
    engine.dispose()
    # Both replicas fit the same study version deterministically: same predictions.
    candidates = {"specs": [SPACE.sample(rng).to_string() for _ in range(10)]}
    pa = httpx.post(f"{a.url}/studies/{study['id']}/predict", json=candidates, timeout=300).json()
    pb = httpx.post(f"{b.url}/studies/{study['id']}/predict", json=candidates, timeout=300).json()
    assert pa["surrogate_version"] == pb["surrogate_version"] and pa["n_observations"] == 120
    for x, y in zip(pa["predictions"], pb["predictions"]):
        assert x["mean"] == pytest.approx(y["mean"], abs=1e-3) and x["std"] == pytest.approx(y["std"], abs=1e-3)
