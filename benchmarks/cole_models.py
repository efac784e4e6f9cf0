"""COLE with a decoder LM (SmolLM2-135M, GGUF) against the default MiniLM, on a fixed NB201 subset.

Embedding all 6,466 NB201 classes with SmolLM2 takes about an hour on 2 CPU cores, so this compares the
models on 1,000 classes drawn once (seed 2026): training = 128 of them (`--draws` random draws), test = the
other 872, Kendall tau; COLE alone and COLE + path (the default study's blocks, without smoothing, which needs
the whole space). Reductions are fitted on the 1,000 classes (the subset is the reference).

    python benchmarks/cole_models.py subset                       # writes benchmarks/out/cole_models/subset.txt
    COLECACHE_MODEL=bundled:smollm2-135m COLECACHE_DATA_DIR=<dir> colecache precompute --space nb201 \\
        --archs benchmarks/out/cole_models/subset.txt --pooling mean --pooling last_token \\
        --layer 10 --layer 20 --layer -1
    COLECACHE_MODEL=bundled:smollm2-135m COLECACHE_DATA_DIR=<dir> python benchmarks/cole_models.py read \\
        --name smollm2 --readout mean@L10 --readout mean@L20 ...    # vectors from the cache, never computed
    COLECACHE_DATA_DIR=<minilm cache> python benchmarks/cole_models.py read --name minilm --readout mean@L5
    python benchmarks/cole_models.py evaluate                     # writes benchmarks/results/cole_models.md
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from colecache.benchdata import DATASETS, load_nb201
from colecache.surrogate import FeatureConfig, Surrogate, SurrogateConfig
from scipy import stats
from surrogate_eval import DATASET_TITLES, representatives, structural

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "cole_models"
app = typer.Typer(help=__doc__, no_args_is_help=True)


@app.command()
def subset(size: int = 1000, seed: int = 2026) -> None:
    """Draw the subset of class representatives (benchmark indices) once."""
    table = load_nb201()
    chosen = np.sort(np.random.default_rng(seed).choice(representatives(table), size=size, replace=False))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "subset.txt").write_text("\n".join(table.arch[i] for i in chosen) + "\n")
    np.save(OUT / "subset_idx.npy", chosen)
    typer.echo(f"wrote {OUT / 'subset.txt'} ({size} classes)")


async def _read(cells: list[str], readouts: list[str]) -> dict[str, np.ndarray]:
    from colecache.embedding.options import EmbedOptions
    from colecache.local import local_services
    from colecache.render import RenderOptions
    from colecache.specs import parse_specs

    render_options = RenderOptions(primitives="exclude_helper", context="none", dataset="cifar10", canonical=True)
    out = {}
    async with local_services() as services:
        specs = parse_specs(cells, "nb201", 10**6)
        for readout in readouts:
            pooling, _, layer = readout.partition("@L")
            options = EmbedOptions(pooling=pooling, layer=int(layer))
            outcome = await services.pipeline.embed(specs, render_options, options)
            if any(item.source == "computed" for item in outcome.items):
                raise RuntimeError(f"{readout}: not precomputed (run colecache precompute first, see the docstring)")
            out[readout] = np.stack([item.record.vector for item in outcome.items]).astype(np.float32)
    return out


@app.command()
def read(
    name: Annotated[str, typer.Option(help="Label of the model (COLECACHE_MODEL decides which it is).")],
    readouts: Annotated[list[str], typer.Option("--readout", help="pooling@Llayer, e.g. mean@L10; repeat.")],
) -> None:
    """Read the subset's vectors of the configured model from the cache into benchmarks/out/cole_models."""
    cells = (OUT / "subset.txt").read_text().split()
    vectors = asyncio.run(_read(cells, readouts))
    np.savez(OUT / f"{name}.npz", **vectors)
    typer.echo(f"wrote {OUT / f'{name}.npz'}: {', '.join(vectors)}")


@app.command()
def evaluate(
    draws: Annotated[int, typer.Option(help="Training draws per dataset.")] = 20,
    n: Annotated[int, typer.Option(help="Training classes per draw.")] = 128,
    out: Annotated[Path, typer.Option()] = HERE / "results" / "cole_models.md",
) -> None:
    """Kendall tau of every read-out of every read model, alone and with the path encoding."""
    import torch

    torch.set_num_threads(1)
    table = load_nb201()
    chosen = np.load(OUT / "subset_idx.npy")
    path = structural(table, chosen, "path")
    features = {}
    for file in sorted(OUT.glob("*.npz")):
        for readout, matrix in np.load(file).items():
            features[f"{file.stem} {readout}"] = matrix
    results: dict[tuple[str, str], list[float]] = {}
    for dataset in DATASETS:
        y = table.accuracy[dataset][chosen]
        for draw in range(draws):
            rng = np.random.default_rng([7, draw, DATASETS.index(dataset)])
            train = rng.choice(len(y), n, replace=False)
            test = np.setdiff1d(np.arange(len(y)), train)
            for label, x in features.items():
                for with_path in (False, True):
                    config = SurrogateConfig(
                        features=FeatureConfig(structural=("path",) if with_path else ()), seed=draw
                    )
                    s = path if with_path else None
                    model = Surrogate(config).fit(
                        x[train], None if s is None else s[train], y[train], reference_cole=x, reference_struct=s
                    )
                    mean, _ = model.predict(x[test], None if s is None else s[test])
                    key = (dataset, label + (" + path" if with_path else ""))
                    results.setdefault(key, []).append(float(stats.kendalltau(mean, y[test]).statistic))
        typer.echo(f"{dataset} done", err=True)
    labels = list(dict.fromkeys(label for _, label in results))
    command = "python benchmarks/cole_models.py " + " ".join(sys.argv[1:])
    lines = [
        "# COLE with SmolLM2-135M (GGUF) vs all-MiniLM-L6-v2 on 1,000 NB201 classes",
        "",
        f"Command: `{command}` (after `subset`, `colecache precompute` and `read` per model: see the script)",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.machine()}), no GPU, torch threads 1. "
        f"Date: {_dt.date.today().isoformat()}.",
        "",
        f"1,000 class representatives drawn once (seed 2026); {draws} draws of n = {n} training classes, test = "
        f"the other {len(chosen) - n}; Kendall tau, mean [95% CI half-width]. Default study head and reduction "
        "(PCA-64 fitted on the 1,000); `+ path` = the NB201 path encoding at weight 2 (the default study's blocks, "
        "without smoothing). Code: canonical `exclude_helper`/`none`. SmolLM2: `bundled:smollm2-135m` (the "
        "Q4_1 GGUF of SmolLM2-135M-Instruct, de-quantised, 30 layers); MiniLM: the default read-out (mean of "
        "hidden state 5). Layer -1 = the last.",
        "",
        "| read-out | " + " | ".join(DATASET_TITLES[d] for d in DATASETS) + " |",
        "|---|" + "---:|" * len(DATASETS),
    ]
    for label in labels:
        cells = []
        for d in DATASETS:
            t = np.asarray(results[(d, label)])
            cells.append(f"{t.mean():.3f} [±{1.96 * t.std(ddof=1) / np.sqrt(len(t)):.3f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")
    (OUT / "tau.json").write_text(json.dumps({f"{d}|{lab}": v for (d, lab), v in results.items()}))
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
