"""The surrogate against the published NB201 predictors (issue 10's protocol), with neighbourhood smoothing.

Protocol: per (dataset, n, draw) a uniformly random training set of n isomorphism classes (the lowest
benchmark index of each of the 6,466 classes), test = every other class; `--draws` draws per (dataset, n),
the same training cells for every method (paired). Kendall tau of the predicted means on the test classes.

Methods (each a study configuration; `+smooth` = the same fit, then `surrogate.smoothing` 0.8 exactly as the
server applies it: every class predicted, then blended with the mean prediction of its one-edit neighbour
classes, surrogate/smoothing.py):

- `cole+path`, `cole+path+smooth` (the MLP head on COLE + path: the default study until 2026-12-07);
- `path`, `path+smooth` (the structural encoding alone, same head);
- `cole+path+zc|sw=1` and its `+smooth` (zero-cost proxies as a block at weight 8, path at weight 1: the MLP
  study on a scored space; rows only once the whole space's proxies are cached, `colecache proxies`);
- `gin`, `gin+smooth` (the graph head on each cell's op graph alone, undirected messages: the default study
  while the space's proxies are not all cached, until directed messages replaced it);
- `gin+zc|pw=3` and its `+smooth` (the proxies joined at the GIN's readout, weight 3: the default study once
  they are, likewise);
- `gin2`, `gin2+zc|pw=3` (the graph head's second form, surrogate_eval.GIN2: every member on every
  observation, directed messages); `gindir`, `gindir+zc|pw=3` (directed messages, bootstrap members kept:
  the default study until 2026-12-08, without / with the proxies); `ginbayes`, `ginbayes+zc|pw=3` (directed
  messages, every member on every observation under its own Dirichlet(1) weights, `"bootstrap": "bayesian"`: the
  default study since).

Reference lines in the plot: GIN / FLAN-family predictors on cifar10-valid (0.785 at n=128, 0.849 at n=256; our
CIFAR-10 column is the 200-epoch test accuracy of training on train+val) and the issue's targets (0.80, 0.86).

    COLECACHE_DATA_DIR=<cache dir> python benchmarks/surrogate_targets.py

reads COLE vectors and proxies as benchmarks/surrogate_eval.py and proxies_eval.py do (from the service's
cache, kept as .npy under benchmarks/out/embeddings), appends one row per (dataset, n, draw, method) to
benchmarks/out/surrogate_targets_rows.jsonl (resumed), and writes benchmarks/results/surrogate_targets.md/.png.
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
from colecache.benchdata import DATASETS, load_nb201
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache.surrogate.smoothing import NeighbourGraph, smooth
from colecache_client.spaces import get_space
from proxies_eval import config_for, proxy_matrix
from scipy import stats
from surrogate_eval import (
    DATASET_TITLES,
    DEFAULT_COLE,
    DEFAULT_NPY,
    GIN2,
    GIN_BAYES,
    GIN_DIRECTED,
    Inputs,
    representatives,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SIZES = (128, 256)
BASES = (
    "cole+path",
    "path",
    "cole+path+zc|sw=1",
    "gin",
    "gin+zc|pw=3",
    "gin2",
    "gin2+zc|pw=3",
    "gindir",
    "gindir+zc|pw=3",
)
GRAPH_TOKENS = ("gin", "gin2", "gindir", "ginbayes")
DEFAULT_METHOD = "ginbayes+smooth"  # studies/defaults.py: while some network of the space is unscored
DEFAULT_SCORED = "ginbayes+zc|pw=3+smooth"  # ... and once every one is
ANCHORS = {128: 0.785, 256: 0.849}  # GIN / FLAN family, NB201 cifar10-valid
TARGETS = {128: 0.80, 256: 0.86}


def class_graph(table, reps: np.ndarray) -> NeighbourGraph:
    """The server's graph (canonical rendering: nodes are isomorphism classes), reordered to `reps`."""
    space = get_space("nb201")
    graph = NeighbourGraph.build([space.parse(a) for a in table.arch], space.neighbours, space.canonical)
    order = [graph.index[table.unique[i]] for i in reps]  # NATS UniqueString == our canonical form
    adjacency = graph.adjacency[order][:, order]
    keys = [graph.keys[j] for j in order]
    return NeighbourGraph(keys, {k: i for i, k in enumerate(keys)}, np.asarray(reps), adjacency.tocsr())


def cached_proxies(table, reps: np.ndarray, npy_dir: Path) -> np.ndarray | None:
    """Every class's proxies, from the .npy copy or the service's cache; None when any is missing (never
    computes: scoring the whole space takes about an hour, `colecache proxies --space nb201`)."""
    if (npy_dir / "proxies_nb201.npy").is_file():
        return proxy_matrix(table, reps, npy_dir)

    async def read() -> np.ndarray | None:
        from colecache.local import local_stores
        from colecache.specs import parse_specs

        async with local_stores() as services:
            return await services.proxies.cached(parse_specs([table.arch[i] for i in reps], "nb201", 10**6))

    return None if asyncio.run(read()) is None else proxy_matrix(table, reps, npy_dir)


def study_config(base: str) -> SurrogateConfig:
    """`gin+cole+zc|pw=6`: a leading `gin` is the graph head (`gin_ensemble`) reading the op graphs, the
    blocks after it joined at its readout; `gin2` its second form (GIN2), `gindir` directed messages only
    (GIN_DIRECTED), `ginbayes` directed messages with Bayesian-bootstrap members (GIN_BAYES); otherwise the
    default MLP head on the blocks (proxies_eval.config_for)."""
    token = base.split("|")[0].split("+")[0]
    graph = token in GRAPH_TOKENS
    blocks = base.removeprefix(token).removeprefix("+") if graph else base
    options = {"gin2": GIN2, "gindir": GIN_DIRECTED, "ginbayes": GIN_BAYES}.get(token, {})
    gin = HeadConfig(kind="gin_ensemble", **options)
    if not blocks:
        return SurrogateConfig(features=FeatureConfig(cole=False, reduce="none", structural=(), proxies=()), head=gin)
    config = config_for(blocks)
    return config.model_copy(update={"head": gin}) if graph else config


def fit_predict(base: str, seed: int, train, y, cole, path, zc, graphs) -> np.ndarray:
    """Predicted means of every class by the study surrogate `base`, fitted on `train`."""
    config = study_config(base).model_copy(update={"seed": seed})
    fc = config.features
    use_cole, use_path, use_zc = fc.cole, bool(fc.structural), bool(fc.proxies)
    use_graphs = config.uses_graphs
    model = Surrogate(config).fit(
        cole[train] if use_cole else None,
        path[train] if use_path else None,
        y[train],
        reference_cole=cole if use_cole else None,
        reference_struct=path if use_path else None,
        proxies=zc[train] if use_zc else None,
        graphs=[graphs[i] for i in train] if use_graphs else None,
    )
    mean, _ = model.predict(
        cole if use_cole else None, path if use_path else None, zc if use_zc else None, graphs if use_graphs else None
    )
    return mean


def op_graphs(table, reps: np.ndarray) -> list:
    """Each class's op graph (the graph head's input), in `reps` order."""
    space = get_space("nb201")
    return [space.op_graph(space.parse(table.arch[i])) for i in reps]


def run(inputs, graph, zc, datasets, sizes, draws, seed, log: Path, progress, bases=BASES) -> list[dict]:
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["dataset"], r["n"], r["draw"], r["method"])] = r
    beta = SurrogateConfig().smoothing
    path = inputs.struct(("path",))
    graphs = op_graphs(inputs.table, inputs.reps)
    bases = [b for b in bases if zc is not None or "zc" not in b]
    rows = []
    with log.open("a") as sink:
        for dataset in datasets:
            y = inputs.table.accuracy[dataset][inputs.reps]
            # COLE vectors only when a base reads them (the graph heads need no `colecache precompute`).
            cole = inputs.cole(DEFAULT_COLE, dataset) if any("cole" in b for b in bases) else None
            for n in sizes:
                for draw in range(draws):
                    rng = np.random.default_rng([seed, draw, n, DATASETS.index(dataset)])
                    train = rng.choice(len(y), size=n, replace=False)
                    test = np.setdiff1d(np.arange(len(y)), train)
                    for base in bases:
                        keys = [(dataset, n, draw, m) for m in (base, base + "+smooth")]
                        if all(k in done for k in keys):
                            rows += [done[k] for k in keys]
                            progress(2)
                            continue
                        started = time.perf_counter()
                        raw = fit_predict(base, draw, train, y, cole, path, zc, graphs)
                        fit_s = time.perf_counter() - started
                        smoothed = smooth(raw, graph.neighbour_mean(raw), beta)
                        for (_, _, _, method), pred in zip(keys, (raw, smoothed)):
                            row = {
                                "dataset": dataset,
                                "n": n,
                                "draw": draw,
                                "method": method,
                                "tau": float(stats.kendalltau(pred[test], y[test]).statistic),
                                "fit_s": fit_s,
                            }
                            sink.write(json.dumps(row) + "\n")
                            rows.append(row)
                        sink.flush()
                        progress(2)
    return rows


def summarise(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["n"], r["method"])].append(r["tau"])
    out = {}
    for key, taus in groups.items():
        t = np.asarray(taus)
        half = 1.96 * t.std(ddof=1) / np.sqrt(len(t)) if len(t) > 1 else float("nan")
        out[key] = (float(t.mean()), float(half), len(t))
    return out


def paired_gain(rows: list[dict], dataset: str, n: int, base: str) -> tuple[float, float]:
    """Mean tau gain of `base+smooth` over `base` on the same draws, and its 95% CI half-width."""
    by = {(r["draw"], r["method"]): r["tau"] for r in rows if r["dataset"] == dataset and r["n"] == n}
    gains = np.asarray([by[(d, base + "+smooth")] - by[(d, base)] for d, m in by if m == base])
    return float(gains.mean()), float(1.96 * gains.std(ddof=1) / np.sqrt(len(gains)))


def write_plot(path: Path, summary: dict, methods, datasets, sizes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.2), sharey=True)
    width = 0.8 / len(methods)
    for ax, n in zip(np.atleast_1d(axes), sizes):
        x = np.arange(len(datasets))
        for i, m in enumerate(methods):
            means = [summary.get((d, n, m), (np.nan, 0, 0))[0] for d in datasets]
            errs = [summary.get((d, n, m), (0, np.nan, 0))[1] for d in datasets]
            colour = plt.cm.tab20(i % 20)  # 14+ methods: the default cycle's 10 colours would repeat
            ax.bar(x + i * width, means, width, yerr=errs, capsize=2, color=colour, label=m.replace("zc", "proxies"))
        if n in ANCHORS:  # published and targeted only at n = 128 / 256
            ax.axhline(
                ANCHORS[n], color="black", linestyle="--", linewidth=0.9, label=f"GIN/FLAN {ANCHORS[n]} (C10-valid)"
            )
            ax.axhline(TARGETS[n], color="red", linestyle=":", linewidth=0.9, label=f"target {TARGETS[n]}")
        ax.set_xticks(x + width * (len(methods) - 1) / 2, [DATASET_TITLES[d] for d in datasets])
        ax.set_ylim(0.55 if min(sizes) >= 128 else 0.15, 0.95)
        ax.set_title(f"n = {n} training classes; test = the other {6466 - n}")
        ax.set_ylabel("Kendall tau")
    np.atleast_1d(axes)[0].legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="Repeat; default all three.")] = None,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Training sizes; default 128 256.")] = None,
    draws: Annotated[int, typer.Option(help="Random training draws per (dataset, n).")] = 20,
    npy_dir: Annotated[Path, typer.Option(help="Where vectors read from the cache are kept.")] = DEFAULT_NPY,
    out: Annotated[Path, typer.Option(help="Markdown output; the plot goes beside it.")] = RESULTS
    / "surrogate_targets.md",
    threads: Annotated[int, typer.Option(help="torch threads for the heads.")] = 1,
    seed: Annotated[int, typer.Option(help="Draw seed: 0 for the table, another (e.g. 7) for tuning draws.")] = 0,
    bases: Annotated[
        list[str] | None, typer.Option("--base", help="Repeat; default BASES (each also run +smooth).")
    ] = None,
    log: Annotated[
        Path | None, typer.Option(help="Rows log (resumed); default benchmarks/out/surrogate_targets_rows.jsonl.")
    ] = None,
) -> None:
    """Kendall tau of study surrogates with and without neighbourhood smoothing, against the published anchors."""
    import warnings

    import torch
    from tqdm import tqdm

    warnings.filterwarnings("ignore", module="sklearn")
    torch.set_num_threads(threads)
    started = time.time()
    command = "python benchmarks/surrogate_targets.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    datasets_t, sizes_t = tuple(datasets or DATASETS), tuple(sizes or SIZES)
    table = load_nb201()
    reps = representatives(table)
    inputs = Inputs(table, reps, npy_dir)
    graph = class_graph(table, reps)
    zc = cached_proxies(table, reps, npy_dir)
    if zc is None:
        typer.echo("proxies of the space are not all cached: rows with zc skipped (colecache proxies --space nb201)")
    bases_t = tuple(bases or BASES)
    shown = [b for b in bases_t if zc is not None or "zc" not in b]
    methods = [m for b in bases_t for m in (b, b + "+smooth") if zc is not None or "zc" not in m]
    log = log or npy_dir.parent / "surrogate_targets_rows.jsonl"
    with tqdm(total=len(datasets_t) * len(sizes_t) * draws * len(methods), unit="fit", dynamic_ncols=True) as bar:
        rows = run(inputs, graph, zc, datasets_t, sizes_t, draws, seed, log, bar.update, bases_t)
    summary = summarise(rows)
    wall = time.time() - started

    lines = [
        "# Study surrogate vs the published NB201 predictors (issue 10 protocol)",
        "",
        f"Command: `COLECACHE_DATA_DIR=<cache dir> {command}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, torch threads "
        f"{threads}. Date: {_dt.date.today().isoformat()}. Wall time of this run: {wall / 60:.1f} min (fits only "
        "when rows were resumed).",
        "",
        f"Protocol: {draws} random training draws per (dataset, n) of n of the 6,466 isomorphism classes; test = "
        "every other class; Kendall tau of the predicted means, mean [95% CI half-width]; paired (same cells for "
        "every method). Accuracies: NB201 200-epoch test accuracy (CIFAR-10: trained on train+val; the published "
        "anchors use cifar10-valid). Heads: the MLP ensemble (5 x 2 x 64) on the named blocks, or with a "
        "leading `gin` the GIN ensemble (5 x 3 GIN layers of 32 on each cell's 8-node op graph, the blocks joined "
        "at its readout; bootstrap members, undirected messages) or `gin2` (its second form: every member on every "
        "observation, directed messages) or `gindir` (directed messages, bootstrap members) or `ginbayes` (directed "
        "messages, Bayesian-bootstrap members)"
        f"; COLE = all-MiniLM-L6-v2, `{DEFAULT_COLE}`, PCA-64 on the whole space; `path` = NB201 "
        "path encoding (weight 2); `zc` = the 7 zero-cost proxies (weight 8; `|sw=1`: path at weight 1; `|pw=3`: "
        f"proxies at weight 3); `+smooth` = neighbourhood smoothing {SurrogateConfig().smoothing} on the one-edit "
        f"class graph (what a study does with the whole space as its reference). **Default study now: "
        f"`{DEFAULT_METHOD}`; `{DEFAULT_SCORED}` "
        "when the space's proxies are all cached at its creation.**",
        "",
        "| dataset | n | " + " | ".join(m.replace("|", "\\|") for m in methods) + " | published (C10-valid) | target |",
        "|---|---:|" + "---:|" * len(methods) + "---:|---:|",
    ]
    for d in datasets_t:
        for n in sizes_t:
            best = max(summary[(d, n, m)][0] for m in methods if (d, n, m) in summary)
            cells = []
            for m in methods:
                mean, half, _ = summary.get((d, n, m), (float("nan"), float("nan"), 0))
                text = f"{mean:.3f} [±{half:.3f}]"
                cells.append(f"**{text}**" if mean == best else text)
            lines.append(
                f"| {DATASET_TITLES[d]} | {n} | "
                + " | ".join(cells)
                + f" | {ANCHORS.get(n, '-')} | {TARGETS.get(n, '-')} |"
            )
    lines += [
        "",
        "Paired gain of smoothing (same fit, same draws), mean [95% CI half-width]:",
        "",
        "| dataset | n | " + " | ".join(b.replace("|", "\\|") for b in shown) + " |",
        "|---|---:|" + "---:|" * len(shown),
    ]
    for d in datasets_t:
        for n in sizes_t:
            gains = [paired_gain(rows, d, n, b) for b in shown]
            lines.append(
                f"| {DATASET_TITLES[d]} | {n} | " + " | ".join(f"{g:+.3f} [±{h:.3f}]" for g, h in gains) + " |"
            )
    lines += ["", f"![surrogate targets]({out.with_suffix('.png').name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    write_plot(out.with_suffix(".png"), summary, methods, datasets_t, sizes_t)
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    typer.run(main)
