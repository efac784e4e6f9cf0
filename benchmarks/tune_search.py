"""Tune BANANAS on seeds that are never reported (1000+), in-process (LocalStudy: same algorithm and
surrogate code as through the server, without HTTP), on CIFAR-100.

    python benchmarks/tune_search.py --embeddings /path/to/cells.npz --out benchmarks/results/search_tuning.md

`--embeddings` is an .npz with `arch` (cell strings) and `vectors` (COLE vectors, same order), e.g.
written by `python benchmarks/tune_search.py export --url ...` from a server whose cache holds
the whole space; without it only structural features are tuned. `--from-cache` instead reads the
study's COLE vectors, the zero-cost proxies (when the surrogate config uses them) and the one-edit class
graph (for neighbourhood smoothing) from the service's cache (`COLECACHE_DATA_DIR`), as
benchmarks/surrogate_targets.py does: the default study of a precomputed, scored server, in-process.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import searchers
from colecache.surrogate import SurrogateConfig
from colecache_client import Bananas, Client
from colecache_client.benchmarks import NB201Oracle
from colecache_client.spaces import get_space

app = typer.Typer(help=__doc__, no_args_is_help=True)
SPACE = get_space("nb201")


@app.command()
def export(
    url: Annotated[str, typer.Option(help="A colecache server whose cache holds the space.")],
    study: Annotated[Path, typer.Option(help="JSON with the study's render and embedder options.")],
    out: Annotated[Path, typer.Option(help="Where to write the .npz.")] = Path("cells.npz"),
) -> None:
    """Fetch every cell's COLE vector through /embed (cache hits) into an .npz."""
    options = json.loads(study.read_text())
    cells = [c.to_string() for c in SPACE.all_cells()]
    with Client(url, timeout=3600) as client:
        result = client.embed(cells, render=options.get("render"), embedder=options.get("embedder"))
    counts = result.counts
    typer.echo(f"sources: {counts}")
    np.savez_compressed(out, arch=np.array(cells), vectors=result.as_array())


def cache_inputs(config: SurrogateConfig, dataset: str):
    """(canonical form -> COLE vector, the space's COLE vectors, canonical form -> proxies or None, class graph,
    one cell string per class in the graph's order) for the study options STUDY_RENDER / STUDY_EMBEDDER, read
    from the service's cache (kept as .npy)."""
    from colecache.benchdata import load_nb201
    from surrogate_eval import DEFAULT_COLE, DEFAULT_NPY, Inputs, representatives
    from surrogate_targets import cached_proxies, class_graph

    table = load_nb201()
    reps = representatives(table)
    cole = Inputs(table, reps, DEFAULT_NPY).cole(DEFAULT_COLE, dataset)
    graph = class_graph(table, reps)  # keys: canonical forms, in `reps` order
    vectors = dict(zip(graph.keys, cole))
    proxies = None
    if config.features.proxies:
        zc = cached_proxies(table, reps, DEFAULT_NPY)
        if zc is None:
            raise typer.BadParameter("the space's proxies are not all cached: colecache proxies --space nb201")
        proxies = dict(zip(graph.keys, zc))
    return vectors, cole, proxies, graph, [table.arch[i] for i in reps]


def evals_to(values: list[float], target: float, budget: int) -> int:
    best = np.maximum.accumulate(np.asarray(values))
    hits = np.nonzero(best >= target)[0]
    return int(hits[0]) + 1 if len(hits) else budget + 1


@app.command()
def grid(
    surrogate: Annotated[Path, typer.Option(help="JSON SurrogateConfig (features + head) to tune BANANAS with.")],
    embeddings: Annotated[Path | None, typer.Option(help=".npz from `export` (needed for COLE features).")] = None,
    seeds: Annotated[int, typer.Option(help="Tuning seeds 1000..1000+n-1.")] = 8,
    budget: Annotated[int, typer.Option()] = 200,
    dataset: Annotated[str, typer.Option()] = "cifar100",
    out: Annotated[Path, typer.Option()] = Path("benchmarks/results/search_tuning.md"),
    batch: Annotated[list[int] | None, typer.Option(help="Batch sizes to try (default 5 10).")] = None,
    acquisition: Annotated[list[str] | None, typer.Option(help="Acquisitions (default its ucb).")] = None,
    candidates: Annotated[list[int] | None, typer.Option(help="Candidates per ask (default 100 300).")] = None,
    max_edits: Annotated[list[int] | None, typer.Option(help="Mutation radii (default 1 2).")] = None,
    initial: Annotated[list[int] | None, typer.Option(help="Initial random samples (default 10).")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="`mutations` of the best (default) and/or the whole `space` (Bananas(whole_space=True))."),
    ] = None,
    from_cache: Annotated[
        bool, typer.Option(help="COLE vectors, proxies and the class graph from the service's cache.")
    ] = False,
) -> None:
    """Evaluations to 99% of the optimum and to the optimum (means over tuning seeds) for a grid of BANANAS
    settings."""
    config = SurrogateConfig.model_validate(json.loads(surrogate.read_text()))
    vectors = None
    reference = None
    proxies = graph = cells = None
    if from_cache:
        vectors, reference, proxies, graph, cells = cache_inputs(config, dataset)
    elif embeddings is not None:
        data = np.load(embeddings)
        vectors = {a: v for a, v in zip(data["arch"].tolist(), data["vectors"])}
        reference = data["vectors"]
    for name in scope or ():
        if name not in ("mutations", "space"):
            raise typer.BadParameter(f"--scope is mutations or space, not {name!r}")
    settings = [
        {"batch_size": b, "acquisition": a, "candidates": c, "max_edits": e, "initial_samples": i}
        for b, a, c, e, i in itertools.product(
            batch or (5, 10),
            acquisition or ("its", "ucb"),
            candidates or (100, 300),
            max_edits or (1, 2),
            initial or (10,),
        )
    ]
    if "space" in (scope or ()):  # candidates and radius mean nothing there: one setting per batch x acquisition
        whole = {(s["batch_size"], s["acquisition"], s["initial_samples"]): s for s in settings}
        whole = [{**s, "candidates": "space", "max_edits": "-", "whole_space": True} for s in whole.values()]
        settings = whole + (settings if "mutations" in scope else [])
    oracle_opt = NB201Oracle(dataset).optimum
    rows = []
    for setting in tqdm(settings, desc="settings"):
        reach, found, finals, started = [], [], [], time.perf_counter()
        for seed in range(1000, 1000 + seeds):
            oracle = NB201Oracle(dataset)
            study = searchers.LocalStudy(
                config, embeddings=vectors, reference=reference, proxies=proxies, graph=graph, cells=cells
            )
            params = {k: v for k, v in setting.items() if k != "batch_size"}
            if params.get("whole_space"):
                params = {k: v for k, v in params.items() if k not in ("candidates", "max_edits")}
            result = Bananas(study, seed=seed, **params).run(oracle, budget, setting["batch_size"])
            values = [v for _, v in result.history]
            reach.append(evals_to(values, 0.99 * oracle_opt, budget))
            found.append(evals_to(values, oracle_opt - 1e-9, budget))
            finals.append(max(values))
        rows.append(
            (
                setting,
                float(np.mean(reach)),
                float(np.median(reach)),
                float(np.mean(found)),
                float(np.mean(finals)),
                time.perf_counter() - started,
            )
        )
        typer.echo(f"{setting} -> 99%: mean {rows[-1][1]:.1f}, median {rows[-1][2]:.1f}; optimum {rows[-1][3]:.1f}")
    rows.sort(key=lambda r: r[1])
    lines = [
        f"# BANANAS tuning on {dataset} (tuning seeds 1000-{999 + seeds}, budget {budget}; never reported)",
        "",
        "Command: `python benchmarks/tune_search.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`",
        f"Surrogate: `{config.model_dump_json()}`",
        "",
        "| batch | acquisition | candidates | max edits | initial | evals to 99% (mean) | median | to optimum (mean; "
        f"missed = {budget + 1}) | final best | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, mean, median, optimum, final, seconds in rows:
        lines.append(
            f"| {setting['batch_size']} | {setting['acquisition']} | {setting['candidates']} | {setting['max_edits']} "
            f"| {setting['initial_samples']} | {mean:.1f} | {median:.1f} | {optimum:.1f} | {final:.2f} "
            f"| {seconds:.0f} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    app()
