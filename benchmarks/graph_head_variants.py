"""Graph-head variants on NB201 tuning draws: which head fields are worth a full issue-10 run.

Each variant is a name and head fields (JSON) laid over the reference, the default NB201 graph study before the
proxies are cached as of 2026-12-07 (GIN on the op graph, directed messages, bootstrap members, no other block;
Bayesian-bootstrap members since 2026-12-08 are the `bayesian` variant). Every variant is
fitted on the same draws as the reference (draw seed 7 by default: tuning draws, not surrogate_targets.md's
reporting draws), test = every other isomorphism class, and compared as a paired difference of Kendall tau, raw
and after neighbourhood smoothing (surrogate.smoothing, as a study applies it).

    python benchmarks/graph_head_variants.py --variant 'members10={"members": 10}' \\
        --variant 'hidden64={"graph_hidden": 64}' --dataset cifar100 --draws 10

appends one row per (dataset, n, draw, variant) to benchmarks/out/graph_head_variants_rows.jsonl (resumed; a
variant's rows are keyed by its fields, so renaming one does not refit it) and writes
benchmarks/results/graph_head_variants.md.
"""

from __future__ import annotations

import datetime as _dt
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
from colecache.benchdata import DATASETS, load_nb201
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache.surrogate.smoothing import smooth
from scipy import stats
from surrogate_eval import DATASET_TITLES, GIN_DIRECTED, representatives
from surrogate_targets import class_graph, op_graphs

HERE = Path(__file__).resolve().parent
REFERENCE = "reference"

app = typer.Typer(add_completion=False)


def parse_variant(text: str) -> tuple[str, dict]:
    """`name={"field": value}` -> (name, fields); the fields must be valid HeadConfig fields."""
    name, _, fields = text.partition("=")
    if not name or not fields:
        raise typer.BadParameter(f"{text!r}: expected name={{json head fields}}")
    options = json.loads(fields)
    HeadConfig(kind="gin_ensemble", **GIN_DIRECTED, **options)  # raises on an unknown field or a bad value
    return name, options


def head_for(options: dict) -> HeadConfig:
    return HeadConfig(kind="gin_ensemble", **{**GIN_DIRECTED, **options})


def fit_predict(head: HeadConfig, seed: int, train: np.ndarray, y: np.ndarray, graphs: list) -> np.ndarray:
    """Predicted means (n_classes,) of the graph study with `head`, fitted on the classes `train`."""
    features = FeatureConfig(cole=False, reduce="none", structural=(), proxies=())
    model = Surrogate(SurrogateConfig(features=features, head=head, seed=seed))
    model.fit(None, None, y[train], graphs=[graphs[i] for i in train])
    mean, _ = model.predict(None, None, None, graphs)
    return mean


def paired(rows: list[dict], dataset: str, n: int, name: str, smoothed: bool) -> tuple[float, float, float, int]:
    """(mean tau, mean paired gain over the reference, its 95% CI half-width, draws) of one variant."""
    key = "tau_smooth" if smoothed else "tau"
    mine = {r["draw"]: r[key] for r in rows if (r["dataset"], r["n"], r["variant"]) == (dataset, n, name)}
    ref = {r["draw"]: r[key] for r in rows if (r["dataset"], r["n"], r["variant"]) == (dataset, n, REFERENCE)}
    draws = sorted(set(mine) & set(ref))
    gains = np.asarray([mine[d] - ref[d] for d in draws])
    half = 1.96 * gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("nan")
    return float(np.mean(list(mine.values()))), float(gains.mean()), float(half), len(draws)


@app.command()
def main(
    variants: Annotated[list[str], typer.Option("--variant", help='name={"head field": value}; repeat.')],
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="Repeat; default cifar100.")] = None,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Training sizes; default 128 256.")] = None,
    draws: Annotated[int, typer.Option(help="Training draws per (dataset, n).")] = 10,
    seed: Annotated[int, typer.Option(help="Draw seed (7: tuning draws; 0 is surrogate_targets.md's).")] = 7,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    log: Annotated[Path, typer.Option(help="Rows log (resumed).")] = HERE / "out" / "graph_head_variants_rows.jsonl",
    out: Annotated[Path, typer.Option(help="Markdown output.")] = HERE / "results" / "graph_head_variants.md",
) -> None:
    """Paired Kendall tau gains of graph-head variants over the default NB201 graph head, on tuning draws."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(threads)
    started = time.time()
    command = "python benchmarks/graph_head_variants.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    chosen = [(REFERENCE, {}), *map(parse_variant, variants)]
    datasets_t, sizes_t = tuple(datasets or ("cifar100",)), tuple(sizes or (128, 256))
    table = load_nb201()
    reps = representatives(table)
    neighbours = class_graph(table, reps)
    graphs = op_graphs(table, reps)
    beta = SurrogateConfig().smoothing
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["dataset"], r["n"], r["draw"], r["seed"], json.dumps(r["fields"], sort_keys=True))] = r
    rows = []
    total = len(datasets_t) * len(sizes_t) * draws * len(chosen)
    with log.open("a") as sink, tqdm(total=total, unit="fit", dynamic_ncols=True) as bar:
        for dataset in datasets_t:
            y = table.accuracy[dataset][reps]
            for n in sizes_t:
                for draw in range(draws):
                    rng = np.random.default_rng([seed, draw, n, DATASETS.index(dataset)])
                    train = rng.choice(len(y), size=n, replace=False)
                    test = np.setdiff1d(np.arange(len(y)), train)
                    for name, fields in chosen:
                        key = (dataset, n, draw, seed, json.dumps(fields, sort_keys=True))
                        if key not in done:
                            t0 = time.perf_counter()
                            raw = fit_predict(head_for(fields), draw, train, y, graphs)
                            fit_s = time.perf_counter() - t0
                            smoothed = smooth(raw, neighbours.neighbour_mean(raw), beta)
                            done[key] = {
                                "dataset": dataset,
                                "n": n,
                                "draw": draw,
                                "seed": seed,
                                "fields": fields,
                                "tau": float(stats.kendalltau(raw[test], y[test]).statistic),
                                "tau_smooth": float(stats.kendalltau(smoothed[test], y[test]).statistic),
                                "fit_s": fit_s,
                            }
                            sink.write(json.dumps(done[key]) + "\n")
                            sink.flush()
                        rows.append({**done[key], "variant": name})
                        bar.update(1)
    wall = time.time() - started
    lines = [
        "# Graph-head variants on NB201 tuning draws",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, torch threads "
        f"{threads}. Date: {_dt.date.today().isoformat()}. Wall time: {wall / 60:.1f} min (fits only when rows "
        "were resumed).",
        "",
        f"Protocol: {draws} draws (seed {seed}) per (dataset, n) of n of the 6,466 NB201 isomorphism classes, test = "
        "every other class. Reference: the default NB201 graph study before the proxies are cached (GIN, 5 "
        "members on bootstrap resamples, 3 layers of 32, directed messages, MLP 2 x 64, MSE + 20 x ranking loss, "
        f"300 epochs). Cells: mean Kendall tau, then the paired gain over the reference [95% CI half-width]; "
        f"`smoothed`: after neighbourhood smoothing {beta} (as a study with the space as reference).",
        "",
        "| dataset | n | variant | head fields | tau | gain | tau smoothed | gain smoothed | fit s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for dataset in datasets_t:
        for n in sizes_t:
            for name, fields in chosen:
                tau, gain, half, _ = paired(rows, dataset, n, name, smoothed=False)
                tau_s, gain_s, half_s, _ = paired(rows, dataset, n, name, smoothed=True)
                mine = [r for r in rows if (r["dataset"], r["n"], r["variant"]) == (dataset, n, name)]
                fit_s = np.mean([r["fit_s"] for r in mine])
                cells = ("–", "–")
                if name != REFERENCE:
                    cells = (f"{gain:+.4f} [±{half:.4f}]", f"{gain_s:+.4f} [±{half_s:.4f}]")
                lines.append(
                    f"| {DATASET_TITLES[dataset]} | {n} | {name} | `{json.dumps(fields)}` | {tau:.4f} | {cells[0]} | "
                    f"{tau_s:.4f} | {cells[1]} | {fit_s:.1f} |"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    typer.echo(f"wrote {out} in {wall / 60:.1f} min")


if __name__ == "__main__":
    app()
