"""Both cache tiers against the real Redis and PostgreSQL on this machine, and against SQLite."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from colecache.cache.durable import SqlTier
from colecache.cache.hot import MemoryTier, RedisTier
from colecache.cache.record import EmbeddingRecord, pack_record, unpack_record, vector_to_bytes
from colecache.cache.tiered import TieredCache
from colecache.db.engine import make_engine

FINGERPRINT = {"id": "f" * 64, "model": "test"}


def _key(i: int) -> bytes:
    return hashlib.sha256(f"item-{i}".encode()).digest()


def _record(i: int, dim: int = 8) -> EmbeddingRecord:
    rng = np.random.default_rng(i)
    return EmbeddingRecord(rng.standard_normal(dim).astype(np.float32), 10 + i, i % 2 == 0)


def _same(a: EmbeddingRecord, b: EmbeddingRecord) -> bool:
    return vector_to_bytes(a.vector) == vector_to_bytes(b.vector) and (a.n_tokens, a.truncated) == (
        b.n_tokens,
        b.truncated,
    )


def test_record_bytes_are_raw_little_endian_float32():
    record = EmbeddingRecord(np.array([1.0, -2.5], dtype=np.float32), 7, True)
    blob = pack_record(record)
    assert blob[5:] == np.array([1.0, -2.5], dtype="<f4").tobytes()
    assert _same(unpack_record(blob), record)


# --- hot tiers ----------------------------------------------------------------------------------
async def test_memory_tier_evicts_least_recently_used():
    per_item = _record(0).vector.nbytes + MemoryTier.OVERHEAD
    tier = MemoryTier(max_bytes=3 * per_item)
    await tier.put_many([(_key(i), _record(i)) for i in range(3)])
    await tier.get_many([_key(0)])  # 0 is now the most recently used
    await tier.put_many([(_key(3), _record(3))])
    got = await tier.get_many([_key(i) for i in range(4)])
    assert [g is not None for g in got] == [True, False, True, True]


@pytest.mark.integration
async def test_redis_tier_round_trip_in_order(redis_url, redis_prefix):
    tier = RedisTier(redis_url, redis_prefix)
    try:
        await tier.put_many([(_key(i), _record(i)) for i in (0, 2)])
        got = await tier.get_many([_key(2), _key(1), _key(0)])
        assert got[1] is None and _same(got[0], _record(2)) and _same(got[2], _record(0))
        assert await tier.ping()
    finally:
        await tier.close()


@pytest.mark.integration
async def test_redis_ttl_is_applied(redis_url, redis_prefix):
    import redis

    tier = RedisTier(redis_url, redis_prefix, ttl_s=100)
    await tier.put_many([(_key(0), _record(0))])
    await tier.close()
    client = redis.Redis.from_url(redis_url)
    ttl = client.ttl(f"{redis_prefix}:emb:{_key(0).hex()}")
    client.close()
    assert 0 < ttl <= 100


# --- durable tier on SQLite and PostgreSQL -----------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def sql_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def test_sql_tier_round_trip_and_batch_in(sql_url):
    tier = SqlTier(make_engine(sql_url))
    rows = [(_key(i), _record(i)) for i in range(1200)]  # more than one IN chunk
    assert tier.put_many(rows, FINGERPRINT["id"], ["v1"] * len(rows)) == {}
    found = tier.get_many([_key(i) for i in range(1300)])
    assert len(found) == 1200 and all(_same(found[_key(i)], _record(i)) for i in range(1200))
    assert tier.count() == 1200


def test_sql_writes_are_idempotent_and_first_writer_wins(sql_url):
    first, second = SqlTier(make_engine(sql_url)), SqlTier(make_engine(sql_url))  # two processes' views
    first.put_many([(_key(1), _record(1))], FINGERPRINT["id"], ["v1"])
    rival = EmbeddingRecord(np.zeros(8, dtype=np.float32), 99, False)
    winners = second.put_many([(_key(1), rival), (_key(2), _record(2))], FINGERPRINT["id"], ["v1", "v1"])
    assert set(winners) == {_key(1)} and _same(winners[_key(1)], _record(1))
    assert first.count() == 2
    assert _same(second.get_many([_key(1)])[_key(1)], _record(1))


# --- both tiers together ------------------------------------------------------------------------
@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def hot_tier(request):
    if request.param == "memory":
        return MemoryTier(1 << 20)
    return RedisTier(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))


async def test_partial_hits_keep_request_order_and_backfill(hot_tier, sql_url):
    cache = TieredCache(hot_tier, SqlTier(make_engine(sql_url)))
    # 0 only in SQL, 1 in both tiers (via put_many), 2 nowhere.
    cache.durable.put_many([(_key(0), _record(0))], FINGERPRINT["id"], ["v1"])
    await cache.put_many([(_key(1), _record(1))], FINGERPRINT, ["v1"])
    keys = [_key(2), _key(1), _key(0), _key(1)]
    records, sources = await cache.get_many(keys)
    assert sources == [None, hot_tier.name, "sql", hot_tier.name]
    assert records[0] is None and _same(records[1], _record(1)) and _same(records[2], _record(0))
    # The SQL hit was copied into the hot tier.
    assert _same((await hot_tier.get_many([_key(0)]))[0], _record(0))
    _, again = await cache.get_many([_key(0)])
    assert again == [hot_tier.name]
    assert await cache.ping() == {hot_tier.name: True, "sql": True}
    await cache.close()


async def test_put_serves_the_durable_winner(hot_tier, sql_url):
    cache = TieredCache(hot_tier, SqlTier(make_engine(sql_url)))
    cache.durable.put_many([(_key(5), _record(5))], FINGERPRINT["id"], ["v1"])
    rival = EmbeddingRecord(np.ones(8, dtype=np.float32), 1, False)
    final = await cache.put_many([(_key(5), rival)], FINGERPRINT, ["v1"])
    assert _same(final[_key(5)], _record(5))
    assert _same((await hot_tier.get_many([_key(5)]))[0], _record(5))
    await cache.close()
