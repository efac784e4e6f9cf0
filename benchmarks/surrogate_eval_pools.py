"""Offline surrogate evaluation beyond NB201: NAS-Bench-101 and DARTS / NAS-Bench-301 (the protocol of
`surrogate_eval.py`, on NASLib's subsets).

Data: NASLib's NAS-Bench-Suite-Zero subsets under `$COLECACHE_NB201_DATA/extra_naslib_zc_subsets/`
(500 NB101 cells with 108-epoch validation accuracy; 725 DARTS genotypes with the NB301 surrogate's
accuracy), each with NASLib's zero-cost proxy scores. Per fold (20 by default), n architectures are
drawn at random and every other architecture of the subset is the test set; Kendall tau and
Spearman rho on the test set, mean ± 95% CI over folds. All feature sets see the same training
architectures (paired), under the same heads. Feature sets:

- `cole`: the default study's COLE vector (canonical `exclude_helper`/`none` code, mean-pooled
  hidden state 5 of the frozen model), PCA fitted on the unlabelled vectors of the whole subset
  (as a study does with a whole-space reference);
- `adjacency`, `path`: the space's structural encodings;
- `zc`: NASLib's zero-cost proxies (flops, params, snip, jacov, grad_norm, ...), sign-log
  transformed and standardised over the subset;
- sums of those (`cole+path`, `cole+zc`, ...);
- `none`: no block, for the graph head only (`--gin`: `gin_ensemble` reads each architecture's op graph,
  `SearchSpace.op_graph`, with the feature set's blocks joined at its readout).

COLE vectors are computed through the service's own pipeline and cache (COLECACHE_DATA_DIR) when
missing, and kept as .npy under benchmarks/out/embeddings.

    python benchmarks/surrogate_eval_pools.py --space nb101 --space darts

writes benchmarks/results/surrogate_eval_pools.md and .png.
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
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache_client.benchmarks import NaslibPool, read_naslib_pool
from colecache_client.spaces import get_space
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from surrogate_eval import GIN2, GIN_BAYES, GIN_DIRECTED, summarise

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_NPY = HERE / "out" / "embeddings"
SIZES = (16, 32, 64, 128, 256)
FEATURES = ("cole", "adjacency", "path", "zc", "cole+path", "cole+zc")
TITLES = {
    "nb101": "NAS-Bench-101 (NASLib's 500 cells = 292 isomorphism classes, values averaged; CIFAR-10 validation "
    "accuracy at 108 epochs; at n=256 only 36 test architectures remain)",
    "darts": "DARTS / NAS-Bench-301 (725 genotypes, NB301 surrogate accuracy)",
}
PUBLISHED = {
    "nb101": {128: 0.746, 256: 0.781},
    "darts": {128: 0.784, 256: 0.816},
}
"""Best published predictors (GIN / FLAN family) on the same spaces, larger test sets than ours."""


# --- inputs -------------------------------------------------------------------------------------------
def cole_vectors(pool: NaslibPool, npy_dir: Path) -> np.ndarray:
    """The default study's COLE vectors for the pool, from .npy or through the service's pipeline."""
    from colecache.studies.defaults import STUDY_EMBEDDER, STUDY_RENDER

    path = npy_dir / f"{pool.space}__exclude_helper__none__mean_L5__canonical.npy"
    if path.is_file():
        matrix = np.load(path)
        if matrix.shape[0] == len(pool.archs):
            return matrix
    matrix = asyncio.run(_embed(pool, STUDY_RENDER, STUDY_EMBEDDER))
    npy_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix


async def _embed(pool: NaslibPool, render_options, embed_options) -> np.ndarray:
    from colecache.local import local_services
    from colecache.specs import parse_specs

    async with local_services() as services:
        specs = parse_specs(pool.archs, pool.space, 10**6)
        vectors = []
        for start in range(0, len(specs), 256):
            outcome = await services.pipeline.embed(specs[start : start + 256], render_options, embed_options)
            vectors += [item.record.vector for item in outcome.items]
            typer.echo(f"  {pool.space}: {len(vectors)}/{len(specs)} embedded", err=True)
    return np.stack(vectors).astype(np.float32)


def zc_matrix(pool: NaslibPool) -> np.ndarray:
    """Proxies as columns: sign(x)·log(1+|x|), then z-scored over the pool (no labels used)."""
    columns = []
    for values in pool.proxies.values():
        x = np.asarray(values, dtype=np.float64)
        x = np.where(np.isfinite(x), x, np.nanmedian(x))
        x = np.sign(x) * np.log1p(np.abs(x))
        columns.append((x - x.mean()) / (x.std() or 1.0))
    return np.stack(columns, axis=1)


def blocks(pool: NaslibPool, npy_dir: Path) -> dict[str, np.ndarray]:
    space = get_space(pool.space)
    archs = [space.parse(a) for a in pool.archs]
    out = {"cole": cole_vectors(pool, npy_dir), "zc": zc_matrix(pool)}
    for kind in ("adjacency", "path"):
        out[kind] = np.asarray([space.encode(a, kind) for a in archs], dtype=np.float32)
    out["graphs"] = [space.op_graph(a) for a in archs]
    return out


def config_for(features: str, head: HeadConfig) -> SurrogateConfig:
    """The default study surrogate with `features`' COLE block switched on or off (structural = the rest)."""
    default = SurrogateConfig()
    parts = [p for p in features.split("+") if p != "none"]
    cole = "cole" in parts
    fc = default.features.model_copy(update={"cole": cole, "structural": tuple(p for p in parts if p != "cole")})
    if not cole:
        fc = FeatureConfig(cole=False, reduce="none", structural=fc.structural)
    return SurrogateConfig(features=fc, head=head)


def split(features: str, data: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    parts = features.split("+")
    rest = [data[p] for p in parts if p not in ("cole", "none")]
    return (data["cole"] if "cole" in parts else None), (np.concatenate(rest, axis=1) if rest else None)


# --- protocol -----------------------------------------------------------------------------------------
def run_space(
    space: str, data, y, features, heads, sizes, folds, seed, progress, log: Path | None = None, gin_features=None
) -> list[dict]:
    """Every (fold, n, feature set, head) fit (graph heads only on `gin_features`, default all); rows already in
    `log` (a JSON-lines file) are reused, new ones appended as they finish, so a stopped run resumes where it was."""
    done = {}
    if log is not None and log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["dataset"], r["features"], r["head"], r["n"], r["fold"])] = r
    rows = []
    for fold in range(folds):
        rng = np.random.default_rng([seed, fold, len(y)])
        order = rng.permutation(len(y))
        for n in sizes:
            train, test = order[:n], order[n:]
            for feature in features:
                cole, struct = split(feature, data)
                for head_name, head in heads.items():
                    graph_head = head.kind == "gin_ensemble"
                    if feature == "none" and not graph_head:
                        continue  # nothing to read without a graph
                    if graph_head and gin_features is not None and feature not in gin_features:
                        continue
                    if (space, feature, head_name, n, fold) in done:
                        rows.append(done[(space, feature, head_name, n, fold)])
                        progress()
                        continue
                    config = config_for(feature, head).model_copy(update={"seed": fold})
                    started = time.perf_counter()
                    model = Surrogate(config).fit(
                        None if cole is None else cole[train],
                        None if struct is None else struct[train],
                        y[train],
                        reference_cole=cole,
                        reference_struct=struct,
                        graphs=[data["graphs"][i] for i in train] if graph_head else None,
                    )
                    fit_s = time.perf_counter() - started
                    mean, std = model.predict(
                        None if cole is None else cole[test],
                        None if struct is None else struct[test],
                        graphs=[data["graphs"][i] for i in test] if graph_head else None,
                    )
                    rows.append(
                        {
                            "dataset": space,
                            "features": feature,
                            "head": head_name,
                            "n": n,
                            "repeat": 0,
                            "fold": fold,
                            "tau": float(stats.kendalltau(mean, y[test]).statistic),
                            "rho": float(stats.spearmanr(mean, y[test]).statistic),
                            "fit_s": fit_s,
                            "std_min": float(std.min()),
                        }
                    )
                    if log is not None:
                        with log.open("a") as handle:
                            handle.write(json.dumps(rows[-1]) + "\n")
                    progress()
    return rows


# --- reporting ----------------------------------------------------------------------------------------
def write_markdown(path: Path, summary, spaces, features, heads, sizes, header: list[str]) -> None:
    lines = ["# Surrogate ranking on NAS-Bench-101 and DARTS / NAS-Bench-301 (offline evaluation)", "", *header, ""]
    lines += [
        "Per fold: n architectures drawn at random from the subset, test = all the others. Cells: **Kendall tau ± 95%",
        "CI / Spearman rho** over folds. Features: `cole` = default study COLE vector (canonical exclude_helper/none",
        "code, all-MiniLM-L6-v2 mean-pooled hidden state 5, PCA-64 fitted on the unlabelled subset); `adjacency`,",
        "`path` = the space's structural encodings; `zc` = NASLib's zero-cost proxies for these architectures",
        "(sign-log, standardised). Heads: `default` = `SurrogateConfig().head` (MLP ensemble, MSE + ranking loss),",
        "`gp` = Matern 5/2 GP (with `--gp`), `gin` = `gin_ensemble` on the op graphs as a study gets it (with `--gin`;",
        "bootstrap members, undirected messages; `none` = graph only), `gin2` = its second form (with `--gin2`:",
        "every member on every observation, directed messages), `gindir` = directed messages only (with `--gindir`:",
        "bootstrap members kept), `ginbayes` = directed messages, Bayesian-bootstrap members (with `--ginbayes`).",
        "Published reference (best of GIN / FLAN-family",
        "predictors, test sets of thousands of architectures, not ours): "
        + "; ".join(f"{s}: " + ", ".join(f"tau {t} at n={n}" for n, t in PUBLISHED[s].items()) for s in spaces)
        + ".",
    ]
    for space in spaces:
        lines += ["", f"## {TITLES.get(space, space)}", ""]
        lines += ["| features | head | " + " | ".join(f"n={n}" for n in sizes) + " | fit s | folds |"]
        lines += ["|---|---|" + "---|" * len(sizes) + "---|---|"]
        for head in heads:
            for feature in features:
                cells = []
                for n in sizes:
                    s = summary.get((space, feature, head, n))
                    cells.append("–" if s is None else f"{s['tau']:.3f} ± {s['tau_ci']:.3f} / {s['rho']:.3f}")
                if not any((space, feature, head, n) in summary for n in sizes):
                    continue  # a combination this run did not fit (`none` under the MLP, `--gin-features`)
                last = summary.get((space, feature, head, max(sizes)))
                fit = f"{last['fit_s']:.2f}" if last else "–"
                lines.append(
                    f"| {feature} | {head} | " + " | ".join(cells) + f" | {fit} | {last['count'] if last else 0} |"
                )
        ref = PUBLISHED.get(space, {})
        lines.append("| published (GIN/FLAN) | – | " + " | ".join(str(ref.get(n, "–")) for n in sizes) + " | – | – |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, summary, spaces, sizes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {
        "cole": "tab:purple",
        "path": "tab:orange",
        "adjacency": "tab:green",
        "zc": "tab:brown",
        "cole+path": "tab:blue",
        "cole+zc": "tab:red",
        "cole+path+zc": "black",
    }
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.6 * len(spaces), 4.4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        for (feature, colour), (head, style) in itertools.product(
            [*shown.items(), ("none", "tab:cyan")],
            (("default", "-o"), ("gin", "--s"), ("gin2", ":^"), ("gindir", "-.v"), ("ginbayes", ":D")),
        ):
            points = [(n, summary.get((space, feature, head, n))) for n in sizes]
            points = [(n, s) for n, s in points if s is not None]
            if not points:
                continue
            ns = [n for n, _ in points]
            tau = np.array([s["tau"] for _, s in points])
            ci = np.array([s["tau_ci"] for _, s in points])
            label = feature if head == "default" else f"{head}: {'graph only' if feature == 'none' else feature}"
            ax.plot(ns, tau, style, ms=3, color=colour, label=label)
            ax.fill_between(ns, tau - ci, tau + ci, color=colour, alpha=0.12)
        for n, t in PUBLISHED.get(space, {}).items():
            ax.scatter(
                [n], [t], marker="*", s=90, color="grey", zorder=5, label="published GIN/FLAN" if n == 128 else None
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes), [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training architectures")
        ax.set_ylabel("Kendall tau on held-out architectures")
        ax.set_title(space)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    spaces: Annotated[list[str] | None, typer.Option("--space", help="nb101 and/or darts.")] = None,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Training sizes; default 16 32 64 128 256.")] = None,
    folds: Annotated[int, typer.Option()] = 20,
    features: Annotated[list[str] | None, typer.Option("--features", help="Feature sets; default all.")] = None,
    gp: Annotated[bool, typer.Option(help="Also run every feature set under the GP head.")] = True,
    gin: Annotated[bool, typer.Option(help="Also run every feature set under the GIN head (op graphs).")] = False,
    gin2: Annotated[bool, typer.Option(help="... and under its second form (no bootstrap, directed).")] = False,
    gindir: Annotated[bool, typer.Option(help="... and with directed messages only (bootstrap kept).")] = False,
    ginbayes: Annotated[bool, typer.Option(help="... and directed with Bayesian-bootstrap members.")] = False,
    gin_features: Annotated[
        list[str] | None, typer.Option("--gin-features", help="Feature sets the GIN heads take; default all.")
    ] = None,
    npy_dir: Annotated[Path, typer.Option()] = DEFAULT_NPY,
    out: Annotated[Path, typer.Option()] = RESULTS / "surrogate_eval_pools.md",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    report_only: Annotated[bool, typer.Option(help="Only (re)write the table from the raw log.")] = False,
) -> None:
    """Rank held-out NB101 / DARTS architectures with COLE, structural and zero-cost-proxy surrogates."""
    import warnings

    import torch
    from tqdm import tqdm

    warnings.filterwarnings("ignore", module="sklearn")
    torch.set_num_threads(threads)
    started = time.time()
    command = "python benchmarks/surrogate_eval_pools.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    spaces_t = tuple(spaces or ("nb101", "darts"))
    sizes_t = tuple(sizes or SIZES)
    features_t = tuple(features or FEATURES)
    heads = {"default": SurrogateConfig().head}
    if gp:
        heads["gp"] = HeadConfig(kind="gp")
    if gin:
        heads["gin"] = HeadConfig(kind="gin_ensemble")
    if gin2:
        heads["gin2"] = HeadConfig(kind="gin_ensemble", **GIN2)
    if gindir:
        heads["gindir"] = HeadConfig(kind="gin_ensemble", **GIN_DIRECTED)
    if ginbayes:
        heads["ginbayes"] = HeadConfig(kind="gin_ensemble", **GIN_BAYES)
    graph_features = tuple(gin_features) if gin_features else features_t
    inputs = {}
    for space in spaces_t:
        pool = read_naslib_pool(space)
        inputs[space] = (blocks(pool, npy_dir), np.asarray(pool.accuracy, dtype=np.float64))
    fits = sum(
        1
        for f in features_t
        for h in heads.values()
        if (f in graph_features if h.kind == "gin_ensemble" else f != "none")
    )
    total = len(spaces_t) * folds * len(sizes_t) * fits
    rows = []
    raw = npy_dir.parent / "surrogate_eval_pools_rows.jsonl"  # raw scores, appended per fit (resumable)
    raw.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=total, unit="fit", dynamic_ncols=True) as bar:
        for space in spaces_t:
            data, y = inputs[space]
            rows += run_space(space, data, y, features_t, heads, sizes_t, folds, seed, bar.update, raw, graph_features)
    if report_only:  # every space in the log, e.g. after separate runs per space
        rows = [json.loads(line) for line in raw.read_text().splitlines()]
        rows = [r for r in rows if r["features"] in features_t and r["head"] in heads]
    summary = summarise(rows)
    wall = time.time() - started
    header = [
        f"Command: `COLECACHE_DATA_DIR=<cache dir> {command}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, torch threads "
        f"{threads}. Date: {_dt.date.today().isoformat()}. Wall time: {wall / 60:.1f} min. {folds} folds, seed {seed}.",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out, summary, spaces_t, features_t, heads, sizes_t, header)
    write_plot(out.with_suffix(".png"), summary, spaces_t, sizes_t)
    typer.echo(f"wrote {out} and its plot in {wall / 60:.1f} min")


if __name__ == "__main__":
    app()
