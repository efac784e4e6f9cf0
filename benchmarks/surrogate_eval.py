"""Offline evaluation of colecache surrogates on NAS-Bench-201: how well do they *rank* held-out cells?

Protocol (as in the COLE paper): one cell per isomorphism class (the lowest benchmark index, 6,466
cells); per repeat, 10 folds stratified by the dataset's test accuracy; for each fold the test set
is that fold and the training set is n cells drawn (stratified by accuracy) from the other nine,
n in {14, 55, 220, 879}. Kendall tau and Spearman rho on the test fold, mean and 95% CI over
folds x repeats. Every feature set sees the very same training cells (paired comparison).

Feature sets: COLE vectors of the default CPU model for each render variant and pooling (read back
through the service's own cache, never recomputed here: precompute them first, see README), the
NB201 path encoding and the one-hot adjacency encoding, all under the same heads. COLE reductions
(whitening etc.) are fitted on the unlabelled embeddings of every cell (`reference='space'`),
exactly as a study does when the space is precomputed.

    COLECACHE_DATA_DIR=/path/to/cache python benchmarks/surrogate_eval.py

writes benchmarks/results/surrogate_eval.md and surrogate_eval.png. Vectors read from the cache
are kept as .npy under benchmarks/out/embeddings (gitignored) for later runs.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import itertools
import json
import os
import platform
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from colecache.benchdata import DATASETS, NB201Table, load_nb201
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from scipy import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_NPY = HERE / "out" / "embeddings"
GIN2 = {"bootstrap": False, "graph_messages": "directed"}
"""The graph head's second form (`gin2` in the tables): every member on every observation, directed messages.
Ranks better than the default graph head offline, searched worse (studies/defaults.py says why it is not the
default)."""
GIN_DIRECTED = {"graph_messages": "directed"}
"""`gindir` in the tables: directed messages, bootstrap members kept (the default's exploration)."""
GIN_BAYES = {"graph_messages": "directed", "bootstrap": "bayesian"}
"""`ginbayes` in the tables: directed messages, every member on every observation under its own Dirichlet(1)
weights (Bayesian bootstrap, Rubin 1981)."""
SIZES = (14, 55, 220, 879)
POOLINGS = ("mean", "cls", "mean_all_layers", "last_token")
RENDERS = ("exclude_helper/none", "inline/none", "helper/none", "exclude_helper/comment", "exclude_helper/backbone")
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16-120": "ImageNet16-120"}

# COLE embeddings of the default surrogate: the render variant / read-out it was chosen for.
DEFAULT_COLE = "exclude_helper/none/mean@L5"


# --- data ---------------------------------------------------------------------------------------
def representatives(table: NB201Table) -> np.ndarray:
    """Lowest benchmark index of each isomorphism class (6,466 on NB201)."""
    seen: set[str] = set()
    out = []
    for i, u in enumerate(table.unique):
        if u not in seen:
            seen.add(u)
            out.append(i)
    return np.asarray(out)


def structural(table: NB201Table, reps: np.ndarray, kind: str) -> np.ndarray:
    from colecache_client.spaces import get_space

    space = get_space("nb201")
    return np.asarray([space.encode(space.parse(table.arch[i]), kind) for i in reps], dtype=np.float32)


@dataclass(frozen=True)
class ColeVariant:
    """`primitives/context/pooling[@layer]`; contexts that name a dataset take `dataset`."""

    primitives: str
    context: str
    pooling: str
    layer: int | None = None

    @classmethod
    def parse(cls, text: str) -> ColeVariant:
        primitives, context, readout = text.split("/")
        pooling, _, layer = readout.partition("@L")
        return cls(primitives, context, pooling, int(layer) if layer else None)

    def label(self) -> str:
        layer = "" if self.layer is None else f"@L{self.layer}"
        return f"{self.primitives}/{self.context}/{self.pooling}{layer}"

    def file_stem(self, dataset: str) -> str:
        context = self.context if self.context == "none" else f"{self.context}-{dataset}"
        layer = "" if self.layer is None else f"_L{self.layer}"
        return f"{self.primitives}__{context}__{self.pooling}{layer}"


def load_cole(variant: ColeVariant, dataset: str, table: NB201Table, reps: np.ndarray, npy_dir: Path) -> np.ndarray:
    """The variant's vectors for `reps`, from the .npy copy or else from the service's SQL cache.

    Raises LookupError when the cache misses any cell: this benchmark never computes embeddings
    (run `colecache precompute` for the variant first).
    """
    path = npy_dir / f"{variant.file_stem(dataset)}.npy"
    if path.is_file():
        matrix = np.load(path)
        if matrix.shape[0] == len(reps):
            return matrix
    matrix = asyncio.run(_read_cache(variant, dataset, table, reps))
    npy_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix


async def _read_cache(variant: ColeVariant, dataset: str, table: NB201Table, reps: np.ndarray) -> np.ndarray:
    from colecache.cache.keys import cache_key
    from colecache.embedding.options import EmbedOptions
    from colecache.local import local_services
    from colecache.render import RenderOptions, render
    from colecache.specs import parse_specs

    # Canonical rendering, as studies use: every cell is read as its class representative's text.
    render_options = RenderOptions(
        primitives=variant.primitives, context=variant.context, dataset=dataset, canonical=True
    )
    options = EmbedOptions(pooling=variant.pooling, layer=variant.layer)
    async with local_services() as services:
        specs = parse_specs([table.arch[i] for i in reps], "nb201", 10**6)
        fingerprint = services.pipeline.readout(options).fingerprint
        rendered = [render(spec, render_options) for spec in specs]
        keys = [cache_key(fingerprint.id, r.renderer_version, r.code) for r in rendered]
        existing = await asyncio.to_thread(services.cache.durable.existing, keys)
        if len(existing) < len(set(keys)):
            raise LookupError(
                f"{variant.label()} ({dataset}): {len(set(keys)) - len(existing)} of {len(keys)} cells not cached; "
                f"precompute them first (colecache precompute --canonical --primitives {variant.primitives} "
                f"--context {variant.context} --dataset {dataset} --pooling {variant.pooling})"
            )
        outcome = await services.pipeline.embed(specs, render_options, options)
    if any(item.source == "computed" for item in outcome.items):
        raise RuntimeError("an embedding was computed instead of read from the cache")
    return np.stack([item.record.vector for item in outcome.items]).astype(np.float32)


# --- protocol -----------------------------------------------------------------------------------
def stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per cell: sort by accuracy, deal each run of k consecutive cells into the k folds at random."""
    order = np.argsort(y + rng.uniform(0, 1e-9, len(y)), kind="stable")
    fold = np.empty(len(y), dtype=int)
    for start in range(0, len(y), k):
        block = order[start : start + k]
        fold[block] = rng.permutation(k)[: len(block)]
    return fold


def stratified_sample(pool: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n cells of `pool`, one from each of n equal-count accuracy strata."""
    order = pool[np.argsort(y[pool], kind="stable")]
    edges = np.linspace(0, len(order), n + 1).astype(int)
    return np.asarray([order[rng.integers(lo, hi)] for lo, hi in itertools.pairwise(edges)])


@dataclass
class Entry:
    """One row of the comparison: a feature set under one surrogate configuration."""

    features: str  # 'cole:<variant>' | 'path' | 'onehot' | 'cole:<variant>+path'
    head: str  # label of the head
    config: SurrogateConfig
    datasets: tuple[str, ...] = DATASETS
    max_repeats: int | None = None  # run on the first repeats only (cheaper rows)
    group: str = "main"  # 'main' rows go in the main tables and the plot, 'variants' in the variant tables

    @property
    def label(self) -> str:
        return f"{self.features} | {self.head}"


def _split_features(features: str) -> tuple[str | None, tuple[str, ...]]:
    cole, struct = None, []
    for part in features.split("+"):
        if part.startswith("cole:"):
            cole = part[5:]
        else:
            struct.append(part)
    return cole, tuple(struct)


@dataclass
class Inputs:
    table: NB201Table
    reps: np.ndarray
    npy_dir: Path
    _cole: dict = field(default_factory=dict)
    _struct: dict = field(default_factory=dict)

    def cole(self, variant: str, dataset: str) -> np.ndarray:
        v = ColeVariant.parse(variant)
        key = v.file_stem(dataset)
        if key not in self._cole:
            self._cole[key] = load_cole(v, dataset, self.table, self.reps, self.npy_dir)
        return self._cole[key]

    def struct(self, kinds: tuple[str, ...]) -> np.ndarray | None:
        if not kinds:
            return None
        for kind in kinds:
            if kind not in self._struct:
                self._struct[kind] = structural(self.table, self.reps, kind)
        return np.concatenate([self._struct[k] for k in kinds], axis=1)

    def matrices(self, features: str, dataset: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        cole, kinds = _split_features(features)
        return (self.cole(cole, dataset) if cole else None), self.struct(kinds)


def run_protocol(
    inputs: Inputs,
    entries: list[Entry],
    datasets: tuple[str, ...],
    sizes: tuple[int, ...],
    folds: int,
    repeats: int | dict[str, int],
    seed: int = 0,
    progress=None,
) -> list[dict]:
    """Scores of every entry on every (dataset, repeat, fold, n); identical training cells across entries.

    `repeats` may differ per dataset; the splits of repeat r do not depend on which entries run.
    """
    rows = []
    for dataset in datasets:
        y_all = inputs.table.accuracy[dataset][inputs.reps]
        mine = [e for e in entries if dataset in e.datasets]
        data = {e.features: inputs.matrices(e.features, dataset) for e in mine}
        n_repeats = repeats[dataset] if isinstance(repeats, dict) else repeats
        for repeat in range(n_repeats):
            rng = np.random.default_rng([seed, repeat, DATASETS.index(dataset)])
            fold_of = stratified_folds(y_all, folds, rng)
            active = [e for e in mine if e.max_repeats is None or repeat < e.max_repeats]
            for k in range(folds):
                test = np.flatnonzero(fold_of == k)
                pool = np.flatnonzero(fold_of != k)
                for n in sizes:
                    train = stratified_sample(pool, y_all, n, rng)
                    for e in active:
                        cole, struct = data[e.features]
                        config = e.config.model_copy(update={"seed": 1000 * repeat + k})
                        started = time.perf_counter()
                        model = Surrogate(config).fit(
                            None if cole is None else cole[train],
                            None if struct is None else struct[train],
                            y_all[train],
                            reference_cole=cole,
                            reference_struct=struct,
                        )
                        fit_s = time.perf_counter() - started
                        mean, std = model.predict(
                            None if cole is None else cole[test], None if struct is None else struct[test]
                        )
                        truth = y_all[test]
                        rows.append(
                            {
                                "dataset": dataset,
                                "features": e.features,
                                "head": e.head,
                                "n": n,
                                "repeat": repeat,
                                "fold": k,
                                "tau": float(stats.kendalltau(mean, truth).statistic),
                                "rho": float(stats.spearmanr(mean, truth).statistic),
                                "fit_s": fit_s,
                                "std_min": float(std.min()),
                            }
                        )
                        if progress is not None:
                            progress()
    return rows


def summarise(rows: list[dict]) -> dict[tuple, dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["features"], r["head"], r["n"])].append(r)
    out = {}
    for key, rs in groups.items():
        tau = np.array([r["tau"] for r in rs])
        rho = np.array([r["rho"] for r in rs])
        half = 1.96 * tau.std(ddof=1) / np.sqrt(len(tau)) if len(tau) > 1 else float("nan")
        out[key] = {
            "tau": tau.mean(),
            "tau_ci": half,
            "rho": rho.mean(),
            "count": len(rs),
            "fit_s": float(np.mean([r["fit_s"] for r in rs])),
            "std_min": float(np.min([r["std_min"] for r in rs])),
        }
    return out


# --- what is compared ---------------------------------------------------------------------------
def head_configs(default: SurrogateConfig) -> dict[str, HeadConfig]:
    """Heads every main feature set runs under: the default, the same ensemble on the ranking loss alone,
    and the two heads with a posterior."""
    return {
        "default": default.head,
        "mlp_ranking": default.head.model_copy(update={"loss": "ranking"}),
        "bayesian_ridge": HeadConfig(kind="bayesian_ridge"),
        "gp": HeadConfig(kind="gp"),
    }


def default_features() -> str:
    """The default surrogate's feature set in this script's notation: `cole:<variant>[+structural...]`."""
    return "+".join([f"cole:{DEFAULT_COLE}", *SurrogateConfig().features.structural])


def build_entries(
    suite: str, renders: tuple[str, ...], poolings: tuple[str, ...], layers: tuple[int, ...], variant_repeats: int
) -> list[Entry]:
    default = SurrogateConfig()
    heads = head_configs(default)
    cole_only = default.model_copy(update={"features": default.features.model_copy(update={"structural": ()})})
    structural_only = FeatureConfig(cole=False, reduce="none")
    entries = []
    for head, hc in heads.items():
        if default.features.structural:
            entries.append(Entry(default_features(), head, default.model_copy(update={"head": hc})))
        entries.append(Entry(f"cole:{DEFAULT_COLE}", head, cole_only.model_copy(update={"head": hc})))
        for kinds in (("path",), ("onehot",)):
            fc = structural_only.model_copy(update={"structural": kinds})
            entries.append(Entry("+".join(kinds), head, SurrogateConfig(features=fc, head=hc)))
    fc = structural_only.model_copy(update={"structural": ("path", "onehot")})
    entries.append(Entry("path+onehot", "default", SurrogateConfig(features=fc, head=default.head)))
    if suite == "variants":  # the variant rows only, with COLE's default read-out as the reference row
        entries = [Entry(f"cole:{DEFAULT_COLE}", "default", cole_only, ("cifar100",), variant_repeats)]
    if suite in ("full", "variants"):
        # Every render variant, pooling and layer, COLE alone under the default reduction and head (CIFAR-100).
        variants = [f"{r}/{p}" for r in renders for p in poolings]
        variants += [f"{r}/mean@L5" for r in renders]
        variants += [f"exclude_helper/none/mean@L{layer}" for layer in layers]
        variants = list(dict.fromkeys(variants))
        for variant in variants:
            if variant != DEFAULT_COLE:
                entries.append(
                    Entry(f"cole:{variant}", "default", cole_only, ("cifar100",), variant_repeats, "variants")
                )
    return entries


# --- reporting ----------------------------------------------------------------------------------
def _fmt(s: dict | None) -> str:
    if s is None:
        return "–"
    return f"{s['tau']:.3f} ± {s['tau_ci']:.3f} / {s['rho']:.3f}"


def _row(summary, dataset, e: Entry, sizes, with_head: bool = True) -> str:
    cells = [_fmt(summary.get((dataset, e.features, e.head, n))) for n in sizes]
    last = summary.get((dataset, e.features, e.head, max(sizes)))
    fit = f"{last['fit_s']:.2f}" if last else "–"
    count = last["count"] if last else 0
    head = f" {e.head} |" if with_head else ""
    return f"| {e.features} |{head} " + " | ".join(cells) + f" | {fit} | {count} |"


def write_markdown(path: Path, summary, entries, datasets, sizes, header: list[str], notes: list[str]) -> None:
    lines = ["# Surrogate ranking on NAS-Bench-201 (offline evaluation)", "", *header, ""]
    lines += [
        "Cells: one per isomorphism class (6,466). Per repeat: 10 folds stratified by test accuracy; test = one fold,",
        "training = n cells sampled (stratified) from the other nine. Cell values: **Kendall tau ± 95% CI / Spearman**",
        "**rho**, mean over folds × repeats (the CI treats the folds as independent: a rough guide). All feature sets",
        "share the same training cells. COLE = frozen all-MiniLM-L6-v2 on CPU, variant named",
        "`primitives/context/pooling[@L<hidden-state index>]`, reduction fitted on the unlabelled vectors of all 6,466",
        "cells; `path` = NB201 path encoding (84), `onehot` = one-hot op per edge (30). Heads: `default` =",
        "`SurrogateConfig().head`, `mlp_ranking` = the same ensemble trained on the ranking loss alone,",
        "`bayesian_ridge`, `gp` (Matern 5/2).",
        "`runs` = folds × repeats behind each number; `fit s` = mean fit time at the largest n. `nan`: in at least one",
        "fold the head predicted one constant for every test cell (Kendall tau undefined).",
        "",
        *notes,
    ]
    for dataset in datasets:
        mine = [e for e in entries if dataset in e.datasets]
        main = [e for e in mine if e.group == "main"]
        rest = [e for e in mine if e.group != "main"]
        lines += ["", f"## {DATASET_TITLES[dataset]}", ""]
        lines += ["| features | head | " + " | ".join(f"n={n}" for n in sizes) + " | fit s | runs |"]
        lines += ["|---|---|" + "---|" * len(sizes) + "---|---|"]
        order = list(head_configs(SurrogateConfig()))
        for e in sorted(main, key=lambda e: order.index(e.head)):
            lines.append(_row(summary, dataset, e, sizes))
        if rest:
            lines += ["", f"COLE alone, every render variant / pooling / layer ({DATASET_TITLES[dataset]}, default", ""]
            lines[-2] += " reduction and head):"
            lines += ["| COLE variant | " + " | ".join(f"n={n}" for n in sizes) + " | fit s | runs |"]
            lines += ["|---|" + "---|" * len(sizes) + "---|---|"]
            cole_default = next((e for e in main if e.features == f"cole:{DEFAULT_COLE}" and e.head == "default"), None)
            for e in ([cole_default] if cole_default else []) + rest:
                lines.append(_row(summary, dataset, e, sizes, with_head=False))
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, summary, datasets, sizes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), squeeze=False)
    styles = {"default": "-", "gp": ":"}
    colours = {
        default_features(): ("tab:blue", "COLE+path (default)"),
        f"cole:{DEFAULT_COLE}": ("tab:purple", "COLE alone"),
        "path": ("tab:orange", "path"),
        "onehot": ("tab:green", "one-hot"),
    }
    for ax, dataset in zip(axes[0], datasets):
        for features, (colour, name) in colours.items():
            for head, style in styles.items():
                points = [(n, summary.get((dataset, features, head, n))) for n in sizes]
                points = [(n, s) for n, s in points if s is not None]
                if not points:
                    continue
                ns = [n for n, _ in points]
                tau = np.array([s["tau"] for _, s in points])
                ci = np.array([s["tau_ci"] for _, s in points])
                ax.plot(ns, tau, style, color=colour, marker="o", ms=3, label=f"{name}, {head} head")
                if head == "default":
                    ax.fill_between(ns, tau - ci, tau + ci, color=colour, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(list(sizes), [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training cells")
        ax.set_ylabel("Kendall tau on the held-out fold")
        ax.set_title(DATASET_TITLES[dataset])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    suite: Annotated[
        str, typer.Option(help="`main` (feature sets x heads), `full` (+ COLE variants) or `variants` (only those).")
    ] = "full",
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="Repeat; default all three.")] = None,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Training sizes; default 14 55 220 879.")] = None,
    folds: Annotated[int, typer.Option()] = 10,
    repeats: Annotated[int, typer.Option(help="Repeats of the 10-fold split on CIFAR-100 (the headline).")] = 3,
    other_repeats: Annotated[int, typer.Option(help="Repeats on CIFAR-10 and ImageNet16-120.")] = 1,
    variant_repeats: Annotated[int, typer.Option(help="Repeats for the render-variant rows.")] = 1,
    render_modes: Annotated[list[str] | None, typer.Option("--render", help="Render variants for `full`.")] = None,
    poolings: Annotated[list[str] | None, typer.Option("--pooling", help="Poolings for `full`.")] = None,
    layers: Annotated[list[int] | None, typer.Option("--layer", help="Mean-pooled hidden states for `full`.")] = None,
    npy_dir: Annotated[Path, typer.Option(help="Where vectors read from the cache are kept.")] = DEFAULT_NPY,
    out: Annotated[Path, typer.Option(help="Markdown output; the plot goes beside it.")] = RESULTS
    / "surrogate_eval.md",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Rank held-out NB201 cells with COLE and structural surrogates; write a markdown table and a plot."""
    import warnings

    import torch
    from tqdm import tqdm

    warnings.filterwarnings("ignore", module="sklearn")
    torch.set_num_threads(threads)
    started = time.time()
    command = "python benchmarks/surrogate_eval.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    datasets_t = tuple(datasets or DATASETS)
    sizes_t = tuple(sizes or SIZES)
    reps_of = {d: repeats if d == "cifar100" else other_repeats for d in datasets_t}
    table = load_nb201()
    inputs = Inputs(table, representatives(table), npy_dir)
    entries = build_entries(
        suite,
        tuple(render_modes or RENDERS),
        tuple(poolings or POOLINGS),
        tuple(layers or (2, 3, 4, 5)),
        variant_repeats,
    )
    notes = []
    usable = []
    for e in entries:  # drop COLE variants that are not cached, and say so
        try:
            for d in e.datasets:
                if d in datasets_t:
                    inputs.matrices(e.features, d)
            usable.append(e)
        except LookupError as exc:
            notes.append(f"- skipped {e.features}: {exc}")
    total = sum(
        min(reps_of[d], e.max_repeats or reps_of[d]) * folds * len(sizes_t)
        for e in usable
        for d in datasets_t
        if d in e.datasets
    )
    with tqdm(total=total, unit="fit", dynamic_ncols=True) as bar:
        rows = run_protocol(inputs, usable, datasets_t, sizes_t, folds, reps_of, seed, progress=bar.update)
    rows_path = npy_dir.parent / "surrogate_eval_rows.jsonl"  # raw scores, to re-summarise without refitting
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = summarise(rows)
    wall = time.time() - started
    cpu = platform.processor() or platform.machine()
    header = [
        f"Command: `COLECACHE_DATA_DIR=<cache dir> {command}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({cpu}), no GPU, torch threads {threads}. "
        f"Date: {_dt.date.today().isoformat()}. Wall time: {wall / 60:.1f} min. "
        f"{folds} folds × repeats {reps_of} (render variants: {variant_repeats}), seed {seed}.",
        "",
        f"Default surrogate: `SurrogateConfig()` = `{SurrogateConfig().model_dump_json()}`, "
        f"on COLE `{DEFAULT_COLE}` (features `{default_features()}`).",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out, summary, usable, datasets_t, sizes_t, header, notes)
    if suite != "variants":
        write_plot(out.with_suffix(".png"), summary, datasets_t, sizes_t)
    typer.echo(f"wrote {out} (and its plot) in {wall / 60:.1f} min")


if __name__ == "__main__":
    app()
