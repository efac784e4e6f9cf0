"""Repeated measurements: should a study's surrogate fit on every observation, or on one mean per isomorphism class?

A study keeps every measurement (isomorphic cells trained separately, several seeds of one cell).
This compares, on NAS-Bench-201 with the default study surrogate (canonical exclude_helper/none
mean@L5, PCA-64 fitted on the whole space, path encoding x2, 5-MLP ensemble on mse+ranking),
100 training rows drawn two ways:

  uniform: 100 cells drawn uniformly with replacement from all 15,625 (isomorphic cells are
           separate rows with their own measured accuracies; repeats where classes are large)
  pairs:   50 classes among those with at least 2 cells, 2 distinct member cells each

and three training sets: `rows` (every row, with its own path encoding), `means/first` (one row
per class: the mean value, the features of its first drawn cell) and `means/rep` (the mean value,
the class representative's features). Test: 1,000 classes outside the training set, truth = the
class's mean accuracy, features of the representative (lowest index). Kendall tau per repeat; the
table gives means and the paired difference with a 95% interval.

    COLECACHE_DATA_DIR=<cache dir> python benchmarks/surrogate_eval_repeats.py --repeats 30

Needs the default read-out precomputed (`colecache precompute --space nb201 --canonical --layer 5`).
Writes benchmarks/results/surrogate_eval_repeats.md.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from colecache.benchdata import load_nb201
from colecache.surrogate import Surrogate, SurrogateConfig
from colecache_client.spaces import get_space
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from surrogate_eval import DEFAULT_COLE, DEFAULT_NPY, RESULTS, ColeVariant, load_cole, representatives

DATASETS = ("cifar10", "cifar100", "imagenet16-120")
REGIMES = ("uniform", "pairs")
VARIANTS = ("rows", "means/first", "means/rep")


def main(
    repeats: Annotated[int, typer.Option(help="Training draws per dataset and regime.")] = 30,
    npy_dir: Annotated[Path, typer.Option(help="Where vectors read from the cache are kept.")] = DEFAULT_NPY,
) -> None:
    torch.set_num_threads(1)
    started = time.time()
    space = get_space("nb201")
    table = load_nb201()
    reps = representatives(table)
    class_index = {table.unique[i]: k for k, i in enumerate(reps)}
    class_of = np.array([class_index[u] for u in table.unique])
    members = defaultdict(list)
    for i, k in enumerate(class_of):
        members[int(k)].append(i)
    cole = load_cole(ColeVariant.parse(DEFAULT_COLE), "cifar10", table, reps, npy_dir)
    path = np.array([space.encode(space.parse(a), "path") for a in table.arch], dtype=np.float32)
    ref_path = path[reps]
    multi = np.array([k for k, m in members.items() if len(m) >= 2])
    # The reduction is fitted on the unlabelled whole space, identical for every fit: fit it once, then
    # fit only the head, exactly as Surrogate.fit does.
    features = Surrogate(SurrogateConfig()).features.fit(cole, ref_path)

    def fit_predict(x_cole, x_path, y, seed, test):
        model = Surrogate(SurrogateConfig(seed=seed))
        model.features = features
        model.y_mean, model.y_scale = float(y.mean()), float(y.std()) or 1.0
        model.head.fit(features.transform(x_cole, x_path), (y - model.y_mean) / model.y_scale)
        return model.predict(cole[test], ref_path[test])[0]

    taus: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for dataset in DATASETS:
        acc = np.asarray(table.accuracy[dataset], dtype=float)
        class_mean = np.array([acc[members[k]].mean() for k in range(len(reps))])
        for regime in REGIMES:
            for r in range(repeats):
                rng = np.random.default_rng([11, r, DATASETS.index(dataset), regime == "pairs"])
                if regime == "uniform":
                    rows = rng.choice(len(table.arch), 100, replace=True)
                else:
                    classes = rng.choice(multi, 50, replace=False)
                    rows = np.concatenate([rng.choice(members[int(k)], 2, replace=False) for k in classes])
                row_class = class_of[rows]
                seen = set(row_class.tolist())
                test = rng.choice([k for k in range(len(reps)) if k not in seen], 1000, replace=False)
                order = list(dict.fromkeys(row_class.tolist()))
                first = [rows[int(np.flatnonzero(row_class == k)[0])] for k in order]
                y_mean = np.array([acc[rows[row_class == k]].mean() for k in order])
                training = {
                    "rows": (cole[row_class], path[rows], acc[rows]),
                    "means/first": (cole[order], path[first], y_mean),
                    "means/rep": (cole[order], ref_path[order], y_mean),
                }
                for name, (x_cole, x_path, y) in training.items():
                    mean = fit_predict(x_cole, x_path, y, 1000 * r, test)
                    taus[(dataset, regime, name)].append(float(stats.kendalltau(mean, class_mean[test]).statistic))
                print(dataset, regime, r, {v: round(taus[(dataset, regime, v)][-1], 3) for v in VARIANTS}, flush=True)

    lines = [
        "# Repeated measurements: fit on every observation or on per-class means (NAS-Bench-201)",
        "",
        "Command: `COLECACHE_DATA_DIR=<cache dir> python benchmarks/surrogate_eval_repeats.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:])
        + "`",
        "",
        f"Machine: {platform.machine()} CPU, torch threads 1. Date: {_dt.date.today().isoformat()}. "
        f"Wall time: {(time.time() - started) / 60:.1f} min. {repeats} repeats per dataset and regime.",
        "",
        "Default study surrogate on COLE `exclude_helper/none/mean@L5` + path; 100 training rows; Kendall tau on "
        "1,000 held-out classes (truth: the class's mean accuracy). See the script's docstring for the regimes.",
        "",
        "| dataset | rows drawn | rows | means/first | means/rep | means/first - rows (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        for regime in REGIMES:
            a, b, c = (np.array(taus[(dataset, regime, v)]) for v in VARIANTS)
            d = b - a
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            lines.append(
                f"| {dataset} | {regime} | {a.mean():.3f} | {b.mean():.3f} | {c.mean():.3f} | "
                f"{d.mean():+.3f} ({d.mean() - half:+.3f}, {d.mean() + half:+.3f}) |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "surrogate_eval_repeats.md").write_text(text)


if __name__ == "__main__":
    typer.run(main)
