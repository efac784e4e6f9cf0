"""NAS-Bench-201 cells: the single definition used by the server, the SDK and the benchmarks.

A cell is a DAG on 4 nodes; each of its 6 edges (j -> i, j < i) carries one of 5 ops. The
benchmark spells it `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`: one group per target node 1..3,
one `op~source` token per incoming edge in source order.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .base import SearchSpace, SpecError

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""NB201's own op order; op indices in specs refer to this tuple."""

EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""(source, target) of each edge, in the order the cell string lists them."""

N_NODES = 4
N_CELLS = len(OPS) ** len(EDGES)

_LIVE_OPS = OPS[1:]  # ops that pass a signal; paths through `none` carry nothing
_ROUTES: tuple[tuple[int, ...], ...] = ((3,), (0, 4), (1, 5), (0, 2, 5))
"""Every input->output route as edge indices into EDGES: 0->3, 0->1->3, 0->2->3, 0->1->2->3."""
_PATH_OFFSETS = {1: 0, 2: len(_LIVE_OPS), 3: len(_LIVE_OPS) + len(_LIVE_OPS) ** 2}
PATH_DIM = sum(len(_LIVE_OPS) ** n for n in (1, 2, 3))
ONEHOT_DIM = len(EDGES) * len(OPS)


@dataclass(frozen=True, slots=True)
class NB201Cell:
    """One cell: the op on each edge, in EDGES order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise SpecError(f"a cell has {len(EDGES)} edges, got {len(self.ops)} ops")
        for op in self.ops:
            if op not in OPS:
                raise SpecError(f"unknown op {op!r} (expected one of {', '.join(OPS)})")

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(OPS.index(op) for op in self.ops)

    def edges(self) -> list[tuple[int, int, str]]:
        """(source, target, op) triples in string order."""
        return [(s, t, op) for (s, t), op in zip(EDGES, self.ops)]

    def incoming(self, target: int) -> list[tuple[int, str]]:
        return [(s, op) for (s, t), op in zip(EDGES, self.ops) if t == target]

    def to_string(self) -> str:
        groups = []
        for target in range(1, N_NODES):
            groups.append("|" + "|".join(f"{op}~{s}" for s, op in self.incoming(target)) + "|")
        return "+".join(groups)

    def canonical(self) -> str:
        """The cell's spelling up to isomorphism, identical to NATS-Bench's `get_unique_str`.

        Each node is spelled as the sorted '+'-join of what its incoming edges contribute:
        `none` (or any edge leaving a node spelled exactly `#`) contributes `#`, `skip_connect`
        forwards its source's spelling, any other op contributes `(source)@op`. Sorting removes
        the order of summation and inlining skips removes nodes that merely copy another, so
        cells that differ only in those ways coincide. On the full space this gives the
        benchmark's 6,466 classes (checked against the NATS-Bench export in the tests).
        """
        spelled = ["0"]
        for target in range(1, N_NODES):
            parts = []
            for source, op in self.incoming(target):
                inner = spelled[source]
                if op == "none" or inner == "#":
                    parts.append("#")
                elif op == "skip_connect":
                    parts.append(inner)
                else:
                    parts.append(f"({inner})@{op}")
            spelled.append("+".join(sorted(parts)))
        return spelled[-1]

    def is_connected(self) -> bool:
        """False when every input->output path is cut by `none` (such cells score at chance)."""
        return any(all(self.ops[e] != "none" for e in route) for route in _ROUTES)

    def __str__(self) -> str:
        return self.to_string()


def parse_cell_string(text: str) -> NB201Cell:
    """Parse `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`, naming the first bad token in the error."""
    if not isinstance(text, str):
        raise SpecError(f"expected a cell string, got {type(text).__name__}")
    return _parse_cell_string(text)


@lru_cache(maxsize=1 << 16)
def _parse_cell_string(text: str) -> NB201Cell:
    # Memoised: search loops send the same few thousand cells again and again (errors are not cached).
    text = text.strip()
    groups = text.split("+")
    if len(groups) != N_NODES - 1:
        raise SpecError(f"cell string must have {N_NODES - 1} '+'-separated node groups, got {len(groups)}: {text!r}")
    ops: list[str] = []
    for target, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
            raise SpecError(f"node {target} group {group!r} must start and end with '|'")
        tokens = group[1:-1].split("|")
        if len(tokens) != target:
            raise SpecError(f"node {target} must have {target} incoming edge(s), got {len(tokens)} in {group!r}")
        for expected_source, token in enumerate(tokens):
            op, sep, source = token.partition("~")
            if not sep:
                raise SpecError(f"token {token!r} of node {target} must read 'op~source'")
            if op not in OPS:
                raise SpecError(f"unknown op {op!r} in token {token!r} (expected one of {', '.join(OPS)})")
            if source != str(expected_source):
                raise SpecError(
                    f"token {token!r} of node {target} must read from node {expected_source}, not {source!r}"
                )
            ops.append(op)
    return NB201Cell(tuple(ops))


def parse_op_list(values: Sequence[Any]) -> NB201Cell:
    """Parse 6 ops in EDGES order, each an index into OPS or an op name."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SpecError(f"expected a list of {len(EDGES)} ops, got {type(values).__name__}")
    if len(values) != len(EDGES):
        raise SpecError(f"expected {len(EDGES)} ops (one per edge), got {len(values)}")
    ops = []
    for position, value in enumerate(values):
        if isinstance(value, bool):
            raise SpecError(f"op {position} is a boolean, expected an index 0..{len(OPS) - 1} or a name")
        if isinstance(value, int):
            if not 0 <= value < len(OPS):
                raise SpecError(f"op index {value} at position {position} is out of range 0..{len(OPS) - 1}")
            ops.append(OPS[value])
        elif isinstance(value, str) and value in OPS:
            ops.append(value)
        else:
            raise SpecError(
                f"op {value!r} at position {position} is neither an index 0..{len(OPS) - 1} nor one of {', '.join(OPS)}"
            )
    return NB201Cell(tuple(ops))


class NB201Space(SearchSpace[NB201Cell]):
    """NAS-Bench-201 as a SearchSpace: 15,625 cells, 6,466 up to isomorphism."""

    name = "nb201"
    encodings = ("onehot", "path")

    def parse(self, value: Any) -> NB201Cell:
        if isinstance(value, NB201Cell):
            return value
        if isinstance(value, str):
            return parse_cell_string(value)
        return parse_op_list(value)

    def to_string(self, arch: NB201Cell) -> str:
        return arch.to_string()

    def canonical(self, arch: NB201Cell) -> str:
        return arch.canonical()

    def sample(self, rng: random.Random) -> NB201Cell:
        return NB201Cell(tuple(rng.choice(OPS) for _ in EDGES))

    def mutate(self, arch: NB201Cell, rng: random.Random, edits: int = 1) -> NB201Cell:
        if not 1 <= edits <= len(EDGES):
            raise ValueError(f"edits must be in 1..{len(EDGES)}, got {edits}")
        ops = list(arch.ops)
        for edge in rng.sample(range(len(EDGES)), edits):
            ops[edge] = rng.choice([op for op in OPS if op != ops[edge]])
        return NB201Cell(tuple(ops))

    def neighbours(self, arch: NB201Cell) -> list[NB201Cell]:
        out = []
        for edge in range(len(EDGES)):
            for op in OPS:
                if op != arch.ops[edge]:
                    ops = list(arch.ops)
                    ops[edge] = op
                    out.append(NB201Cell(tuple(ops)))
        return out

    def encode(self, arch: NB201Cell, kind: str) -> list[float]:
        if kind == "onehot":
            return onehot_encoding(arch)
        if kind == "path":
            return path_encoding(arch)
        raise ValueError(f"unknown encoding {kind!r} for nb201 (expected one of {', '.join(self.encodings)})")

    def all_cells(self) -> Iterator[NB201Cell]:
        """Every cell of the space, in a fixed order (not the benchmark's index order)."""
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            yield NB201Cell(ops)


def onehot_encoding(cell: NB201Cell) -> list[float]:
    """One-hot op per edge: the adjacency-with-ops encoding (30 features)."""
    out = [0.0] * ONEHOT_DIM
    for edge, op in enumerate(cell.ops):
        out[edge * len(OPS) + OPS.index(op)] = 1.0
    return out


def path_encoding(cell: NB201Cell) -> list[float]:
    """Counts of input->output paths by op sequence (84 features).

    The 4 routes through the cell (0->3, 0->1->3, 0->2->3, 0->1->2->3) are read over the actual
    edges, so a route's ops come from the edges it traverses; routes cut by `none` carry no
    signal and are left out. Feature index: length offset + the op sequence in base 4.
    """
    out = [0.0] * PATH_DIM
    for route in _ROUTES:
        ops = [cell.ops[e] for e in route]
        if "none" in ops:
            continue
        index = 0
        for op in ops:
            index = index * len(_LIVE_OPS) + _LIVE_OPS.index(op)
        out[_PATH_OFFSETS[len(route)] + index] += 1.0
    return out
