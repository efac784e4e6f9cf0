"""Our zero-cost proxies on NASLib's NB101 (500 cells) and DARTS/NB301 (725 genotypes) subsets: how each
ranks the subset's accuracy, and how it agrees with NASLib's value for the same architecture.

Scores come through the service's cache (the product path; missing ones are computed, resumable):
NB101 at a 16-channel stem, DARTS with the C=16, 8-cell search network (`SearchSpace.proxy_network`).

    COLECACHE_DATA_DIR=/path/to/cache python benchmarks/proxies_pools.py

writes benchmarks/results/proxies_pools.md.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from colecache.proxies import PROXIES
from colecache_client.benchmarks import read_naslib_pool
from proxies_eval import NASLIB_NAMES, rank_rho

RESULTS = Path(__file__).resolve().parent / "results"
TITLES = {"nb101": "NB101 (NASLib subset, 108-epoch validation accuracy)", "darts": "DARTS / NB301 (NASLib subset)"}


async def _measure(space: str, archs: list[str], workers: int) -> tuple[np.ndarray, dict[str, int], float]:
    from colecache.local import local_stores
    from colecache.settings import get_settings
    from colecache.specs import parse_specs
    from tqdm import tqdm

    settings = get_settings().model_copy(update={"proxy_workers": workers})
    specs = parse_specs(archs, space, 10**6)
    started = time.perf_counter()
    async with local_stores(settings) as services:
        with tqdm(total=len(specs), unit="net", desc=f"proxies {space}") as bar:
            outcome = await services.proxies.measure(specs, on_progress=bar.update)
    counts: dict[str, int] = {}
    for source in outcome.sources:
        counts[source] = counts.get(source, 0) + 1
    return outcome.values, counts, time.perf_counter() - started


def main(
    spaces: Annotated[list[str] | None, typer.Option("--space", help="Repeat; default nb101 and darts.")] = None,
    workers: Annotated[int, typer.Option(help="Proxy worker processes.")] = 2,
    out: Annotated[Path, typer.Option()] = RESULTS / "proxies_pools.md",
) -> None:
    """Score NASLib's NB101 / DARTS subsets with our proxies; compare with accuracy and NASLib's values."""
    from colecache.proxies import PROXY_VERSION
    from colecache.settings import get_settings

    settings = get_settings()
    lines = [
        "# Zero-cost proxies on NASLib's NB101 and DARTS subsets",
        "",
        f"Command: `COLECACHE_DATA_DIR=<cache dir> python benchmarks/proxies_pools.py --workers {workers}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU. "
        f"Date: {_dt.date.today().isoformat()}. Proxy suite `{PROXY_VERSION}`: {settings.proxy_batch_size} seeded "
        f"{settings.proxy_inputs} inputs (synthetic), random labels, "
        "untrained networks (NB101 at a 16-channel stem; DARTS C=16, 8 cells). NASLib computed theirs on real "
        "CIFAR batches with the full-size networks. Spearman rho; NASLib's `nwot` is NASWOT (absent for NB101).",
        "",
    ]
    for space in spaces or ["nb101", "darts"]:
        pool = read_naslib_pool(space)
        values, counts, seconds = asyncio.run(_measure(space, list(pool.archs), workers))
        accuracy = np.asarray(pool.accuracy, dtype=float)
        lines += [
            f"## {TITLES.get(space, space)}: {len(pool.archs)} architectures",
            "",
            f"Scored in {seconds:.0f} s ({counts}).",
            "",
            "| proxy | ours vs accuracy | NASLib's vs accuracy | rho(ours, NASLib's) |",
            "|---|---:|---:|---:|",
        ]
        for j, name in enumerate(PROXIES):
            theirs = pool.proxies.get(NASLIB_NAMES[name])
            ours = rank_rho(values[:, j], accuracy)
            if theirs is None:
                lines.append(f"| {name} | {ours:.3f} | - | - |")
                continue
            theirs = np.asarray(theirs, dtype=float)
            lines.append(
                f"| {name} | {ours:.3f} | {rank_rho(theirs, accuracy):.3f} | {rank_rho(values[:, j], theirs):.3f} |"
            )
        lines.append("")
    out.write_text("\n".join(lines))
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
