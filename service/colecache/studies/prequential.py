"""Prequential evaluation of a study's surrogate: how good its predictions turned out, online.

Dawid's prequential principle (J. R. Stat. Soc. A 147, 1984): judge a forecaster only on forecasts
made before the outcome was known. A study keeps the latest prediction its surrogate made for each
architecture it had not been fitted on; when that architecture is observed, the prediction and the
observed value form a pair (studies/repository.py). This module turns pairs into figures: Kendall
tau and Spearman rho between predicted means and observed values, mean absolute error, calibration
(the share of observations inside mean +- 1 and 2 std against a Gaussian's 68.27% / 95.45%), bias
(mean of predicted minus observed: a search picks what its surrogate rates highest, so a positive
bias is the winner's curse showing), and the best-so-far curve of the search.

Pairs in a search are chosen by the surrogate itself (the most promising candidates), so their
observed values span a narrower range than a random test set and their tau reads lower than an
offline tau on random held-out cells at the same n; `benchmarks/results/report_online.md` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .repository import PairRecord

EXPECTED_1STD = 0.6827  # P(|z| <= 1) of a standard normal
EXPECTED_2STD = 0.9545  # P(|z| <= 2)
MIN_PAIRS_RANK = 3  # a rank correlation over fewer pairs says nothing
MAX_CURVE_POINTS = 200  # tau over time is sampled at most this often (each point is a tau over up to all pairs)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def rank_figures(mean: np.ndarray, value: np.ndarray) -> tuple[float | None, float | None]:
    """(Kendall tau-b, Spearman rho) of predicted means against observed values; None when undefined
    (fewer than 3 pairs, or either side constant)."""
    if len(mean) < MIN_PAIRS_RANK or np.ptp(mean) == 0 or np.ptp(value) == 0:
        return None, None
    tau = stats.kendalltau(mean, value).statistic
    rho = stats.spearmanr(mean, value).statistic
    return _finite(tau), _finite(rho)


def figures(pairs: Sequence[PairRecord]) -> dict:
    """Online figures over `pairs` (JSON-ready). `calibration.n` counts pairs with std > 0; the shares are
    over those (a zero-std prediction claims certainty and has no z-score)."""
    mean = np.array([p.mean for p in pairs], dtype=float)
    value = np.array([p.value for p in pairs], dtype=float)
    std = np.array([p.std for p in pairs], dtype=float)
    tau, rho = rank_figures(mean, value)
    positive = std > 0
    z = np.abs(value[positive] - mean[positive]) / std[positive]
    return {
        "n_pairs": len(pairs),
        "kendall_tau": tau,
        "spearman_rho": rho,
        "mae": _finite(float(np.mean(np.abs(value - mean)))) if len(pairs) else None,
        "bias": _finite(float(np.mean(mean - value))) if len(pairs) else None,
        "calibration": {
            "n": int(positive.sum()),
            "within_1std": float(np.mean(z <= 1)) if len(z) else None,
            "within_2std": float(np.mean(z <= 2)) if len(z) else None,
            "expected_1std": EXPECTED_1STD,
            "expected_2std": EXPECTED_2STD,
        },
    }


@dataclass(frozen=True)
class History:
    """A study's evaluation history: observations (id, value, arch) in order and its prequential pairs."""

    observations: list[tuple[int, float, str | None]]
    pairs: list[PairRecord]


def report(history: History, maximize: bool, window: int) -> dict:
    """The report's figures (see `GET /studies/{id}/report`): `index` is the 1-based evaluation index,
    the observation's position in the study's order of arrival."""
    index = {obs_id: i + 1 for i, (obs_id, _, _) in enumerate(history.observations)}
    best_so_far, best, best_at = [], None, None
    for i, (_, value, arch) in enumerate(history.observations, start=1):
        if best is None or (value > best[0] if maximize else value < best[0]):
            best, best_at = (value, arch), i
        best_so_far.append({"index": i, "value": value, "best": best[0]})
    pairs = history.pairs
    over_time = []
    checkpoints = np.unique(np.linspace(MIN_PAIRS_RANK, len(pairs), MAX_CURVE_POINTS).round().astype(int))
    for k in checkpoints[checkpoints >= MIN_PAIRS_RANK] if len(pairs) >= MIN_PAIRS_RANK else ():
        k = int(k)
        mean = np.array([p.mean for p in pairs[:k]])
        value = np.array([p.value for p in pairs[:k]])
        tau, _ = rank_figures(mean, value)
        window_tau, _ = rank_figures(mean[-window:], value[-window:])
        over_time.append(
            {"index": index[pairs[k - 1].observation_id], "n_pairs": k, "kendall_tau": tau, "window_tau": window_tau}
        )
    return {
        "n_observations": len(history.observations),
        "best": None if best is None else {"value": best[0], "index": best_at, "arch": best[1]},
        "online": figures(pairs),
        "recent": {**figures(pairs[-window:]), "window": window},
        "best_so_far": best_so_far,
        "pairs": [
            {
                "index": index[p.observation_id],
                "arch": p.arch,
                "mean": p.mean,
                "std": p.std,
                "value": p.value,
                "surrogate_version": p.surrogate_version,
                "n_train": p.n_train,
            }
            for p in pairs
        ],
        "tau_over_time": over_time,
    }
