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

from .base import PRIMITIVES, OpGraph, ProxyNetwork, SearchSpace, SpecError

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""NB201's own op order; op indices in specs refer to this tuple."""

EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""(source, target) of each edge, in the order the cell string lists them."""

RENDERER_VERSION = "nb201-pytorch/1"
"""Version of the templates below; part of every cache key, so bump it on any change to the text."""

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
    renderer_version = RENDERER_VERSION
    encodings = ("onehot", "path")
    default_encodings = ("path",)
    render_choices = {
        "primitives": PRIMITIVES,
        "context": ("none", "backbone", "comment"),
        "dataset": ("cifar10", "cifar100", "imagenet16-120"),
    }
    description = (
        "NAS-Bench-201 cells: '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', or 6 op indices/names in edge order "
        "0->1, 0->2, 1->2, 0->3, 1->3, 2->3"
    )

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

    def op_graph(self, arch: NB201Cell) -> OpGraph:
        return op_graph(arch)

    def all_cells(self) -> Iterator[NB201Cell]:
        """Every cell of the space, in a fixed order (not the benchmark's index order)."""
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            yield NB201Cell(ops)

    def canonical_arch(self, arch: NB201Cell) -> NB201Cell:
        """The lexicographically smallest cell string of the isomorphism class."""
        return _representatives()[arch]

    def render(
        self, arch: NB201Cell, *, primitives: str = "exclude_helper", context: str = "none", dataset: str = "cifar10"
    ) -> str:
        """`class Cell(nn.Module)`, optionally with the ReLUConvBN helper, a docstring (`comment`) or the
        NB201 macro network (`backbone`, which names the dataset's class count)."""
        self.check_render_options(primitives=primitives, context=context, dataset=dataset)
        return render_nb201(arch, primitives, context, dataset)

    def helper_source(self) -> str:
        return _HELPER_CLASS + "\n"

    def proxy_network(self) -> ProxyNetwork:
        """NAS-Bench-201's own training network: 16 channels, five cells per stage, CIFAR-10 input and classes."""
        return ProxyNetwork(
            {"primitives": "inline", "context": "backbone", "dataset": "cifar10"},
            "Network(channels=16, cells_per_stage=5)",
            (3, 32, 32),
            10,
        )

    def example_call(self, arch: NB201Cell, context: str = "none") -> tuple[str, tuple]:
        if context == "backbone":
            return "Network(channels=4, cells_per_stage=1)", (2, 3, 16, 16)
        return "Cell(4)", (2, 4, 8, 8)


@lru_cache(maxsize=1)
def _representatives() -> dict[NB201Cell, NB201Cell]:
    """Each cell -> the lexicographically smallest cell string of its isomorphism class (built once, ~0.3 s)."""
    best: dict[str, NB201Cell] = {}
    cells = list(NB201Space().all_cells())
    for cell in cells:
        key = cell.canonical()
        if key not in best or cell.to_string() < best[key].to_string():
            best[key] = cell
    return {cell: best[cell.canonical()] for cell in cells}


def op_graph(cell: NB201Cell) -> OpGraph:
    """The cell with its ops on nodes: `input`, one node per edge in EDGES order (`none` edges too, so every
    cell has the same 8 nodes), `output`. An edge op feeds every edge op leaving its target node; the ops
    into node 3 feed `output` (the form of NASLib's / BRP-NAS's NB201 GIN inputs)."""
    ops = ("input", *cell.ops, "output")
    out = len(ops) - 1
    edges = []
    for k, (source, target) in enumerate(EDGES, start=1):
        if source == 0:
            edges.append((0, k))
        edges += [(j, k) for j, (_, into) in enumerate(EDGES, start=1) if into == source]
        if target == N_NODES - 1:
            edges.append((k, out))
    return OpGraph(ops, tuple(sorted(edges)))


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


# --- rendering: NB201 cell -> PyTorch source text, in every COLE variant --------------------------------
_DATASETS: dict[str, dict[str, str | int]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "classes": 10,
        "images": "32x32 RGB images",
        "train": "50,000 training images (train and validation splits together)",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "classes": 100,
        "images": "32x32 RGB images",
        "train": "50,000 training images",
    },
    "imagenet16-120": {
        "title": "ImageNet16-120",
        "classes": 120,
        "images": "16x16 RGB images (ImageNet downsampled, first 120 classes)",
        "train": "about 151,700 training images",
    },
}

_HELPER_CLASS = """\
class ReLUConvBN(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding):
        super().__init__()
        self.ops = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        return self.ops(x)"""

_RESIDUAL_BLOCK = '''\
class ResidualReduction(nn.Module):
    """Halves the resolution and changes the width between stages."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv_a = {conv_a}
        self.conv_b = {conv_b}
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.shortcut(x) + self.conv_b(self.conv_a(x))'''

_NETWORK_CLASS = '''\
class Network(nn.Module):
    """NAS-Bench-201 macro skeleton: stem, three stages of five cells, classifier."""

    def __init__(self, channels=16, cells_per_stage=5, num_classes={classes}):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(width, width * 2))
                width *= 2
            layers.extend(Cell(width) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, images):
        x = self.head(self.cells(self.stem(images)))
        return self.classifier(self.pool(x).flatten(1))'''

_CONTEXT_DOCSTRING = '''\
"""Search cell for {title} image classification ({classes} classes, {images}).

Network: a 3x3 convolution stem with 16 channels, then three stages of five copies of this
Cell at 16, 32 and 64 channels; a residual block between stages halves the resolution and
doubles the width; the classifier is BatchNorm, ReLU, global average pooling and a linear
layer to {classes} classes. Every op inside the cell keeps the resolution and the width.

Training on {train}: 200 epochs of SGD with Nesterov momentum 0.9,
weight decay 5e-4, batch size 256, learning rate 0.1 with cosine annealing to 0, random
crop and horizontal flip.
"""'''


def _relu_conv_bn(c_in: str, c_out: str, kernel: int, stride: int, primitives: str) -> str:
    """A pre-activation conv, spelled inline or through the ReLUConvBN helper."""
    padding = kernel // 2
    if primitives == "inline":
        return (
            "nn.Sequential(nn.ReLU(inplace=False), "
            f"nn.Conv2d({c_in}, {c_out}, kernel_size={kernel}, stride={stride}, padding={padding}, bias=False), "
            f"nn.BatchNorm2d({c_out}))"
        )
    return f"ReLUConvBN({c_in}, {c_out}, kernel_size={kernel}, stride={stride}, padding={padding})"


def _op_module(op: str, primitives: str) -> str | None:
    """The module expression for one edge, or None when the edge needs no module."""
    if op in ("none", "skip_connect"):
        return None
    if op == "avg_pool_3x3":
        return "nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)"
    kernel = 3 if op == "nor_conv_3x3" else 1
    return _relu_conv_bn("channels", "channels", kernel, 1, primitives)


def render_cell_class(cell: NB201Cell, primitives: str) -> str:
    """The `Cell(nn.Module)` definition: one attribute per non-trivial edge, one sum per node."""
    lines = [
        "class Cell(nn.Module):",
        "    def __init__(self, channels):",
        "        super().__init__()",
    ]
    for source, target, op in cell.edges():
        module = _op_module(op, primitives)
        if module is not None:
            lines.append(f"        self.edge_{source}_{target} = {module}")
    lines += ["", "    def forward(self, x0):"]
    for target in range(1, N_NODES):
        terms = []
        for source, op in cell.incoming(target):
            if op == "none":
                continue
            terms.append(f"x{source}" if op == "skip_connect" else f"self.edge_{source}_{target}(x{source})")
        rhs = " + ".join(terms) if terms else "torch.zeros_like(x0)"
        lines.append(f"        x{target} = {rhs}")
    lines.append(f"        return x{N_NODES - 1}")
    return "\n".join(lines)


def render_nb201(cell: NB201Cell, primitives: str, context: str, dataset: str) -> str:
    """The full text for one cell: primitives x context x dataset (see NB201Space.render)."""
    parts: list[str] = []
    facts = _DATASETS[dataset]
    if context == "comment":
        parts.append(_CONTEXT_DOCSTRING.format(**facts))
    if primitives == "helper":
        parts.append(_HELPER_CLASS)
    if context == "backbone":
        parts.append(
            _RESIDUAL_BLOCK.format(
                conv_a=_relu_conv_bn("in_channels", "out_channels", 3, 2, primitives),
                conv_b=_relu_conv_bn("out_channels", "out_channels", 3, 1, primitives),
            )
        )
    parts.append(render_cell_class(cell, primitives))
    if context == "backbone":
        parts.append(_NETWORK_CLASS.format(classes=facts["classes"]))
    return "\n\n\n".join(parts) + "\n"
