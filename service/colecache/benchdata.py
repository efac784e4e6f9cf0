"""NAS-Bench-201 ground truth (NATS-Bench export), read from a configurable folder, never copied here.

The expected file is `nats_bench.csv` with columns ArchitectureString, UniqueString and the
200-epoch test accuracies for CIFAR-10, CIFAR-100 and ImageNet16-120 (see README, "Benchmark data").
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

DATASETS = ("cifar10", "cifar100", "imagenet16-120")
_COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}
CSV_NAME = "nats_bench.csv"


def find_nb201_dir(configured: Path | str | None = None) -> Path | None:
    """The folder with nats_bench.csv: the argument, COLECACHE_NB201_DATA, or ../shared/data/nb201."""
    candidates = [configured, os.environ.get("COLECACHE_NB201_DATA")]
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "data" / "nb201", Path.cwd().parent / "shared" / "data" / "nb201"]
    for candidate in candidates:
        if candidate and (Path(candidate) / CSV_NAME).is_file():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class NB201Table:
    """Row i is benchmark index i."""

    arch: list[str]
    unique: list[str]
    accuracy: dict[str, np.ndarray]  # dataset -> (15625,) test accuracy in %

    def __len__(self) -> int:
        return len(self.arch)

    @cached_property
    def index_of(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.arch)}

    def optimum(self, dataset: str) -> float:
        return float(self.accuracy[dataset].max())


def load_nb201(folder: Path | str | None = None) -> NB201Table:
    found = find_nb201_dir(folder)
    if found is None:
        raise FileNotFoundError(
            f"{CSV_NAME} not found; set COLECACHE_NB201_DATA to the folder holding your NATS-Bench export"
        )
    arch, unique, acc = [], [], {d: [] for d in DATASETS}
    with (found / CSV_NAME).open(newline="") as handle:
        for row in csv.DictReader(handle):
            arch.append(row["ArchitectureString"])
            unique.append(row["UniqueString"])
            for dataset, column in _COLUMNS.items():
                acc[dataset].append(float(row[column]))
    return NB201Table(arch, unique, {d: np.asarray(v) for d, v in acc.items()})
