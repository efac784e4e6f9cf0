"""NAS-Bench-201 as a tabular oracle: 'train' a cell by looking up its 200-epoch test accuracy.

Reads a NATS-Bench export (`nats_bench.csv`: ArchitectureString, UniqueString and one column per
dataset) from a folder you point at; no benchmark data ships with this package.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from .spaces import get_space

DATASETS = ("cifar10", "cifar100", "imagenet16-120")
COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}
CSV_NAME = "nats_bench.csv"


def find_nb201_dir(configured: str | Path | None = None) -> Path | None:
    """The folder holding nats_bench.csv: the argument, $COLECACHE_NB201_DATA, or ../shared/data/nb201."""
    candidates = [configured, os.environ.get("COLECACHE_NB201_DATA"), Path.cwd().parent / "shared" / "data" / "nb201"]
    for candidate in candidates:
        if candidate and (Path(candidate) / CSV_NAME).is_file():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class NB201Rows:
    """The export as columns; row i is benchmark index i."""

    arch: list[str]
    unique: list[str]
    accuracy: dict[str, list[float]]


def read_nb201(folder: str | Path | None = None) -> NB201Rows:
    found = find_nb201_dir(folder)
    if found is None:
        raise FileNotFoundError(f"{CSV_NAME} not found; set COLECACHE_NB201_DATA to the folder holding it")
    arch, unique, acc = [], [], {d: [] for d in DATASETS}
    with (found / CSV_NAME).open(newline="") as handle:
        for row in csv.DictReader(handle):
            arch.append(row["ArchitectureString"])
            unique.append(row["UniqueString"])
            for dataset, column in COLUMNS.items():
                acc[dataset].append(float(row[column]))
    return NB201Rows(arch, unique, acc)


@dataclass
class NB201Oracle:
    """Accuracy lookups for one dataset, counting how many distinct cells were 'trained'."""

    dataset: str = "cifar100"
    folder: str | Path | None = None
    evaluated: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r} (one of {', '.join(DATASETS)})")
        rows = read_nb201(self.folder)
        self._space = get_space("nb201")
        self._value = dict(zip(rows.arch, rows.accuracy[self.dataset]))
        self.optimum = max(rows.accuracy[self.dataset])

    def __call__(self, arch: str) -> float:
        text = self._space.to_string(self._space.parse(arch))
        self.evaluated.add(text)
        return self._value[text]
