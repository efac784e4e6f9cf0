"""Whole-space precompute: fills every read-out from one forward, and resumes where it stopped."""

from __future__ import annotations

import numpy as np
from colecache.api.state import Services, load_model, open_stores, shutdown
from colecache.embedding.options import EmbedOptions
from colecache.precompute import precompute_space
from colecache.render import RenderOptions
from colecache.settings import Settings
from colecache.specs import parse_specs
from colecache_client.spaces import get_space


async def test_precompute_is_resumable_and_matches_embed(tmp_path, tiny_bert_dir, tiny_bert):
    settings = Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", max_batch_size=16)
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, tiny_bert)
    readouts = [EmbedOptions(pooling="mean"), EmbedOptions(pooling="cls", normalize=True)]
    before = tiny_bert.stats.items

    first = await precompute_space(services, "nb201", RenderOptions(), readouts, limit=60)
    assert (first.cells, first.already_cached, first.computed) == (60, 0, 60)
    assert tiny_bert.stats.items - before == 60  # two read-outs, one forward per cell
    progress = []
    second = await precompute_space(
        services, "nb201", RenderOptions(), readouts, limit=100, on_progress=progress.append
    )
    assert (second.already_cached, second.computed, sum(progress)) == (60, 40, 40)
    assert services.cache.durable.count() == 200  # 100 cells x 2 fingerprints

    # What precompute stored is what /embed serves, from SQL, for both read-outs.
    cells = [c.to_string() for c in list(get_space("nb201").all_cells())[:100:9]]
    specs = parse_specs(cells, "nb201", 10_000)
    services.cache.hot = type(services.cache.hot)(1 << 20)  # empty the in-process tier
    for options in readouts:
        outcome = await services.pipeline.embed(specs, RenderOptions(), options)
        assert {i.source for i in outcome.items} == {"sql"}
    fresh = await services.pipeline.embed(
        parse_specs(cells[:3], "nb201", 10_000), RenderOptions(), EmbedOptions(pooling="mean", max_length=255)
    )
    cached = await services.pipeline.embed(
        parse_specs(cells[:3], "nb201", 10_000), RenderOptions(), EmbedOptions(pooling="mean")
    )
    for a, b in zip(fresh.items, cached.items):
        np.testing.assert_allclose(a.record.vector, b.record.vector, rtol=1e-4, atol=1e-5)
    await shutdown(services)


async def test_canonical_precompute_embeds_each_isomorphism_class_once(tmp_path, tiny_bert_dir, tiny_bert):
    from colecache.render import representative

    settings = Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", max_batch_size=16)
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, tiny_bert)
    cells = list(get_space("nb201").all_cells())[:300]
    classes = {representative(c) for c in cells}
    assert len(classes) < len(cells)  # the first cells of the enumeration do share classes
    before = tiny_bert.stats.items

    report = await precompute_space(
        services, "nb201", RenderOptions(canonical=True), [EmbedOptions(pooling="mean")], limit=300
    )
    assert (report.cells, report.computed) == (len(classes), len(classes))
    assert tiny_bert.stats.items - before == len(classes)
    assert services.cache.durable.count() == len(classes)
    # Every cell, whichever member of its class, is now a cache hit.
    outcome = await services.pipeline.embed(
        parse_specs([c.to_string() for c in cells], "nb201", 10_000),
        RenderOptions(canonical=True),
        EmbedOptions(pooling="mean"),
    )
    assert {i.source for i in outcome.items} <= {"memory", "sql"}
    await shutdown(services)
