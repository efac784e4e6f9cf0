"""What should a data-free proxy look at? NASWOT on NAS-Bench-201 with different synthetic input batches.

NASWOT (log|det K| of the ReLU-agreement kernel, Mellor et al. 2021) ranks NB201 at Spearman rho ~0.80
on NASLib's real CIFAR batches but only ~0.67 on our 16 white Gaussian images. This benchmark scores
NASLib's NB201 cells (`extra_naslib_zc_subsets/zc_nasbench201.json`, every `--stride`-th) with each
input batch and reports rho with the 200-epoch test accuracy and with NASLib's own (real-data) score:

- `gaussian@B`: white N(0, 1) noise, B images (the zc/1 inputs);
- `power_law@B^a`: noise whose Fourier amplitude falls as 1/f^a (colecache.proxies.zero_cost.power_law_noise;
  natural images fall as about 1/f), B images;
- `photos@B` (reference only, not a service option): B random crops (32-160 px, resized to 32x32) of the two
  photographs scikit-learn ships (`sklearn.datasets.load_sample_images`), normalised with CIFAR-10's mean
  and std: how far synthetic inputs are from real ones.

Each network is built as the service builds it (canonical class, NB201 macro network, seed 0, train mode)
and scored with the service's NASWOT formula; forward only. Rows are appended to
benchmarks/out/proxy_inputs_rows.jsonl (resumed).

    python benchmarks/proxy_inputs.py --workers 2

writes benchmarks/results/proxy_inputs.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

HERE = Path(__file__).resolve().parent
VARIANTS = (
    "gaussian@16",
    "gaussian@64",
    "power_law@16^1",
    "power_law@64^1",
    "power_law@16^1.5",
    "power_law@32^1.5",
    "power_law@64^1.5",
    "photos@16",
    "photos@64",
)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def input_batch(variant: str):
    """(B, 3, 32, 32) float32 inputs of a variant, seeded as the service seeds its batch (seed 0 -> 1)."""
    import torch
    from colecache.proxies.zero_cost import power_law_noise

    kind, rest = variant.split("@")
    batch, _, exponent = rest.partition("^")
    generator = torch.Generator().manual_seed(1)
    shape = (int(batch), 3, 32, 32)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator)
    if kind == "power_law":
        return power_law_noise(shape, generator, float(exponent))
    if kind == "photos":
        return _photo_crops(int(batch), generator)
    raise ValueError(f"unknown input variant {variant!r}")


def _photo_crops(n: int, generator):
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(im, dtype=torch.float32).permute(2, 0, 1) / 255 for im in load_sample_images().images]
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        size = int(torch.randint(32, 160, (1,), generator=generator))
        top = int(torch.randint(0, photo.shape[1] - size, (1,), generator=generator))
        left = int(torch.randint(0, photo.shape[2] - size, (1,), generator=generator))
        crop = photo[:, top : top + size, left : left + size].unsqueeze(0)
        crops.append(F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[0])
    mean, std = torch.tensor(CIFAR_MEAN).view(3, 1, 1), torch.tensor(CIFAR_STD).view(3, 1, 1)
    return (torch.stack(crops) - mean) / std


def score_cells(cells: list[str], variants: tuple[str, ...]) -> list[dict]:
    """Worker: NASWOT of each cell's network under each variant's batch (one torch thread)."""
    import torch
    import torch.nn.functional as F
    from colecache.proxies.zero_cost import _logdet_agreement
    from colecache_client.spaces import get_space
    from torch import nn

    torch.set_num_threads(1)
    space = get_space("nb201")
    network = space.proxy_network()
    batches = {v: input_batch(v) for v in variants}
    rows = []
    for cell in cells:
        code = space.render(space.canonical_arch(space.parse(cell)), **network.render_options)
        row: dict = {"cell": cell}
        for variant, x in batches.items():
            namespace = {"torch": torch, "nn": nn, "F": F}
            exec(compile(code, "<architecture>", "exec"), namespace)
            torch.manual_seed(0)
            net = eval(network.constructor, namespace)
            net.train()
            codes: list = []
            hooks = [
                m.register_forward_hook(lambda _m, _i, o, c=codes: c.append((o.reshape(o.shape[0], -1) > 0).double()))
                for m in net.modules()
                if isinstance(m, nn.ReLU)
            ]
            with torch.no_grad():
                net(x)
            for h in hooks:
                h.remove()
            row[variant] = _logdet_agreement(torch.cat(codes, dim=1)) if codes else None
        rows.append(row)
    return rows


def main(
    stride: Annotated[int, typer.Option(help="Score every stride-th of NASLib's cells (sorted).")] = 2,
    workers: Annotated[int, typer.Option(help="Processes, one torch thread each.")] = 2,
    out: Annotated[Path, typer.Option(help="Markdown output.")] = HERE / "results" / "proxy_inputs.md",
) -> None:
    """NASWOT's rank correlation with accuracy for each synthetic input batch."""
    from colecache.benchdata import DATASETS, load_nb201
    from colecache_client.benchmarks import find_nb201_dir
    from proxies_eval import rank_rho, read_naslib
    from tqdm import tqdm

    started = time.time()
    command = "python benchmarks/proxy_inputs.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    table = load_nb201()
    naslib = read_naslib(Path(find_nb201_dir()))
    cells = sorted(naslib["cifar10"])[::stride]
    log = HERE / "out" / "proxy_inputs_rows.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[row["cell"]] = row
    todo = [c for c in cells if c not in done or any(v not in done[c] for v in VARIANTS)]
    chunks = [todo[i : i + 8] for i in range(0, len(todo), 8)]
    with ProcessPoolExecutor(workers) as pool, tqdm(total=len(todo), unit="cell", desc="naswot by input") as bar:
        for rows in pool.map(score_cells, chunks, [VARIANTS] * len(chunks)):
            with log.open("a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
                    done[row["cell"]] = row
            bar.update(len(rows))

    lines = [
        "# What should a data-free proxy look at? NASWOT by input batch (NAS-Bench-201)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, one torch "
        f"thread per worker. Date: {_dt.date.today().isoformat()}. Wall time: {(time.time() - started) / 60:.1f} min.",
        "",
        f"Cells: one in {stride} of NASLib's NB201 cells (sorted cell strings), each scored as the service scores "
        "it (canonical class, NB201 macro network, 16 channels, 5 cells per stage, untrained, seed 0). Spearman rho "
        "with the 200-epoch test accuracy (CIFAR-10: train+val), and with NASLib's `nwot` (NASWOT on real batches "
        "of that dataset). `gaussian@B`: B white N(0, 1) images; `power_law@B^a`: B images of 1/f^a noise; "
        "`photos@B`: B crops of scikit-learn's two sample photographs (a reference, not a service option).",
        "",
        "| inputs | " + " | ".join(f"{d}: rho with accuracy | {d}: rho with NASLib's" for d in DATASETS) + " |",
        "|---|" + "---:|---:|" * len(DATASETS),
    ]
    reference = ["NASLib's nwot (real batches)"]
    for dataset in DATASETS:
        rows = [done[c] for c in cells if c in naslib[dataset]]
        accuracy = np.asarray([table.accuracy[dataset][table.index_of[r["cell"]]] for r in rows])
        theirs = np.asarray([naslib[dataset][r["cell"]]["nwot"] for r in rows])
        reference += [f"{rank_rho(theirs, accuracy):.3f} (n={len(rows)})", "1"]
    lines.append("| " + " | ".join(reference) + " |")
    for variant in VARIANTS:
        cells_row = [f"`{variant}`"]
        for dataset in DATASETS:
            rows = [done[c] for c in cells if c in naslib[dataset]]
            ours = np.asarray([r[variant] if r[variant] is not None else np.nan for r in rows], dtype=float)
            accuracy = np.asarray([table.accuracy[dataset][table.index_of[r["cell"]]] for r in rows])
            theirs = np.asarray([naslib[dataset][r["cell"]]["nwot"] for r in rows])
            cells_row += [f"{rank_rho(ours, accuracy):.3f}", f"{rank_rho(ours, theirs):.3f}"]
        lines.append("| " + " | ".join(cells_row) + " |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    typer.run(main)
