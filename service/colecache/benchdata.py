"""NAS-Bench-201 ground truth for the server's evaluation code: the SDK's reader, as numpy arrays.

The export (`nats_bench.csv`) is read from a configurable folder and never copied into the repo;
see `colecache_client.benchmarks` for the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from colecache_client.benchmarks import DATASETS, find_nb201_dir, read_nb201

__all__ = ["DATASETS", "NB201Table", "find_nb201_dir", "load_nb201"]


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
    rows = read_nb201(folder)
    return NB201Table(rows.arch, rows.unique, {d: np.asarray(v) for d, v in rows.accuracy.items()})
