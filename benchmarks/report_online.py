"""Online (prequential) surrogate quality of a real search vs the offline figure at the same n.

Runs BANANAS through a colecache server on NB201 with the tabular oracle (the SDK's `Bananas`,
benchmarks/search_config.json), then reads each study's report (`GET /studies/{id}/report`): Kendall
tau / Spearman rho of the latest prediction before each observation, calibration, MAE. For the same
server and study options it measures the offline tau at the pairs' mean training size: a study fitted
on n random cells, predicting 1,000 random cells of other isomorphism classes (the setting of
benchmarks/results/surrogate_eval.md). Writes benchmarks/results/report_online.md and .png.

    COLECACHE_DATA_DIR=<cache> colecache precompute --space nb201    # the default study's reference
    COLECACHE_DATA_DIR=<cache> colecache serve --port 8100
    python benchmarks/report_online.py --url http://127.0.0.1:8100 --seeds 0-4 --budget 100
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colecache_client import Bananas, Client
from colecache_client.benchmarks import NB201Oracle, read_nb201
from colecache_client.spaces import get_space
from nas_search import parse_seeds

app = typer.Typer(help=__doc__)
RESULTS = Path(__file__).resolve().parent / "results"
SPACE = get_space("nb201")


def online_run(client: Client, dataset: str, seed: int, budget: int, config: dict, keep: bool) -> dict:
    oracle = NB201Oracle(dataset)
    study = client.create_study(
        f"bananas-{dataset}-seed{seed}", objective=f"{dataset}_test_acc", **config.get("study", {})
    )
    started = time.perf_counter()
    Bananas(study, seed=seed, **config.get("bananas", {})).run(oracle, budget, config.get("batch_size", 10))
    seconds = time.perf_counter() - started
    report = study.report()
    n_train = [p["n_train"] for p in report.pairs]
    row = {
        "dataset": dataset,
        "seed": seed,
        "study_id": study.id,
        "n_observations": report.n_observations,
        "n_pairs": report.online.n_pairs,
        "mean_n_train": float(np.mean(n_train)) if n_train else None,
        "kendall_tau": report.online.kendall_tau,
        "spearman_rho": report.online.spearman_rho,
        "mae": report.online.mae,
        "bias": report.online.bias,
        "within_1std": report.online.calibration.within_1std,
        "within_2std": report.online.calibration.within_2std,
        "best": report.best.value if report.best else None,
        "optimum": oracle.optimum,
        "seconds": seconds,
        "raw": report.raw,
    }
    if not keep:
        client.delete_study(study.id)
    return row


def offline_tau(
    client: Client, dataset: str, n: int, seed: int, n_test: int = 1000, band: tuple[float, float] | None = None
) -> float:
    """Tau of a study fitted on `n` random cells, over `n_test` random cells of other isomorphism classes
    (with `band`: only test cells whose value lies in it, i.e. the value range a search observed)."""
    table = read_nb201()
    values = dict(zip(table.arch, table.accuracy[dataset]))
    rng = random.Random(10_000 + seed)
    by_class: dict[str, str] = {}
    for arch in table.arch:
        by_class.setdefault(SPACE.canonical(SPACE.parse(arch)), arch)
    classes = list(by_class)
    rng.shuffle(classes)
    train, rest = classes[:n], classes[n:]
    if band is not None:
        rest = [c for c in rest if band[0] <= values[by_class[c]] <= band[1]]
    test = rest[:n_test]
    study = client.create_study(f"offline-{dataset}-n{n}-seed{seed}")
    try:
        study.observe([(by_class[c], values[by_class[c]]) for c in train])
        predicted = study.predict([by_class[c] for c in test]).means
        return float(stats.kendalltau(predicted, [values[by_class[c]] for c in test]).statistic)
    finally:
        client.delete_study(study.id)


def plot(rows: list[dict], offline: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == dataset):
            curve = [p for p in r["raw"]["tau_over_time"] if p["kendall_tau"] is not None]
            ax.plot(
                [p["index"] for p in curve], [p["kendall_tau"] for p in curve], alpha=0.7, label=f"seed {r['seed']}"
            )
        mean, sd = offline[dataset]["mean"], offline[dataset]["sd"]
        ax.axhspan(mean - sd, mean + sd, color="0.85")
        ax.axhline(mean, color="k", linestyle="--", label=f"offline tau, n={offline[dataset]['n']}")
        ax.set_title(f"NB201 {dataset}: online Kendall tau (all pairs so far)")
        ax.set_xlabel("evaluation")
        ax.set_ylabel("Kendall tau")
        ax.set_ylim(-0.2, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@app.command()
def main(
    url: Annotated[str, typer.Option(help="A colecache server with the NB201 reference precomputed.")],
    seeds: Annotated[str, typer.Option()] = "0-4",
    budget: Annotated[int, typer.Option()] = 100,
    datasets: Annotated[list[str] | None, typer.Option("--dataset")] = None,
    config: Annotated[Path, typer.Option()] = Path(__file__).resolve().parent / "search_config.json",
    offline_draws: Annotated[int, typer.Option(help="Random training sets per dataset for the offline tau.")] = 5,
    keep: Annotated[bool, typer.Option(help="Keep the last run's study (for the report page).")] = True,
    out: Annotated[Path, typer.Option()] = RESULTS / "report_online.md",
) -> None:
    settings = json.loads(config.read_text())
    datasets = datasets or ["cifar10", "cifar100"]
    seed_list = parse_seeds(seeds)
    rows = []
    with Client(url, timeout=600) as client:
        jobs = [(d, s) for d in datasets for s in seed_list]
        for i, (dataset, seed) in enumerate(tqdm(jobs, desc="BANANAS runs")):
            rows.append(online_run(client, dataset, seed, budget, settings, keep=keep and i == len(jobs) - 1))
        offline = {}
        for dataset in datasets:
            n = round(float(np.mean([r["mean_n_train"] for r in rows if r["dataset"] == dataset])))
            taus = [offline_tau(client, dataset, n, s) for s in tqdm(range(offline_draws), desc=f"offline {dataset}")]
            # The value range the searches' pairs covered (middle 90%): the population a search ranks.
            observed = [p["value"] for r in rows if r["dataset"] == dataset for p in r["raw"]["pairs"]]
            band = (float(np.percentile(observed, 5)), float(np.percentile(observed, 95)))
            banded = [offline_tau(client, dataset, n, s, band=band) for s in range(offline_draws)]
            offline[dataset] = {
                "n": n,
                "mean": float(np.mean(taus)),
                "sd": float(np.std(taus)),
                "taus": taus,
                "band": band,
                "band_mean": float(np.mean(banded)),
                "band_sd": float(np.std(banded)),
            }

    lines = [
        "# Online surrogate quality in a real search vs offline at the same n",
        "",
        f"Command: `python benchmarks/report_online.py --url <server> --seeds {seeds} --budget {budget}` "
        f"(config `{config.name}`: {json.dumps(settings.get('bananas', {}))}, batch {settings.get('batch_size', 10)}). "
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, 2 cores, no GPU; date {date.today()}. "
        "Server: embedded default (SQLite, bundled all-MiniLM-L6-v2 on CPU), default study, NB201 reference "
        "precomputed. Oracle: NATS-Bench 200-epoch test accuracy.",
        "",
        "Online = the study report's figures over its prequential pairs (latest prediction before each observation "
        "of an architecture the surrogate had not been fitted on). Offline = a study fitted on n random cells "
        "(n = the pairs' mean training size), tau over 1,000 random cells of other classes, "
        f"{offline_draws} draws.",
        "",
        "| dataset | seed | evaluations | pairs | mean n_train | online tau | online rho | MAE | bias | "
        "within 1 std (68%) | "
        "within 2 std (95%) | best / optimum | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['n_observations']} | {r['n_pairs']} | {fmt(r['mean_n_train'], 1)} | "
            f"{fmt(r['kendall_tau'])} | {fmt(r['spearman_rho'])} | {fmt(r['mae'], 2)} | {fmt(r['bias'], 2)} | "
            f"{fmt(r['within_1std'], 2)} | "
            f"{fmt(r['within_2std'], 2)} | {r['best']:.2f} / {r['optimum']:.2f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "| dataset | online tau, mean ± sd over seeds | offline tau at the same n (random test cells) | difference | "
        "offline tau at the same n, test cells in the searched value band | difference | within 1 std (68%) | "
        "within 2 std (95%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        taus = [r["kendall_tau"] for r in mine if r["kendall_tau"] is not None]
        o = offline[dataset]
        lines.append(
            f"| {dataset} | {np.mean(taus):.3f} ± {np.std(taus):.3f} | {o['mean']:.3f} ± {o['sd']:.3f} (n={o['n']}) | "
            f"{np.mean(taus) - o['mean']:+.3f} | {o['band_mean']:.3f} ± {o['band_sd']:.3f} "
            f"({o['band'][0]:.1f}-{o['band'][1]:.1f}%) | {np.mean(taus) - o['band_mean']:+.3f} | "
            f"{np.mean([r['within_1std'] for r in mine]):.2f} | "
            f"{np.mean([r['within_2std'] for r in mine]):.2f} |"
        )
    lines += ["", "![online tau over a search](report_online.png)", ""]
    out.write_text("\n".join(lines))
    plot(rows, offline, out.with_suffix(".png"))
    (out.with_suffix(".jsonl")).write_text(
        "\n".join(json.dumps({k: v for k, v in r.items() if k != "raw"}) for r in rows)
    )
    print("\n".join(lines[-(len(datasets) + 4) :]))


if __name__ == "__main__":
    app()
