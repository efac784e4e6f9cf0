"""The whole request path in-process: ordering of mixed hits and misses, single-flight, durability."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from colecache.api.state import Services, load_model, open_stores, shutdown
from colecache.embedding.options import EmbedOptions
from colecache.pipeline import TruncatedItems
from colecache.render import RenderOptions
from colecache.settings import Settings
from colecache.specs import parse_specs
from colecache_client.spaces import get_space

SPACE = get_space("nb201")
CELLS = [c.to_string() for c in list(SPACE.all_cells())[:: 15625 // 12][:12]]


@pytest.fixture
def settings(tmp_path, tiny_bert_dir):
    return Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", batch_wait_ms=1)


async def _services(settings, backend) -> Services:
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, backend)
    assert services.pipeline is not None, services.startup_error
    return services


async def _embed(services, cells, **options):
    specs = parse_specs(cells, "nb201", 10_000)
    return await services.pipeline.embed(specs, RenderOptions(), EmbedOptions(**options))


async def test_partial_hits_merge_back_in_request_order(settings, tiny_bert):
    services = await _services(settings, tiny_bert)
    first = await _embed(services, CELLS[:2])
    assert [i.source for i in first.items] == ["computed", "computed"]
    mixed = await _embed(services, [CELLS[2], CELLS[0], CELLS[3], CELLS[1]])
    assert [i.source for i in mixed.items] == ["computed", "memory", "computed", "memory"]
    assert mixed.items[1].record.vector.tobytes() == first.items[0].record.vector.tobytes()
    assert mixed.items[3].record.vector.tobytes() == first.items[1].record.vector.tobytes()
    assert [i.arch for i in mixed.items] == [CELLS[2], CELLS[0], CELLS[3], CELLS[1]]
    # Each vector is the one the model gives that cell alone.
    alone = await _embed(services, [CELLS[3]], normalize=True)
    assert alone.items[0].source == "computed"  # another fingerprint, another key
    np.testing.assert_allclose(
        alone.items[0].record.vector,
        mixed.items[2].record.vector / np.linalg.norm(mixed.items[2].record.vector),
        rtol=1e-4,
        atol=1e-6,
    )
    await shutdown(services)


async def test_concurrent_identical_misses_are_computed_once(settings, tiny_bert):
    services = await _services(settings, tiny_bert)
    before = tiny_bert.stats.items
    results = await asyncio.gather(*(_embed(services, CELLS[4:10]) for _ in range(5)))
    assert tiny_bert.stats.items - before == 6  # 5 requests x 6 cells, each cell through the model once
    reference = [i.record.vector.tobytes() for i in results[0].items]
    assert all([i.record.vector.tobytes() for i in r.items] == reference for r in results)
    duplicates = await _embed(services, [CELLS[10], CELLS[10], CELLS[10]])
    assert tiny_bert.stats.items - before == 7
    assert len({i.record.vector.tobytes() for i in duplicates.items}) == 1
    await shutdown(services)


async def test_sql_tier_serves_after_restart_bit_identical(settings, tiny_bert):
    services = await _services(settings, tiny_bert)
    first = await _embed(services, CELLS[:3])
    await shutdown(services)
    restarted = await _services(settings, tiny_bert)  # new in-process hot tier, same SQLite file
    again = await _embed(restarted, CELLS[:3])
    assert [i.source for i in again.items] == ["sql"] * 3
    assert [i.record.vector.tobytes() for i in again.items] == [i.record.vector.tobytes() for i in first.items]
    assert [i.source for i in (await _embed(restarted, CELLS[:3])).items] == ["memory"] * 3
    await shutdown(restarted)


async def test_reject_truncated_names_the_items(settings, tiny_bert):
    services = await _services(settings, tiny_bert)
    await _embed(services, CELLS[:2], max_length=32)  # cached truncated
    with pytest.raises(TruncatedItems) as info:
        await _embed(services, [CELLS[0], {"code": "x = 1"}, CELLS[1]], max_length=32, reject_truncated=True)
    assert [e.index for e in info.value.errors] == [0, 2]
    fine = await _embed(services, [{"code": "x = 1"}], max_length=32, reject_truncated=True)
    assert not fine.items[0].record.truncated
    await shutdown(services)


@pytest.mark.integration
async def test_redis_and_postgres_tiers_end_to_end(
    tmp_path, tiny_bert_dir, tiny_bert, redis_url, redis_prefix, postgres_url
):
    settings = Settings(
        model=str(tiny_bert_dir),
        data_dir=tmp_path,
        device="cpu",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        database_url=postgres_url,
    )
    services = await _services(settings, tiny_bert)
    first = await _embed(services, CELLS[:3])
    assert [i.source for i in (await _embed(services, CELLS[:3])).items] == ["redis"] * 3
    await shutdown(services)
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{redis_prefix}:*"):
        client.delete(key)
    client.close()
    restarted = await _services(settings, tiny_bert)
    again = await _embed(restarted, CELLS[:3])
    assert [i.source for i in again.items] == ["sql"] * 3
    assert [i.record.vector.tobytes() for i in again.items] == [i.record.vector.tobytes() for i in first.items]
    assert [i.source for i in (await _embed(restarted, CELLS[:3])).items] == ["redis"] * 3
    await shutdown(restarted)
