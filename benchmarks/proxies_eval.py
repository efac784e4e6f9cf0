"""Executable features on NAS-Bench-201: how well do our zero-cost proxies rank, how do they compare with
NASLib's, and what do they add to the study surrogate?

1. Spearman rho of each proxy with the 200-epoch test accuracy, over all 15,625 cells (each cell scored
   as its isomorphism class's network) and over the 6,466 classes, on each dataset.
2. NASLib's proxies (computed on real CIFAR batches, `extra_naslib_zc_subsets/zc_nasbench201.json`,
   ~725 cells per dataset) against ours on the same cells: rho(ours, theirs) and each one's rho with
   accuracy there.
3. Surrogate Kendall tau, test = every class not in the training set (6,466 - n), `--folds` random
   training draws per (dataset, n); feature sets: COLE+path (the default study), COLE+path+proxies,
   proxies alone, path+proxies, COLE+proxies. Same training cells for every feature set (paired).

Proxies are read through the service's cache (the product path): fill it first with
`colecache proxies --space nb201` (computes what is missing, resumable); COLE vectors as in
surrogate_eval.py (`colecache precompute --space nb201`).

    COLECACHE_DATA_DIR=/path/to/cache python benchmarks/proxies_eval.py

writes benchmarks/results/proxies.md and proxies.png; per-fit rows go to benchmarks/out/proxies_rows.jsonl
(resumed when present).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from colecache.benchdata import DATASETS, NB201Table, load_nb201
from colecache.proxies import PROXIES, PROXY_VERSION
from colecache.proxies.measure import plan_for
from colecache.surrogate import FeatureConfig, Surrogate, SurrogateConfig
from scipy import stats
from surrogate_eval import DATASET_TITLES, DEFAULT_COLE, DEFAULT_NPY, Inputs, representatives

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SIZES = (128, 256)
FEATURE_SETS = ("cole+path", "cole+path+zc|pw=1", "cole+path+zc", "cole+path+zc|sw=1", "zc", "path+zc", "cole+zc")
# `|pw=..` / `|sw=..` override the proxy / structural block weight of the default config.
OVERRIDES = {"pw": "proxy_weight", "sw": "structural_weight"}
# NASLib's name for the same score (NASLib's `nwot` is NASWOT).
NASLIB_NAMES = {"params": "params", "flops": "flops", "synflow": "synflow", "naswot": "nwot", "jacov": "jacov",
                "snip": "snip", "grad_norm": "grad_norm"}  # fmt: skip
# NASLib's NB201 tuples: op index per edge (1->2, 1->3, 1->4, 2->3, 2->4, 3->4), nodes numbered from 1.
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
PUBLISHED = "GIN / FLAN-family predictors on cifar10-valid: tau 0.785 at n=128, 0.849 at n=256 (not our split)"


# --- data ---------------------------------------------------------------------------------------------
def proxy_matrix(table: NB201Table, reps: np.ndarray, npy_dir: Path) -> np.ndarray:
    """(len(reps), len(PROXIES)) proxy values of each class representative, through the service's cache."""
    path = npy_dir / "proxies_nb201.npy"
    if path.is_file():
        matrix = np.load(path)
        if matrix.shape == (len(reps), len(PROXIES)):
            return matrix
    matrix = asyncio.run(_measure([table.arch[i] for i in reps]))
    npy_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix


async def _measure(cells: list[str]) -> np.ndarray:
    from colecache.local import local_stores
    from colecache.specs import parse_specs
    from tqdm import tqdm

    specs = parse_specs(cells, "nb201", 10**6)
    out = []
    async with local_stores() as services:
        with tqdm(total=len(specs), unit="net", desc="proxies (cache, computing misses)") as bar:
            for start in range(0, len(specs), 512):
                outcome = await services.proxies.measure(specs[start : start + 512], on_progress=bar.update)
                out.append(outcome.values)
    return np.concatenate(out)


def naslib_cells(entry: str) -> str:
    ops = [NASLIB_OPS[int(i)] for i in entry.strip("()").split(",")]
    by_edge = dict(zip(NASLIB_EDGES, ops))
    nodes = ["|".join(f"{by_edge[(s, t)]}~{s}" for s in range(t)) for t in (1, 2, 3)]
    return "|" + "|+|".join(nodes) + "|"


def read_naslib(folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    """dataset -> cell string -> NASLib proxy name -> score (plus 'val_accuracy')."""
    raw = json.loads((folder / "extra_naslib_zc_subsets" / "zc_nasbench201.json").read_text())
    key_of = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "ImageNet16-120"}
    out = {}
    for dataset, key in key_of.items():
        rows = {}
        for arch, entry in raw[key].items():
            scores = {k: float(v["score"]) for k, v in entry.items() if isinstance(v, dict) and "score" in v}
            scores["val_accuracy"] = float(entry["val_accuracy"])
            rows[naslib_cells(arch)] = scores
        out[dataset] = rows
    return out


def rank_rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho; an undefined score (NaN) ranks lowest (the usual treatment of a failed proxy)."""
    a = np.where(np.isfinite(a), a, -np.inf)
    return float(stats.spearmanr(a, b).statistic)


# --- surrogate protocol -------------------------------------------------------------------------------
def config_for(features: str) -> SurrogateConfig:
    """`cole+path+zc|pw=1`: blocks joined by `+`, then optional block-weight overrides."""
    blocks, *overrides = features.split("|")
    parts = blocks.split("+")
    default = SurrogateConfig()
    cole = "cole" in parts
    update = {
        "cole": cole,
        "structural": tuple(p for p in parts if p in ("path", "onehot", "adjacency")),
        "proxies": PROXIES if "zc" in parts else (),
    }
    for item in overrides:
        key, value = item.split("=")
        update[OVERRIDES[key]] = float(value)
    fc = default.features.model_copy(update=update)
    if not cole:
        fc = FeatureConfig(
            cole=False, reduce="none", structural=fc.structural, proxies=fc.proxies, proxy_weight=fc.proxy_weight
        )
    return default.model_copy(update={"features": fc})


def run(inputs: Inputs, zc: np.ndarray, datasets, sizes, folds, seed, log: Path, progress) -> list[dict]:
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["dataset"], r["n"], r["fold"], r["features"])] = r
    rows = []
    with log.open("a") as sink:
        for dataset in datasets:
            y = inputs.table.accuracy[dataset][inputs.reps]
            cole = inputs.cole(DEFAULT_COLE, dataset)
            path = inputs.struct(("path",))
            for n in sizes:
                for fold in range(folds):
                    rng = np.random.default_rng([seed, fold, n, DATASETS.index(dataset)])
                    train = rng.choice(len(y), size=n, replace=False)
                    test = np.setdiff1d(np.arange(len(y)), train)
                    for features in FEATURE_SETS:
                        key = (dataset, n, fold, features)
                        if key in done:
                            rows.append(done[key])
                            progress()
                            continue
                        config = config_for(features).model_copy(update={"seed": fold})
                        use_cole, use_path = config.features.cole, bool(config.features.structural)
                        started = time.perf_counter()
                        model = Surrogate(config).fit(
                            cole[train] if use_cole else None,
                            path[train] if use_path else None,
                            y[train],
                            reference_cole=cole if use_cole else None,
                            reference_struct=path if use_path else None,
                            proxies=zc[train] if config.features.proxies else None,
                        )
                        fit_s = time.perf_counter() - started
                        mean, _ = model.predict(
                            cole[test] if use_cole else None,
                            path[test] if use_path else None,
                            zc[test] if config.features.proxies else None,
                        )
                        row = {
                            "dataset": dataset,
                            "n": n,
                            "fold": fold,
                            "features": features,
                            "tau": float(stats.kendalltau(mean, y[test]).statistic),
                            "rho": float(stats.spearmanr(mean, y[test]).statistic),
                            "fit_s": fit_s,
                        }
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        rows.append(row)
                        progress()
    return rows


def summarise(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["n"], r["features"])].append(r["tau"])
    out = {}
    for key, taus in groups.items():
        t = np.asarray(taus)
        half = 1.96 * t.std(ddof=1) / np.sqrt(len(t)) if len(t) > 1 else float("nan")
        out[key] = (float(t.mean()), float(half), len(t))
    return out


# --- report -------------------------------------------------------------------------------------------
def write_plot(path: Path, rho_cells: dict, summary: dict, datasets, sizes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / len(datasets)
    x = np.arange(len(PROXIES))
    for i, d in enumerate(datasets):
        axes[0].bar(x + i * width, [rho_cells[(d, p)] for p in PROXIES], width, label=DATASET_TITLES[d])
    axes[0].set_xticks(x + width * (len(datasets) - 1) / 2, PROXIES, rotation=20)
    axes[0].set_ylabel("Spearman rho with test accuracy (15,625 cells)")
    axes[0].axhline(0, color="black", linewidth=0.6)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Each proxy alone")
    labels = [f"{d[:8]} n={n}" for d in datasets for n in sizes]
    x = np.arange(len(labels))
    width = 0.8 / len(FEATURE_SETS)
    for i, f in enumerate(FEATURE_SETS):
        means = [summary.get((d, n, f), (np.nan, 0, 0))[0] for d in datasets for n in sizes]
        errs = [summary.get((d, n, f), (0, np.nan, 0))[1] for d in datasets for n in sizes]
        axes[1].bar(x + i * width, means, width, yerr=errs, label=f.replace("zc", "proxies"), capsize=2)
    axes[1].set_xticks(x + width * (len(FEATURE_SETS) - 1) / 2, labels, rotation=20, fontsize=8)
    axes[1].set_ylim(0.4, 0.9)
    axes[1].axhline(0.80, color="grey", linestyle="--", linewidth=0.8)
    axes[1].set_ylabel("Kendall tau on held-out classes")
    axes[1].legend(fontsize=7, ncol=2)
    axes[1].set_title("Study surrogate with and without proxies")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="Repeat; default all three.")] = None,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Training sizes; default 128 256.")] = None,
    folds: Annotated[int, typer.Option(help="Random training draws per (dataset, n).")] = 10,
    npy_dir: Annotated[Path, typer.Option(help="Where vectors read from the cache are kept.")] = DEFAULT_NPY,
    out: Annotated[Path, typer.Option(help="Markdown output; the plot goes beside it.")] = RESULTS / "proxies.md",
    threads: Annotated[int, typer.Option(help="torch threads for the heads.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Rank NB201 with zero-cost proxies, compare them with NASLib's, and measure them as a surrogate block."""
    import warnings

    import torch
    from colecache.settings import get_settings
    from colecache_client.benchmarks import find_nb201_dir
    from tqdm import tqdm

    warnings.filterwarnings("ignore", module="sklearn")
    torch.set_num_threads(threads)
    started = time.time()
    command = "python benchmarks/proxies_eval.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    datasets_t, sizes_t = tuple(datasets or DATASETS), tuple(sizes or SIZES)
    table = load_nb201()
    reps = representatives(table)
    inputs = Inputs(table, reps, npy_dir)
    zc = proxy_matrix(table, reps, npy_dir)
    class_of = {u: k for k, u in enumerate(table.unique[i] for i in reps)}
    per_cell = zc[[class_of[u] for u in table.unique]]

    rho_cells = {(d, p): rank_rho(per_cell[:, j], table.accuracy[d]) for d in DATASETS for j, p in enumerate(PROXIES)}
    rho_classes = {(d, p): rank_rho(zc[:, j], table.accuracy[d][reps]) for d in DATASETS for j, p in enumerate(PROXIES)}
    naslib = read_naslib(Path(find_nb201_dir()))
    agreement = {}
    for d in DATASETS:
        cells = [c for c in naslib[d] if c in table.index_of]
        rows_ours = per_cell[[table.index_of[c] for c in cells]]
        accuracy = table.accuracy[d][[table.index_of[c] for c in cells]]
        for j, p in enumerate(PROXIES):
            theirs = np.asarray([naslib[d][c].get(NASLIB_NAMES[p], np.nan) for c in cells])
            agreement[(d, p)] = (
                len(cells),
                rank_rho(rows_ours[:, j], theirs),
                rank_rho(rows_ours[:, j], accuracy),
                rank_rho(theirs, accuracy),
            )

    log = npy_dir.parent / "proxies_rows.jsonl"
    total = len(datasets_t) * len(sizes_t) * folds * len(FEATURE_SETS)
    with tqdm(total=total, unit="fit", dynamic_ncols=True) as bar:
        rows = run(inputs, zc, datasets_t, sizes_t, folds, seed, log, bar.update)
    summary = summarise(rows)
    wall = time.time() - started

    settings = get_settings()
    plan = plan_for("nb201", settings.proxy_batch_size, inputs=settings.proxy_inputs)
    lines = [
        "# Zero-cost proxies on NAS-Bench-201",
        "",
        f"Command: `COLECACHE_DATA_DIR=<cache dir> {command}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, torch threads "
        f"{threads}. Date: {_dt.date.today().isoformat()}. Wall time of this run: {wall / 60:.1f} min (fits only "
        "when the rows were resumed).",
        "",
        f"Proxies: `POST /proxies` / `colecache proxies` (proxy suite `{PROXY_VERSION}`): each class's network built "
        "from its rendered code (NB201 macro network, 16 channels, 5 cells per stage, untrained, seed 0), scored on "
        f"{plan.batch_size} seeded {plan.inputs} 3x32x32 inputs (synthetic; `{plan.inputs}`: see "
        "[proxy_inputs.md](proxy_inputs.md)) with random labels (no data). Accuracies: NB201 200-epoch test "
        "accuracy (CIFAR-10: trained on train+val).",
        "",
        "## 1. Each proxy alone: Spearman rho with test accuracy",
        "",
        "| proxy | "
        + " | ".join(f"{DATASET_TITLES[d]} (15,625 cells)" for d in DATASETS)
        + " | "
        + " | ".join(f"{DATASET_TITLES[d]} (6,466 classes)" for d in DATASETS)
        + " |",
        "|---|" + "---:|" * (2 * len(DATASETS)),
    ]
    for p in PROXIES:
        lines.append(
            f"| {p} | "
            + " | ".join(f"{rho_cells[(d, p)]:.3f}" for d in DATASETS)
            + " | "
            + " | ".join(f"{rho_classes[(d, p)]:.3f}" for d in DATASETS)
            + " |"
        )
    lines += [
        "",
        "## 2. Ours against NASLib's (real CIFAR batches) on NASLib's cells",
        "",
        "rho(ours, NASLib) = how alike the two scores rank the cells; then each one's rho with our test accuracy "
        "on those cells. NASLib's `nwot` is NASWOT.",
        "",
        "| dataset | cells | proxy | rho(ours, NASLib) | ours vs accuracy | NASLib vs accuracy |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for d in DATASETS:
        for p in PROXIES:
            n, agree, ours, theirs = agreement[(d, p)]
            lines.append(f"| {DATASET_TITLES[d]} | {n} | {p} | {agree:.3f} | {ours:.3f} | {theirs:.3f} |")
    lines += [
        "",
        "## 3. Study surrogate: Kendall tau on every held-out class",
        "",
        f"Default study head (`SurrogateConfig().head`); {folds} random training draws per cell, test = the other "
        "classes; mean [95% CI half-width]. `cole` = default COLE read-out with the whole-space PCA reference, "
        "`path` = NB201 path encoding (block weight 2), `zc` = the 7 proxies, each standardised on the training "
        "cells, block weight `proxy_weight` (default 8; `|pw=1` = weight 1, `|sw=1` = path weight 1). The weights "
        "were picked on other training draws (seed 7, CIFAR-100, n=128, 5 draws; pw=1 / 8 / 16: 0.702 / 0.734 / "
        "0.731; with sw=1, pw=4 / 8: 0.735 / 0.740), after a first look at 5 of the CIFAR-100 n=128 draws below. "
        f"Published anchor: {PUBLISHED}.",
        "",
        "| dataset | n | " + " | ".join(f.replace("|", "\\|") for f in FEATURE_SETS) + " |",
        "|---|---:|" + "---:|" * len(FEATURE_SETS),
    ]
    for d in datasets_t:
        for n in sizes_t:
            cells = []
            best = max(summary[(d, n, f)][0] for f in FEATURE_SETS if (d, n, f) in summary)
            for f in FEATURE_SETS:
                mean, half, _ = summary.get((d, n, f), (float("nan"), float("nan"), 0))
                text = f"{mean:.3f} [±{half:.3f}]"
                cells.append(f"**{text}**" if mean == best else text)
            lines.append(f"| {DATASET_TITLES[d]} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "![proxies](proxies.png)", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    write_plot(out.with_suffix(".png"), rho_cells, summary, datasets_t, sizes_t)
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    typer.run(main)
