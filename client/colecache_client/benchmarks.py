"""NAS-Bench-201 as a tabular oracle: 'train' a cell by looking up its 200-epoch test accuracy.

Reads a NATS-Bench export (`nats_bench.csv`: ArchitectureString, UniqueString and one column per
dataset) from a folder you point at, or from fixed places that do not depend on the current
directory (`nb201_locations`); no benchmark data ships with this package.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from .paths import data_home, source_checkout
from .spaces import get_space

DATASETS = ("cifar10", "cifar100", "imagenet16-120")
COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}
CSV_NAME = "nats_bench.csv"


def nb201_locations(configured: str | Path | None = None) -> list[tuple[str, Path]]:
    """Where the NB201 table is looked for, in order, each with how it was chosen.

    An explicit folder (the argument, else `$COLECACHE_NB201_DATA`) is the only place looked: a
    wrong one is reported, not silently replaced by another copy. Without one, two fixed places
    that do not depend on the current directory: `<checkout>/../shared/data/nb201` when the SDK
    runs from a source checkout, then `nb201/` in the user's colecache data folder
    (`$XDG_DATA_HOME/colecache`, else `~/.local/share/colecache`)."""
    if configured:
        return [("argument", Path(configured).expanduser().absolute())]
    env = os.environ.get("COLECACHE_NB201_DATA", "").strip()
    if env:
        return [("$COLECACHE_NB201_DATA", Path(env).expanduser().absolute())]
    places = []
    checkout = source_checkout()
    if checkout is not None:
        places.append(("beside the source checkout", checkout.parent / "shared" / "data" / "nb201"))
    places.append(("user data folder", data_home() / "nb201"))
    return places


def find_nb201_dir(configured: str | Path | None = None) -> Path | None:
    """The folder holding nats_bench.csv (see `nb201_locations` for the order), or None."""
    for _, folder in nb201_locations(configured):
        if (folder / CSV_NAME).is_file():
            return folder
    return None


def nb201_not_found(configured: str | Path | None = None, what: str = CSV_NAME) -> str:
    """Why the table was not found: every place looked, so a wrong setting is visible at once."""
    places = "; ".join(f"{folder} ({how})" for how, folder in nb201_locations(configured))
    return (
        f"{what} not found; looked in: {places}. Set COLECACHE_NB201_DATA (or pass the folder) to the folder "
        f"holding {CSV_NAME}"
    )


@dataclass(frozen=True)
class NB201Rows:
    """The export as columns; row i is benchmark index i."""

    arch: list[str]
    unique: list[str]
    accuracy: dict[str, list[float]]


def read_nb201(folder: str | Path | None = None) -> NB201Rows:
    found = find_nb201_dir(folder)
    if found is None:
        raise FileNotFoundError(nb201_not_found(folder))
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


# --- NASLib pools: NB101 and NB301 (DARTS) subsets with zero-cost proxies --------------------------
NASLIB_SUBDIR = "extra_naslib_zc_subsets"
NASLIB_POOLS = {
    "nb101": ("zc_nasbench101.json", ("nasbench101", "cifar10")),
    "darts": ("zc_nasbench301.json", ("cifar10",)),
}
"""Space -> (file, keys down to the architectures) in NASLib's NAS-Bench-Suite-Zero subsets."""
PROXIES = (
    "flops",
    "params",
    "snip",
    "jacov",
    "grad_norm",
    "plain",
    "epe_nas",
    "fisher",
    "grasp",
    "l2_norm",
    "synflow",
    "nwot",
)


@dataclass(frozen=True)
class NaslibPool:
    """One NASLib subset: architectures in the space's own spelling, validation accuracy (%) and the
    zero-cost proxy scores NASLib computed for them (a proxy missing from the file is left out)."""

    space: str
    archs: list[str]
    accuracy: list[float]
    proxies: dict[str, list[float]]


def read_naslib_pool(space: str, folder: str | Path | None = None) -> NaslibPool:
    """Read NASLib's subset for `space` ('nb101': 500 cells, 108-epoch validation accuracy; 'darts':
    725 genotypes, NB301 surrogate accuracy) from `<nb201 data dir>/extra_naslib_zc_subsets/`.

    Isomorphic duplicates are merged (values averaged). Raises FileNotFoundError or KeyError."""
    import json

    if space not in NASLIB_POOLS:
        raise KeyError(f"no NASLib pool for space {space!r} (have: {', '.join(NASLIB_POOLS)})")
    base = find_nb201_dir(folder)
    if base is None:
        raise FileNotFoundError(nb201_not_found(folder, f"NASLib subsets ({NASLIB_SUBDIR}/ beside {CSV_NAME})"))
    name, keys = NASLIB_POOLS[space]
    data = json.loads((base / NASLIB_SUBDIR / name).read_text())
    for key in keys:
        data = data[key]
    sp = get_space(space)
    # Isomorphic duplicates (NB101 keys are unpruned samples; each was queried on its own) are merged:
    # accuracy and proxies averaged over the class.
    classes: dict[str, list] = {}
    for key, entry in data.items():
        arch = sp.parse(key)
        row = [float(entry["val_accuracy"])]
        for proxy in PROXIES:
            value = entry.get(proxy)
            row.append(float("nan") if value is None else float(value["score"] if isinstance(value, dict) else value))
        classes.setdefault(sp.canonical(arch), [sp.to_string(arch), []])[1].append(row)
    archs, accuracy = [], []
    proxies: dict[str, list[float]] = {p: [] for p in PROXIES}
    for arch, rows in classes.values():
        archs.append(arch)
        means = [sum(column) / len(column) for column in zip(*rows)]
        accuracy.append(means[0])
        for proxy, value in zip(PROXIES, means[1:]):
            proxies[proxy].append(value)
    proxies = {p: v for p, v in proxies.items() if not all(x != x for x in v)}
    return NaslibPool(space, archs, accuracy, proxies)


@dataclass
class PoolOracle:
    """A fixed pool as oracle: 'training' an architecture looks up its accuracy (by canonical form)."""

    space: str
    folder: str | Path | None = None
    evaluated: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        data = read_naslib_pool(self.space, self.folder)
        self._space = get_space(self.space)
        self.pool = data.archs
        self._value = {self._space.canonical(self._space.parse(a)): v for a, v in zip(data.archs, data.accuracy)}
        self.optimum = max(data.accuracy)

    def __call__(self, arch: str) -> float:
        key = self._space.canonical(self._space.parse(arch))
        self.evaluated.add(key)
        return self._value[key]
