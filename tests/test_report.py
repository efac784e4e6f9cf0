"""Prequential evaluation: out-of-sample predictions kept, paired with their observation, turned into figures."""

from __future__ import annotations

import random

import numpy as np
import pytest
from colecache.studies import prequential
from colecache.studies.repository import PairRecord
from colecache.studies.service import ObservationIn
from colecache.surrogate import HeadConfig, SurrogateConfig
from colecache_client.spaces import get_space
from scipy import stats

SPACE = get_space("nb201")
FAST = SurrogateConfig(head=HeadConfig(epochs=60, hidden=32)).model_dump(mode="json")


def _value(cell) -> float:
    return 50.0 + 4 * cell.ops.count("nor_conv_3x3") - 3 * cell.ops.count("none") + 0.5 * cell.ops.count("skip_connect")


def _study(services, canonical=True):
    return services.studies.repo.create(
        name="report",
        space="nb201",
        objective="accuracy",
        direction="maximize",
        render={"primitives": "exclude_helper", "context": "none", "dataset": "cifar10", "canonical": canonical},
        embedder={"pooling": "mean"},
        surrogate=FAST,
        owner=None,
    )


def _cells(n, seed=0):
    rng = random.Random(seed)
    return SPACE.dedupe(SPACE.sample(rng) for _ in range(3 * n))[:n]


BOTH = pytest.mark.parametrize(
    "services", [None, pytest.param("postgres_url", marks=pytest.mark.integration)], indirect=True
)


@BOTH
async def test_only_out_of_sample_predictions_pair_with_their_observation(services):
    studies = services.studies
    study = _study(services)
    cells = _cells(30)
    train, later = cells[:10], cells[10:]
    await studies.observe(study, [ObservationIn(c.to_string(), _value(c)) for c in train], "reject")
    study = studies.repo.get(study.id, None)
    # In-sample specs (the first two) are answered but never kept; the rest are pending.
    predicted = await studies.predict(study, [c.to_string() for c in train[:2] + later])
    assert studies.repo.pending_count(study.id) == len(later)
    # A second predict call replaces (not adds) each architecture's pending prediction.
    await studies.predict(study, [c.to_string() for c in later[:5]])
    assert studies.repo.pending_count(study.id) == len(later)

    # Observe 8 of them (one twice, as two seeds in one post) plus one never predicted.
    stranger = _cells(40, seed=9)[-1]
    items = [ObservationIn(c.to_string(), _value(c), {"seed": 0}) for c in later[:8]]
    items += [ObservationIn(later[0].to_string(), _value(later[0]) + 1, {"seed": 1})]
    items += [ObservationIn(stranger.to_string(), _value(stranger))]
    await studies.observe(study, items, "reject")
    assert studies.repo.pending_count(study.id) == len(later) - 8  # settled ones are consumed

    report = await studies.report(studies.repo.get(study.id, None), window=5)
    assert report["n_observations"] == 20
    assert report["online"]["n_pairs"] == 9  # 8 architectures, one of them measured twice
    by_arch = {p["arch"]: p for p in report["pairs"]}
    means = {c.to_string(): float(m) for c, m in zip(later, predicted.mean[2:])}
    for cell in later[5:8]:  # predicted once: the pair holds that prediction
        pair = by_arch[cell.to_string()]
        assert pair["mean"] == pytest.approx(means[cell.to_string()]) and pair["n_train"] == 10
        assert pair["value"] == _value(cell) and pair["surrogate_version"] == 1
    assert [p["index"] for p in report["pairs"]] == sorted(p["index"] for p in report["pairs"])
    assert min(p["index"] for p in report["pairs"]) == 11  # evaluation index: after the 10 training cells
    assert stranger.to_string() not in by_arch

    mean = np.array([p["mean"] for p in report["pairs"]])
    value = np.array([p["value"] for p in report["pairs"]])
    assert report["online"]["kendall_tau"] == pytest.approx(stats.kendalltau(mean, value).statistic)
    assert report["online"]["mae"] == pytest.approx(np.mean(np.abs(mean - value)))
    assert report["online"]["bias"] == pytest.approx(np.mean(mean - value))
    assert report["recent"]["n_pairs"] == 5 and report["recent"]["window"] == 5
    assert report["best"]["value"] == max(_value(c) for c in cells[:18] + [stranger]) + 0
    assert [p["best"] for p in report["best_so_far"]] == list(
        np.maximum.accumulate([p["value"] for p in report["best_so_far"]])
    )
    assert report["tau_over_time"][-1]["n_pairs"] == 9

    # A later repeat of an observed architecture has nothing pending: no new pair.
    again = await studies.predict(studies.repo.get(study.id, None), [later[1].to_string()])
    assert again.fitted.version == 2
    await studies.observe(study, [ObservationIn(later[1].to_string(), 1.0, {"seed": 7})], "reject")
    assert (await studies.report(study, window=5))["online"]["n_pairs"] == 9

    # Deleting the study takes its predictions and pairs with it.
    assert studies.repo.delete(study.id, None)
    assert studies.repo.pending_count(study.id) == 0
    assert studies.repo.history(study.id) == ([], [])


async def test_pending_predictions_are_bounded_oldest_first(services):
    studies = services.studies
    studies.max_pending_predictions = 12
    study = _study(services)
    cells = _cells(40, seed=3)
    await studies.observe(study, [ObservationIn(c.to_string(), _value(c)) for c in cells[:5]], "reject")
    study = studies.repo.get(study.id, None)
    await studies.predict(study, [c.to_string() for c in cells[5:15]])
    await studies.predict(study, [c.to_string() for c in cells[15:25]])
    assert studies.repo.pending_count(study.id) == 12
    # The newest ten survive whole, and two of the older ten: observing all twenty gives twelve pairs.
    await studies.observe(study, [ObservationIn(c.to_string(), _value(c)) for c in cells[5:25]], "reject")
    pairs = (await studies.report(study, window=50))["pairs"]
    assert len(pairs) == 12
    assert {c.to_string() for c in cells[15:25]} <= {p["arch"] for p in pairs}


async def test_report_of_a_study_without_pairs(services):
    study = _study(services)
    report = await services.studies.report(study, window=50)
    assert report["online"] == {
        "n_pairs": 0,
        "kendall_tau": None,
        "spearman_rho": None,
        "mae": None,
        "bias": None,
        "calibration": {
            "n": 0,
            "within_1std": None,
            "within_2std": None,
            "expected_1std": 0.6827,
            "expected_2std": 0.9545,
        },
    }
    assert report["best"] is None and report["best_so_far"] == [] and report["tau_over_time"] == []


def test_calibration_of_a_gaussian_forecaster_matches_68_and_95():
    rng = np.random.default_rng(0)
    mean = rng.normal(70, 3, 4000)
    std = rng.uniform(0.5, 2.0, 4000)
    value = mean + std * rng.standard_normal(4000)  # outcomes drawn from the forecast itself
    pairs = [
        PairRecord(i, None, float(v), float(m), float(s), 1, 10) for i, (m, s, v) in enumerate(zip(mean, std, value))
    ]
    figures = prequential.figures(pairs)
    assert figures["calibration"]["within_1std"] == pytest.approx(0.6827, abs=0.03)
    assert figures["calibration"]["within_2std"] == pytest.approx(0.9545, abs=0.015)
    overconfident = prequential.figures(
        [PairRecord(p.observation_id, None, p.value, p.mean, p.std / 3, 1, 10) for p in pairs]
    )
    assert overconfident["calibration"]["within_1std"] < 0.4
    assert figures["kendall_tau"] > 0.6  # std is small next to the spread of means


def test_tau_over_time_is_sampled_and_ends_at_all_pairs():
    rng = np.random.default_rng(1)
    pairs = [
        PairRecord(i, None, float(v), float(v + rng.normal()), 1.0, 1, 5) for i, v in enumerate(rng.normal(0, 3, 700))
    ]
    history = prequential.History([(p.observation_id, p.value, None) for p in pairs], pairs)
    report = prequential.report(history, maximize=False, window=50)
    curve = report["tau_over_time"]
    assert len(curve) <= prequential.MAX_CURVE_POINTS and curve[0]["n_pairs"] == 3 and curve[-1]["n_pairs"] == 700
    assert curve[-1]["kendall_tau"] == pytest.approx(report["online"]["kendall_tau"])
    assert curve[-1]["window_tau"] == pytest.approx(report["recent"]["kendall_tau"])
    assert report["best"]["value"] == min(p.value for p in pairs)  # minimise


async def test_isomorphic_cells_keep_their_own_predictions(services):
    """Two cells of one isomorphism class share a COLE vector but not a path encoding, so their predictions
    differ: each observed cell must pair with its own prediction (found by a fresh user: they were merged)."""
    studies = services.studies
    a = SPACE.parse("|none~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|")
    b = SPACE.parse("|none~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|")
    assert SPACE.canonical(a) == SPACE.canonical(b) and a.to_string() != b.to_string()
    study = _study(services)
    await studies.observe(study, [ObservationIn(c.to_string(), _value(c)) for c in _cells(12, seed=4)], "reject")
    study = studies.repo.get(study.id, None)
    predicted = await studies.predict(study, [a.to_string(), b.to_string()])
    assert predicted.mean[0] != predicted.mean[1]
    await studies.observe(study, [ObservationIn(a.to_string(), 46.35)], "reject")
    await studies.observe(study, [ObservationIn(b.to_string(), 46.57)], "reject")
    pairs = {p["arch"]: p for p in (await studies.report(study, window=50))["pairs"]}
    assert pairs[a.to_string()]["mean"] == pytest.approx(predicted.mean[0])
    assert pairs[b.to_string()]["mean"] == pytest.approx(predicted.mean[1])
