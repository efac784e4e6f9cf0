"""DARTS / NAS-Bench-301 cells: a normal and a reduction cell, each 4 nodes of 2 (op, source) inputs.

Node numbering follows DARTS genotypes: states 0 and 1 are the outputs of the previous two cells,
intermediate nodes are 2..5, node i reads two *different* states among 0..i-1 (every derived DARTS
genotype and every NB301/NASLib sample does; the 725 NASLib NB301 keys never repeat a source), and
the cell output concatenates nodes 2..5. A cell is 8 pairs, two per node, in node order.

Spellings accepted by `DartsSpace.parse`:
  * `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
    reduce_concat=range(2, 6))` as a string (read with `ast`, never evaluated), or a DARTS
    `Genotype` namedtuple, or a dict with keys normal/reduce (and optionally the two concats);
  * NASLib's compact form `[normal, reduce]`, 8 `(source, op_index)` pairs per cell with op indices
    into `NASLIB_OPS`, as nested lists/tuples or their string form;
  * a `DartsGenotype`.
"""

from __future__ import annotations

import ast
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral
from typing import Any

from .base import PRIMITIVES, OpGraph, ProxyNetwork, SearchSpace, SpecError

OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""DARTS' PRIMITIVES, in DARTS' order."""

LIVE_OPS: tuple[str, ...] = OPS[1:]
"""Ops that sampling, mutation and neighbours use (derived genotypes never hold `none`)."""

NASLIB_OPS: tuple[str, ...] = LIVE_OPS
"""NASLib's op-index order for the compact DARTS form (the same as PRIMITIVES without `none`)."""

CELLS: tuple[str, ...] = ("normal", "reduce")
N_NODES = 4
N_PAIRS = 2 * N_NODES
CONCAT: tuple[int, ...] = (2, 3, 4, 5)
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
"""The DARTS Genotype namedtuple's fields, in positional order."""

EDGES: tuple[tuple[int, int], ...] = tuple((source, node) for node in range(2, 2 + N_NODES) for source in range(node))
"""The 14 possible (source, node) edges of a cell, by node then source: the adjacency encoding's order."""

RENDERER_VERSION = "darts-pytorch/1"

ADJACENCY_SLOTS = 1 + len(OPS)
"""Per edge: absent, then one slot per op in OPS order (`none` included, since parse accepts it)."""
ADJACENCY_DIM = len(CELLS) * len(EDGES) * ADJACENCY_SLOTS  # 2 * 14 * 9 = 252

PATH_MAX_LEN = 3
"""Paths of up to 3 ops; the only longer ones are 4-op chains 0/1 -> 2 -> 3 -> 4 -> 5, whose 3-op prefix is counted."""
_PATH_LEN_OFFSETS = tuple(sum(len(LIVE_OPS) ** n for n in range(1, length)) for length in range(1, PATH_MAX_LEN + 1))
PATH_PER_INPUT = sum(len(LIVE_OPS) ** n for n in range(1, PATH_MAX_LEN + 1))  # 7 + 49 + 343 = 399
PATH_DIM = len(CELLS) * 2 * PATH_PER_INPUT  # 2 cells * 2 inputs * 399 = 1596

MAX_SPEC_CHARS = 20_000
"""Longest genotype string parsed (a real one is ~450 characters); bounds the work `ast` does on hostile input."""

DATASET_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}

Pair = tuple[str, int]
Cell = tuple[Pair, ...]


def _check_cell(cell: str, pairs: Any) -> Cell:
    """Validate one cell of (op, source) pairs, naming the cell, node and reason in the error."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise SpecError(f"{cell} cell must be a list of {N_PAIRS} (op, source) pairs, got {type(pairs).__name__}")
    if len(pairs) != N_PAIRS:
        raise SpecError(f"{cell} cell has {len(pairs)} pairs, expected {N_PAIRS} (two per node 2..5)")
    out: list[Pair] = []
    for index, pair in enumerate(pairs):
        node = 2 + index // 2
        where = f"{cell} cell node {node}"
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise SpecError(f"{where}: pair {index} must be (op, source), got {pair!r}")
        op, source = pair
        if not isinstance(op, str):
            raise SpecError(f"{where}: op of pair {index} must be an op name, got {op!r}")
        if op not in OPS:
            raise SpecError(f"{where}: unknown op {op!r} (expected one of {', '.join(OPS)})")
        if isinstance(source, bool) or not isinstance(source, Integral):
            raise SpecError(f"{where}: source of pair {index} must be a state number, got {source!r}")
        source = int(source)
        if source < 0:
            raise SpecError(f"{where} reads state {source}, which is not a state (states are 0..{node - 1})")
        if source >= node:
            raise SpecError(
                f"{where} reads state {source}, which does not exist yet (node {node} may read states 0..{node - 1})"
            )
        out.append((op, source))
    for index in range(0, N_PAIRS, 2):
        if out[index][1] == out[index + 1][1]:
            raise SpecError(
                f"{cell} cell node {2 + index // 2} reads state {out[index][1]} twice; a node's two inputs come "
                "from different states (as in every DARTS / NAS-Bench-301 genotype)"
            )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DartsGenotype:
    """One genotype: 8 (op, source) pairs per cell, two per intermediate node 2..5 in node order."""

    normal: Cell
    reduce: Cell

    def __post_init__(self) -> None:
        # Coerce lists to tuples so the genotype hashes, and validate once here for every way in.
        object.__setattr__(self, "normal", _check_cell("normal", self.normal))
        object.__setattr__(self, "reduce", _check_cell("reduce", self.reduce))

    def cell(self, name: str) -> Cell:
        return self.normal if name == "normal" else self.reduce

    def to_string(self) -> str:
        concat = list(CONCAT)
        return (
            f"Genotype(normal={list(self.normal)!r}, normal_concat={concat!r}, "
            f"reduce={list(self.reduce)!r}, reduce_concat={concat!r})"
        )

    def __str__(self) -> str:
        return self.to_string()


def to_naslib(arch: DartsGenotype) -> list[list[tuple[int, int]]]:
    """NASLib's compact `[normal, reduce]` of (source, op_index) pairs, e.g. to look up NB301 data."""
    out = []
    for name in CELLS:
        cell = []
        for op, source in arch.cell(name):
            if op == "none":
                raise SpecError(f"{name} cell uses 'none', which NASLib's compact form cannot spell")
            cell.append((source, NASLIB_OPS.index(op)))
        out.append(cell)
    return out


# --- parsing ---------------------------------------------------------------------------------------------
def _naslib_cell(cell: str, pairs: Sequence[Any]) -> list[Pair]:
    """(source, op_index) pairs -> (op, source) pairs; sources are checked later by _check_cell."""
    out = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise SpecError(f"{cell} cell node {2 + index // 2}: pair {index} must be (source, op_index), got {pair!r}")
        source, op = pair
        if isinstance(op, bool) or not isinstance(op, Integral):
            raise SpecError(
                f"{cell} cell node {2 + index // 2}: pair {index} mixes spellings; NASLib pairs are "
                f"(source, op_index), got {pair!r}"
            )
        if not 0 <= op < len(NASLIB_OPS):
            raise SpecError(
                f"{cell} cell node {2 + index // 2}: op index {op} is out of range 0..{len(NASLIB_OPS) - 1} "
                f"(NASLib order: {', '.join(NASLIB_OPS)})"
            )
        out.append((NASLIB_OPS[int(op)], source))
    return out


def _cell_pairs(cell: str, pairs: Any, *, allow_naslib: bool) -> Any:
    """(op, source) pairs of one cell; NASLib (source, op_index) pairs are recognised by an int first item."""
    if allow_naslib and isinstance(pairs, Sequence) and not isinstance(pairs, (str, bytes)) and pairs:
        first = pairs[0]
        if isinstance(first, Sequence) and not isinstance(first, (str, bytes)) and len(first) == 2:
            if isinstance(first[0], Integral) and not isinstance(first[0], bool):
                return _naslib_cell(cell, pairs)
    return pairs


def _check_concat(field: str, value: Any) -> None:
    try:
        items = list(value)
    except TypeError:
        items = None
    if isinstance(value, (str, bytes)) or items != list(CONCAT) or any(isinstance(v, bool) for v in items):
        raise SpecError(
            f"{field} must be [2, 3, 4, 5] (the output concatenates all four intermediate nodes), got {value!r}"
        )


def _from_mapping(value: Mapping[str, Any]) -> DartsGenotype:
    unknown = [key for key in value if key not in _FIELDS]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise SpecError(f"malformed genotype: unknown key(s) {names} (expected {', '.join(_FIELDS)})")
    missing = [key for key in CELLS if key not in value]
    if missing:
        raise SpecError(f"malformed genotype: missing {' and '.join(missing)} cell")
    for field in ("normal_concat", "reduce_concat"):
        if field in value:
            _check_concat(field, value[field])
    cells = {name: _cell_pairs(name, value[name], allow_naslib=False) for name in CELLS}
    return DartsGenotype(cells["normal"], cells["reduce"])


def _from_sequence(value: Sequence[Any]) -> DartsGenotype:
    if len(value) != len(CELLS):
        raise SpecError(f"malformed genotype: expected [normal, reduce] (2 cells), got {len(value)} item(s)")
    cells = [_cell_pairs(name, pairs, allow_naslib=True) for name, pairs in zip(CELLS, value)]
    return DartsGenotype(cells[0], cells[1])


def _literal(node: ast.expr, field: str) -> Any:
    """A literal field value; `range(a, b[, c])` with int constants is allowed for the concats."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        args = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
        if len(args) == len(node.args) and 1 <= len(args) <= 3 and all(type(a) is int for a in args):
            return range(*args)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise SpecError(f"malformed genotype: {field} is not a literal: {ast.unparse(node)[:80]!r}") from None


def _from_call(call: ast.Call) -> DartsGenotype:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name != "Genotype":
        raise SpecError(f"malformed genotype: expected Genotype(...), got a call to {ast.unparse(func)}")
    if len(call.args) > len(_FIELDS):
        raise SpecError(f"malformed genotype: Genotype takes at most {len(_FIELDS)} fields, got {len(call.args)}")
    fields: dict[str, Any] = {}
    for field, arg in zip(_FIELDS, call.args):
        fields[field] = _literal(arg, field)
    for keyword in call.keywords:
        if keyword.arg is None:
            raise SpecError("malformed genotype: **kwargs are not accepted")
        if keyword.arg in fields:
            raise SpecError(f"malformed genotype: {keyword.arg} given twice")
        if keyword.arg not in _FIELDS:
            raise SpecError(f"malformed genotype: unknown field {keyword.arg!r} (expected {', '.join(_FIELDS)})")
        fields[keyword.arg] = _literal(keyword.value, keyword.arg)
    return _from_mapping(fields)


@lru_cache(maxsize=1 << 14)
def _parse_string(text: str) -> DartsGenotype:
    # Memoised: search loops send the same genotypes again and again (errors are not cached).
    text = text.strip()
    if not text:
        raise SpecError("malformed genotype: empty string")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"malformed genotype: {len(text)} characters, at most {MAX_SPEC_CHARS} accepted")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise SpecError(f"malformed genotype: {exc.msg} at column {exc.offset} of {text[:80]!r}") from None
    except (ValueError, MemoryError, RecursionError) as exc:  # e.g. absurd nesting or digit counts
        raise SpecError(f"malformed genotype: {type(exc).__name__} while reading {text[:80]!r}") from None
    if isinstance(tree.body, ast.Call):
        return _from_call(tree.body)
    value = _literal(tree.body, "the genotype")
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if isinstance(value, (list, tuple)):
        return _from_sequence(value)
    raise SpecError(f"malformed genotype: expected Genotype(...), a dict or [normal, reduce], got {text[:80]!r}")


def parse_genotype(value: Any) -> DartsGenotype:
    """Any accepted spelling -> a validated DartsGenotype (see the module docstring)."""
    if isinstance(value, DartsGenotype):
        return value
    if isinstance(value, str):
        return _parse_string(value)
    if hasattr(value, "_asdict"):  # a DARTS Genotype namedtuple (before the tuple case: it is one)
        return _from_mapping(dict(value._asdict()))
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if isinstance(value, (list, tuple)):
        return _from_sequence(value)
    raise SpecError(
        f"malformed genotype: expected a Genotype string, a dict or [normal, reduce], got {type(value).__name__}"
    )


# --- identity --------------------------------------------------------------------------------------------
@lru_cache(maxsize=1 << 16)
def canonical_cell(pairs: Cell) -> Cell:
    """The lexicographically smallest relabelling of one cell, with each node's two pairs sorted.

    Intermediate nodes may be renumbered by any permutation under which every node still reads only
    lower-numbered states (another topological order of the same DAG); since the output concatenates
    all four nodes, such cells compute the same function up to channel order. Trying all (at most 24)
    permutations and keeping the smallest result is exact: isomorphic cells get equal answers.
    """
    nodes = [pairs[2 * k : 2 * k + 2] for k in range(N_NODES)]
    best: Cell | None = None
    for perm in itertools.permutations(range(2, 2 + N_NODES)):
        label = (0, 1, *perm)  # old state -> new state
        if any(label[source] >= label[2 + k] for k in range(N_NODES) for _, source in nodes[k]):
            continue
        relabelled: list[tuple[Pair, ...]] = [()] * N_NODES
        for k, node in enumerate(nodes):
            relabelled[label[2 + k] - 2] = tuple(sorted((op, label[source]) for op, source in node))
        flat = tuple(pair for node in relabelled for pair in node)
        if best is None or flat < best:
            best = flat
    assert best is not None  # the identity permutation is always valid
    return best


# --- encodings -------------------------------------------------------------------------------------------
def op_graph(arch: DartsGenotype) -> OpGraph:
    """Both cells with ops on nodes, the normal cell's output feeding the reduction cell's two inputs.

    Per cell: `<cell>:input` for states 0 and 1, one `<cell>:<op>` node per (op, source) pair reading its
    source state, `<cell>:add` for states 2..5 summing their two pairs, and `<cell>:concat` joining states
    2..5 (CONCAT). Labels carry the cell so a head tells a normal-cell op from a reduction-cell one."""
    ops: list[str] = []
    edges: list[tuple[int, int]] = []
    previous_out: int | None = None
    for name in CELLS:
        state = [len(ops), len(ops) + 1]
        ops += [f"{name}:input", f"{name}:input"]
        if previous_out is not None:
            edges += [(previous_out, state[0]), (previous_out, state[1])]
        for index in range(0, N_PAIRS, 2):
            add = len(ops) + 2
            for op, source in arch.cell(name)[index : index + 2]:
                edges += [(state[source], len(ops)), (len(ops), add)]
                ops.append(f"{name}:{op}")
            ops.append(f"{name}:add")
            state.append(add)
        previous_out = len(ops)
        ops.append(f"{name}:concat")
        edges += [(state[node], previous_out) for node in CONCAT]
    return OpGraph(tuple(ops), tuple(sorted(edges)))


def adjacency_encoding(arch: DartsGenotype) -> list[float]:
    """Per cell (normal, then reduce), per edge in EDGES order: one-hot over [absent, *OPS] (252 features)."""
    out = [0.0] * ADJACENCY_DIM
    for c, name in enumerate(CELLS):
        ops = {(source, 2 + index // 2): op for index, (op, source) in enumerate(arch.cell(name))}
        for e, edge in enumerate(EDGES):
            slot = 0 if edge not in ops else 1 + OPS.index(ops[edge])
            out[(c * len(EDGES) + e) * ADJACENCY_SLOTS + slot] = 1.0
    return out


def path_encoding(arch: DartsGenotype) -> list[float]:
    """BANANAS-style path counts, capped at 3 ops (1,596 features).

    Every intermediate node feeds the output, so each path from a cell input (state 0 or 1) to
    any node is an input->output path. Block order: cell (normal, reduce) x input (0, 1) x length
    (1, 2, 3) x op sequence in base 7 over LIVE_OPS; edges carrying `none` cut the path.
    """
    out = [0.0] * PATH_DIM
    base = len(LIVE_OPS)
    for c, name in enumerate(CELLS):
        readers: dict[int, list[tuple[int, int]]] = {}  # state -> [(node, live op index)]
        for index, (op, source) in enumerate(arch.cell(name)):
            if op != "none":
                readers.setdefault(source, []).append((2 + index // 2, LIVE_OPS.index(op)))
        for start in (0, 1):
            block = (c * 2 + start) * PATH_PER_INPUT
            stack = [(start, 0, 0)]  # (state, length so far, op sequence as a base-7 number)
            while stack:
                state, length, code = stack.pop()
                for node, op in readers.get(state, ()):
                    new_code = code * base + op
                    out[block + _PATH_LEN_OFFSETS[length] + new_code] += 1.0
                    if length + 1 < PATH_MAX_LEN:
                        stack.append((node, length + 1, new_code))
    return out


# --- rendering -------------------------------------------------------------------------------------------
_HELPERS = """\
class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_out),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_out),
        )

    def forward(self, x):
        return self.op(x)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, kernel_size=1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, kernel_size=1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return torch.zeros_like(x[:, :, ::self.stride, ::self.stride])"""

_NETWORK = '''\
class Network(nn.Module):
    """DARTS CIFAR network: 3x stem, cells with reductions at 1/3 and 2/3 of the depth, classifier."""

    def __init__(self, C=16, layers=8, num_classes={classes}):
        super().__init__()
        C_curr = 3 * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_curr, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in (layers // 3, 2 * layers // 3):
                C_curr *= 2
                cell = ReductionCell(C_prev_prev, C_prev, C_curr, reduction_prev)
                reduction_prev = True
            else:
                cell = NormalCell(C_prev_prev, C_prev, C_curr, reduction_prev)
                reduction_prev = False
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, 4 * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))'''

_RELU = "nn.ReLU(inplace=False)"


def _seq(layers: list[str]) -> str:
    return f"nn.Sequential({', '.join(layers)})"


def _factorized_inline(c_in: str, c_out: str) -> str:
    """FactorizedReduce from nn layers: two stride-2 1x1 branches, the second shifted by one pixel.

    Batch norm is per channel, so one BatchNorm2d(C) over the concatenation equals a BatchNorm2d(C // 2)
    per branch; ZeroPad2d((-1, 1, -1, 1)) drops the first row and column like `x[:, :, 1:, 1:]` (same
    output on even sizes). The forward concatenates the branches' outputs.
    """
    conv = f"nn.Conv2d({c_in}, {c_out} // 2, kernel_size=1, stride=2, bias=False)"
    bn = f"nn.BatchNorm2d({c_out} // 2)"
    return f"nn.ModuleList([{_seq([_RELU, conv, bn])}, {_seq([_RELU, 'nn.ZeroPad2d((-1, 1, -1, 1))', conv, bn])}])"


def _op_module(op: str, stride: int, primitives: str) -> str | None:
    """The module expression of one edge, or None when the inline spelling needs no module (`none`)."""
    if op == "max_pool_3x3":
        return f"nn.MaxPool2d(3, stride={stride}, padding=1)"
    if op == "avg_pool_3x3":
        return f"nn.AvgPool2d(3, stride={stride}, padding=1, count_include_pad=False)"
    if op == "skip_connect" and stride == 1:
        return "nn.Identity()"
    inline = primitives == "inline"
    if op == "skip_connect":
        return _factorized_inline("C", "C") if inline else "FactorizedReduce(C, C)"
    if op == "none":
        return None if inline else f"Zero({stride})"
    kernel = 3 if op.endswith("3x3") else 5
    if op.startswith("sep_conv"):
        padding = kernel // 2
        if not inline:
            return f"SepConv(C, C, {kernel}, {stride}, {padding})"
        return _seq(
            [
                _RELU,
                f"nn.Conv2d(C, C, {kernel}, stride={stride}, padding={padding}, groups=C, bias=False)",
                "nn.Conv2d(C, C, kernel_size=1, bias=False)",
                "nn.BatchNorm2d(C)",
                _RELU,
                f"nn.Conv2d(C, C, {kernel}, stride=1, padding={padding}, groups=C, bias=False)",
                "nn.Conv2d(C, C, kernel_size=1, bias=False)",
                "nn.BatchNorm2d(C)",
            ]
        )
    padding = kernel - 1  # dilation 2
    if not inline:
        return f"DilConv(C, C, {kernel}, {stride}, {padding}, 2)"
    return _seq(
        [
            _RELU,
            f"nn.Conv2d(C, C, {kernel}, stride={stride}, padding={padding}, dilation=2, groups=C, bias=False)",
            "nn.Conv2d(C, C, kernel_size=1, bias=False)",
            "nn.BatchNorm2d(C)",
        ]
    )


def _edge_term(op: str, stride: int, source: int, node: int, primitives: str) -> str:
    """What the forward adds for one edge."""
    state = f"s{source}"
    if primitives == "inline":
        if op == "none":
            return f"torch.zeros_like({state})" if stride == 1 else f"torch.zeros_like({state}[:, :, ::2, ::2])"
        if op == "skip_connect" and stride == 2:
            return f"torch.cat([branch({state}) for branch in self.edge_{source}_{node}], dim=1)"
    return f"self.edge_{source}_{node}({state})"


def render_cell_class(class_name: str, cell: Cell, reduction: bool, primitives: str) -> str:
    """One cell class: DARTS preprocessing, an attribute per edge, a sum per node, concat of nodes 2..5."""
    lines = [
        f"class {class_name}(nn.Module):",
        "    def __init__(self, C_prev_prev, C_prev, C, reduction_prev):",
        "        super().__init__()",
        "        if reduction_prev:",
    ]
    if primitives == "inline":
        lines += [
            f"            self.preprocess0 = {_factorized_inline('C_prev_prev', 'C')}",
            "        else:",
            "            self.preprocess0 = nn.ModuleList(["
            + _seq([_RELU, "nn.Conv2d(C_prev_prev, C, kernel_size=1, bias=False)", "nn.BatchNorm2d(C)"])
            + "])",
            "        self.preprocess1 = "
            + _seq([_RELU, "nn.Conv2d(C_prev, C, kernel_size=1, bias=False)", "nn.BatchNorm2d(C)"]),
        ]
    else:
        lines += [
            "            self.preprocess0 = FactorizedReduce(C_prev_prev, C)",
            "        else:",
            "            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)",
            "        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)",
        ]
    terms: dict[int, list[str]] = {}
    for index, (op, source) in enumerate(cell):
        node = 2 + index // 2
        stride = 2 if reduction and source < 2 else 1
        module = _op_module(op, stride, primitives)
        if module is not None:
            lines.append(f"        self.edge_{source}_{node} = {module}")
        terms.setdefault(node, []).append(_edge_term(op, stride, source, node, primitives))
    lines += ["", "    def forward(self, s0, s1):"]
    if primitives == "inline":  # preprocess0 is a list of branches whose outputs are concatenated
        lines.append("        s0 = torch.cat([branch(s0) for branch in self.preprocess0], dim=1)")
    else:
        lines.append("        s0 = self.preprocess0(s0)")
    lines.append("        s1 = self.preprocess1(s1)")
    for node in range(2, 2 + N_NODES):
        lines.append(f"        s{node} = {' + '.join(terms[node])}")
    lines.append(f"        return torch.cat([{', '.join(f's{n}' for n in CONCAT)}], dim=1)")
    return "\n".join(lines)


def render_darts(arch: DartsGenotype, primitives: str, context: str, dataset: str) -> str:
    """The full text: helpers (when `helper`), NormalCell, ReductionCell, and Network (when `backbone`)."""
    parts: list[str] = []
    if primitives == "helper":
        parts.append(_HELPERS)
    parts.append(render_cell_class("NormalCell", arch.normal, False, primitives))
    parts.append(render_cell_class("ReductionCell", arch.reduce, True, primitives))
    if context == "backbone":
        parts.append(_NETWORK.replace("{classes}", str(DATASET_CLASSES[dataset])))
    return "\n\n\n".join(parts) + "\n"


# --- the space -------------------------------------------------------------------------------------------
class DartsSpace(SearchSpace[DartsGenotype]):
    """DARTS / NAS-Bench-301 genotypes (normal + reduction cell) as a SearchSpace."""

    name = "darts"
    renderer_version = RENDERER_VERSION
    encodings = ("adjacency", "path")
    default_encodings = ("path",)
    render_choices = {
        "primitives": PRIMITIVES,
        "context": ("none", "backbone"),
        "dataset": tuple(DATASET_CLASSES),
    }
    description = (
        "DARTS / NAS-Bench-301 genotypes: \"Genotype(normal=[('sep_conv_3x3', 0), ...8 pairs], normal_concat=[2, 3, "
        "4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])\", a {normal, reduce} object, or NASLib's compact "
        "[[(source, op_index) x8], [...x8]]"
    )

    def parse(self, value: Any) -> DartsGenotype:
        return parse_genotype(value)

    def to_string(self, arch: DartsGenotype) -> str:
        return arch.to_string()

    def canonical_arch(self, arch: DartsGenotype) -> DartsGenotype:
        return DartsGenotype(canonical_cell(arch.normal), canonical_cell(arch.reduce))

    def canonical(self, arch: DartsGenotype) -> str:
        return self.canonical_arch(arch).to_string()

    def sample(self, rng: random.Random) -> DartsGenotype:
        """Like NB301's / NASLib's sampler: two distinct sources per node, each op uniform over the 7 live ops."""
        cells = []
        for _ in CELLS:
            pairs = []
            for node in range(2, 2 + N_NODES):
                for source in rng.sample(range(node), 2):
                    pairs.append((rng.choice(LIVE_OPS), source))
            cells.append(tuple(pairs))
        return DartsGenotype(cells[0], cells[1])

    def mutate(self, arch: DartsGenotype, rng: random.Random, edits: int = 1) -> DartsGenotype:
        """Change `edits` distinct edges (cell, pair), each its op or its source, so the result always differs."""
        slots = [(c, index) for c in range(len(CELLS)) for index in range(N_PAIRS)]
        if not 1 <= edits <= len(slots):
            raise ValueError(f"edits must be in 1..{len(slots)}, got {edits}")
        cells = [list(arch.normal), list(arch.reduce)]
        for c, index in rng.sample(slots, edits):
            pairs = cells[c]
            op, source = pairs[index]
            sources = _free_sources(pairs, index)
            if sources and rng.random() < 0.5:
                pairs[index] = (op, rng.choice(sources))
            else:
                pairs[index] = (rng.choice([o for o in LIVE_OPS if o != op]), source)
        return DartsGenotype(tuple(cells[0]), tuple(cells[1]))

    def neighbours(self, arch: DartsGenotype) -> list[DartsGenotype]:
        """Per cell, per pair: every other live op, then every other allowed source (ascending)."""
        found: dict[DartsGenotype, None] = {}
        for c in range(len(CELLS)):
            for index in range(N_PAIRS):
                cells = [list(arch.normal), list(arch.reduce)]
                op, source = cells[c][index]
                options = [(o, source) for o in LIVE_OPS if o != op]
                options += [(op, s) for s in _free_sources(cells[c], index)]
                for pair in options:
                    cells[c][index] = pair
                    found.setdefault(DartsGenotype(tuple(cells[0]), tuple(cells[1])), None)
        found.pop(arch, None)
        return list(found)

    def op_graph(self, arch: DartsGenotype) -> OpGraph:
        return op_graph(arch)

    def encode(self, arch: DartsGenotype, kind: str) -> list[float]:
        if kind == "adjacency":
            return adjacency_encoding(arch)
        if kind == "path":
            return path_encoding(arch)
        raise ValueError(f"unknown encoding {kind!r} for darts (expected one of {', '.join(self.encodings)})")

    def render(
        self,
        arch: DartsGenotype,
        *,
        primitives: str = "exclude_helper",
        context: str = "none",
        dataset: str = "cifar10",
    ) -> str:
        """NormalCell and ReductionCell classes, optionally the DARTS CIFAR Network (`backbone`)."""
        self.check_render_options(primitives=primitives, context=context, dataset=dataset)
        return render_darts(arch, primitives, context, dataset)

    def helper_source(self) -> str:
        return _HELPERS + "\n"

    def proxy_network(self) -> ProxyNetwork:
        """The DARTS search-phase network (C=16, 8 cells), CIFAR-10 input and classes; the evaluation network
        (C=36, 20 cells) is about 10x the work per proxy on a CPU."""
        return ProxyNetwork(
            {"primitives": "inline", "context": "backbone", "dataset": "cifar10"},
            "Network(C=16, layers=8)",
            (3, 32, 32),
            10,
        )

    def example_call(self, arch: DartsGenotype, context: str = "none") -> tuple[str, tuple]:
        """The reduction cell after a reduction: exercises FactorizedReduce preprocessing and stride-2 edges."""
        if context == "backbone":
            return "Network(C=8, layers=5)", (2, 3, 16, 16)
        return "ReductionCell(6, 12, 8, True)", ((2, 6, 16, 16), (2, 12, 8, 8))


def _free_sources(pairs: Sequence[Pair], index: int) -> list[int]:
    """Sources pair `index` could switch to: earlier states other than its own and its sibling's."""
    node = 2 + index // 2
    taken = {pairs[index][1], pairs[index ^ 1][1]}
    return [s for s in range(node) if s not in taken]
