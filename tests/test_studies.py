"""Studies: observations (idempotent, committed before the answer), refits, concurrent predicts, bad input."""

from __future__ import annotations

import asyncio
import random
import types

import numpy as np
import pytest
from colecache.api.state import Services, load_model, open_stores, shutdown
from colecache.settings import Settings
from colecache.specs import InvalidSpecs
from colecache.studies.repository import ObservationConflict, StudyNotFound
from colecache.studies.service import NotEnoughObservations, ObservationIn
from colecache.surrogate import HeadConfig, SurrogateConfig
from colecache_client.spaces import get_space

SPACE = get_space("nb201")
# A fast head for tests: the behaviour under test is the study machinery, not the head's accuracy.
FAST = SurrogateConfig(head=HeadConfig(epochs=60, hidden=32)).model_dump(mode="json")


def _value(cell) -> float:
    """A synthetic objective: 3x3 convolutions help, `none` hurts."""
    return 50.0 + 4 * cell.ops.count("nor_conv_3x3") - 3 * cell.ops.count("none") + 0.5 * cell.ops.count("skip_connect")


def _study(services, **overrides):
    options = {
        "name": "test",
        "space": "nb201",
        "objective": "accuracy",
        "direction": "maximize",
        "render": {"primitives": "exclude_helper", "context": "none", "dataset": "cifar10", "canonical": False},
        "embedder": {"pooling": "mean"},
        "surrogate": FAST,
        "owner": None,
        **overrides,
    }
    return services.studies.repo.create(**options)


def _cells(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [SPACE.sample(rng) for _ in range(n)]


async def _observe(services, study, cells, on_conflict="reject", value=_value):
    items = [ObservationIn(c.to_string(), value(c)) for c in cells]
    return await services.studies.observe(study, items, on_conflict)


async def _predict(services, study_id, specs):
    study = services.studies.repo.get(study_id, None)
    return await services.studies.predict(study, specs)


async def test_observations_are_idempotent_and_conflicts_follow_the_policy(services):
    study = _study(services)
    cells = _cells(10)
    first = await _observe(services, study, cells)
    assert (first.inserted, first.version, first.n_observations) == (10, 1, 10)
    again = await _observe(services, study, cells)
    assert (again.inserted, again.unchanged, again.version) == (0, 10, 1)  # same values: no-op, no new version

    shifted = lambda c: _value(c) + 1  # noqa: E731
    with pytest.raises(ObservationConflict) as info:
        await _observe(services, study, cells[:3] + _cells(2, seed=99), value=shifted)
    assert [c.index for c in info.value.conflicts] == [0, 1, 2]
    assert services.studies.repo.count(study.id) == 10  # the new cells of the rejected post were not stored either

    kept = await _observe(services, study, cells[:2], on_conflict="keep", value=shifted)
    assert (kept.kept, kept.version) == (2, 1)
    replaced = await _observe(services, study, cells[:2], on_conflict="replace", value=shifted)
    assert (replaced.replaced, replaced.version) == (2, 2)
    stored = {o.arch: o.value for o in services.studies.repo.observations(study.id)}
    assert stored[cells[0].to_string()] == shifted(cells[0]) and stored[cells[5].to_string()] == _value(cells[5])


async def test_bad_observations_store_nothing(services):
    study = _study(services)
    await _observe(services, study, _cells(3))
    good = _cells(1, seed=5)[0].to_string()
    for items, bad_index in [
        ([ObservationIn(good, 1.0), ObservationIn(good, float("nan"))], 1),
        ([ObservationIn(good, 1.0), ObservationIn(_cells(1, 6)[0].to_string(), float("inf"))], 1),
        ([ObservationIn("|nope~0|+|none~0|none~1|+|none~0|none~1|none~2|", 1.0)], 0),
        ([ObservationIn(good, 1.0), ObservationIn({"arch": good, "space": "nb101"}, 2.0)], 1),
    ]:
        with pytest.raises(InvalidSpecs) as info:
            await services.studies.observe(study, items, "reject")
        assert [e.index for e in info.value.errors] == [bad_index]
    assert services.studies.repo.count(study.id) == 3
    assert services.studies.repo.get(study.id, None).version == 1
    with pytest.raises(StudyNotFound):
        await services.studies.get("no-such-study", None)


async def test_refits_only_when_observations_change(services):
    study = _study(services)
    with pytest.raises(NotEnoughObservations):
        await _predict(services, study.id, [_cells(1)[0].to_string()])
    await _observe(services, study, _cells(30))
    candidates = [c.to_string() for c in _cells(5, seed=7)]
    first = await _predict(services, study.id, candidates)
    assert (first.fitted.version, first.fitted.n_observations, services.studies.fit_count) == (1, 30, 1)
    await _predict(services, study.id, candidates)
    assert services.studies.fit_count == 1  # unchanged study: the fitted surrogate is reused
    await _observe(services, study, _cells(10, seed=3))
    second = await _predict(services, study.id, candidates)
    assert (second.fitted.version, second.fitted.n_observations, services.studies.fit_count) == (2, 40, 2)
    assert not np.allclose(first.mean, second.mean)


async def test_concurrent_predicts_share_one_refit(services):
    study = _study(services)
    await _observe(services, study, _cells(40))
    candidates = [c.to_string() for c in _cells(8, seed=11)]
    results = await asyncio.gather(*(_predict(services, study.id, candidates) for _ in range(6)))
    assert services.studies.fit_count == 1
    assert all(np.array_equal(r.mean, results[0].mean) for r in results)


async def test_std_is_positive_and_grows_away_from_the_data(services):
    study = _study(services)
    rng = random.Random(4)
    centre = SPACE.parse(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    near = SPACE.dedupe([SPACE.mutate(centre, rng, rng.choice([1, 2])) for _ in range(200)])[:40]
    await _observe(services, study, near)
    far = [c for c in (SPACE.mutate(centre, rng, 6) for _ in range(400)) if c.ops.count("nor_conv_3x3") == 0][:30]
    held_near = [c for c in SPACE.neighbours(centre) if c not in near][:30]
    prediction = await _predict(services, study.id, [c.to_string() for c in held_near + far])
    std_near, std_far = prediction.std[: len(held_near)], prediction.std[len(held_near) :]
    assert (prediction.std > 0).all()
    assert std_far.mean() > 1.5 * std_near.mean()


async def test_predictions_survive_a_restart(tmp_path, tiny_bert_dir, tiny_bert):
    settings = Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu")
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, tiny_bert)
    study = _study(services)
    await _observe(services, study, _cells(25))
    candidates = [c.to_string() for c in _cells(6, seed=21)]
    before = await _predict(services, study.id, candidates)
    await shutdown(services)
    restarted = Services(settings=settings, cache=await open_stores(settings))
    await load_model(restarted, tiny_bert)
    assert restarted.studies.repo.count(study.id) == 25
    after = await _predict(restarted, study.id, candidates)  # refit on demand, seeded: same surrogate
    np.testing.assert_allclose(after.mean, before.mean, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(after.std, before.std, rtol=1e-3, atol=1e-3)
    await shutdown(restarted)


@pytest.mark.parametrize("services", [None, pytest.param("postgres_url", marks=pytest.mark.integration)], indirect=True)
async def test_concurrent_writers_lose_nothing(services):
    study = _study(services)
    cells = SPACE.dedupe(_cells(300, seed=8))[:120]
    batches = [cells[i::6] for i in range(6)]
    overlap = cells[:10]  # every writer also re-posts these, with the same values

    async def writer(batch):
        return await _observe(services, study, batch + overlap)

    results = await asyncio.gather(*(writer(b) for b in batches))
    assert services.studies.repo.count(study.id) == 120
    assert sum(r.inserted for r in results) == 120
    final = services.studies.repo.get(study.id, None)
    assert final.version == sum(1 for r in results if r.inserted)


def test_a_new_studys_unset_fields_resolve_to_the_best_measured_setting():
    """studies/defaults.study_surrogate: NB201 reads op graphs (GIN) without COLE or path; proxies only on a
    scored space and for architecture studies; the MLP rules (structural weight 1 with proxies unless set)
    wherever the MLP head is used; errors that name the field."""
    from colecache.proxies import PROXIES
    from colecache.studies.defaults import study_surrogate
    from colecache_client.spaces import SpecError

    def resolve(space: str, scored: bool, head: dict | None = None, **features):
        config = SurrogateConfig.model_validate({"features": features, "head": head or {}})
        return study_surrogate(config, get_space(space), scored)

    unscored = resolve("nb201", False)
    assert unscored.head.kind == "gin_ensemble" and not unscored.features.cole and unscored.features.structural == ()
    assert unscored.features.proxies == ()
    scored = resolve("nb201", True)
    assert scored.head.kind == "gin_ensemble" and scored.features.proxies == PROXIES
    assert scored.features.proxy_weight == 3.0 and not scored.features.cole
    assert resolve("nb201", True, head={"epochs": 50}).head.kind == "gin_ensemble"  # other head fields kept
    # The graph head reads messages directed and trains Bayesian-bootstrap members in NB201, NB101 and DARTS (its
    # second form, equal weights, searched worse on NB201); what a study sets is kept.
    assert scored.head.bootstrap == "bayesian" and scored.head.graph_messages == "directed"
    assert unscored.head.bootstrap == "bayesian" and unscored.head.graph_messages == "directed"
    assert resolve("nb201", True, head={"graph_messages": "undirected"}).head.graph_messages == "undirected"
    assert resolve("nb201", True, head={"bootstrap": True}).head.bootstrap is True  # the earlier default, asked for
    for space in ("nb101", "darts"):
        other = resolve(space, False).head
        assert other.kind == "gin_ensemble" and other.bootstrap == "bayesian" and other.graph_messages == "directed"
        kept = resolve(space, False, head={"graph_messages": "undirected"}).head
        assert kept.kind == "gin_ensemble" and kept.graph_messages == "undirected" and kept.bootstrap == "bayesian"
    mlp_head = resolve("nb201", True, head={"kind": "mlp_ensemble"}).head  # GIN only
    assert mlp_head.graph_messages == "undirected" and mlp_head.bootstrap is True
    asked = resolve("nb201", True, head={"bootstrap": False, "graph_messages": "directed"}).head
    assert not asked.bootstrap and asked.graph_messages == "directed" and asked.kind == "gin_ensemble"
    with_cole = resolve("nb201", True, cole=True)
    assert with_cole.head.kind == "gin_ensemble" and with_cole.features.cole and with_cole.features.structural == ()
    assert resolve("nb201", True, proxies=[]).features.proxies == ()
    # Asking for the graph head by name gives the same study as leaving it unset.
    named = resolve("nb201", True, head={"kind": "gin_ensemble"})
    assert named.features == scored.features and named.head.kind == "gin_ensemble"
    # A study for code specs (`structural: []`) keeps the MLP on COLE: code has no op graph, nor a network to score.
    code = resolve("nb201", True, structural=[])
    assert code.head.kind == "mlp_ensemble" and code.features.cole and code.features.proxies == ()
    # ... but `structural: []` with COLE off is no code study: the default study's stored features, copied, work.
    copied = resolve("nb201", False, cole=False, structural=[], proxies=[])
    assert copied.head.kind == "gin_ensemble" and copied.features == unscored.features

    # The MLP head (asked for on NB201, or the default elsewhere): COLE + path, weight 1 with proxies.
    def mlp(scored: bool, **features):
        return resolve("nb201", scored, head={"kind": "mlp_ensemble"}, **features).features

    assert mlp(False).proxies == () and mlp(False).structural_weight == 2.0 and mlp(False).cole
    assert resolve("nb201", False, head={"kind": "mlp_ensemble"}).head.bootstrap  # the MLP keeps its bootstrap
    assert mlp(True).proxies == PROXIES and mlp(True).structural_weight == 1.0 and mlp(True).structural == ("path",)
    assert mlp(True).proxy_weight == 8.0 and mlp(True, structural_weight=3).structural_weight == 3.0
    opted_out = mlp(True, proxies=[])
    assert opted_out.proxies == () and opted_out.structural_weight == 2.0
    assert mlp(False, proxies=["synflow"]).structural_weight == 1.0
    for name in ("nb101", "darts"):  # graph heads there too (benchmarks/results/surrogate_eval_pools_gin.md)
        graph = resolve(name, False)
        assert graph.head.kind == "gin_ensemble" and graph.features.structural == () and not graph.features.cole
    mlp_nb101 = resolve("nb101", False, head={"kind": "mlp_ensemble"})
    assert mlp_nb101.features.structural == ("path",) and mlp_nb101.features.cole
    einspace = resolve("einspace", False)
    assert einspace.head.kind == "mlp_ensemble" and einspace.features.cole
    # A graph head asked for outside the measured spaces keeps the head's own field defaults.
    einspace_gin = resolve("einspace", False, head={"kind": "gin_ensemble"}).head
    assert einspace_gin.graph_messages == "undirected" and einspace_gin.bootstrap is True
    with pytest.raises(SpecError, match=r"^surrogate\.features\.proxies: .*'einspace' defines no network"):
        resolve("einspace", False, proxies=["params"])
    with pytest.raises(SpecError, match=r"^surrogate\.features\.structural: .*no encoding\(s\) 'bogus'"):
        resolve("nb201", False, structural=["bogus"])


async def test_a_stored_observation_the_surrogate_cannot_take_is_named_by_observation(services, monkeypatch):
    """A fit that fails on a stored observation (here: its network's proxies cannot be computed) answers 409
    naming that observation, not "item i" of the request that happened to trigger the fit."""
    from colecache.specs import ItemError
    from colecache.studies.service import UnfittableObservations

    surrogate = {**FAST, "features": {**FAST["features"], "proxies": ["params"]}}
    study = _study(services, surrogate=surrogate)
    cells = _cells(4, seed=11)
    await _observe(services, study, cells)
    bad = cells[2].to_string()

    async def measure(specs, on_progress=None):
        reason = "network could not be scored: RuntimeError: boom"
        raise InvalidSpecs([ItemError(i, reason) for i, s in enumerate(specs) if s.arch.to_string() == bad])

    monkeypatch.setattr(services.studies, "proxies", types.SimpleNamespace(measure=measure))  # a failing scorer
    with pytest.raises(UnfittableObservations) as info:
        await _predict(services, study.id, [cells[0].to_string()])
    stored = {o.arch: o.id for o in services.studies.repo.observations(study.id)}
    assert info.value.errors == [
        {"observation_id": stored[bad], "arch": bad, "reason": "network could not be scored: RuntimeError: boom"}
    ]
    assert f"observation {stored[bad]}: network could not be scored" in str(info.value)
