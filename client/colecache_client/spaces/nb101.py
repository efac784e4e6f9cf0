"""NAS-Bench-101 cells (Ying et al. 2019): a DAG of at most 7 vertices, at most 9 edges.

Vertex 0 is `input`, the last vertex is `output`, every other vertex holds one of `OPS`. Edges go
from a lower to a higher vertex index (an upper-triangular 0/1 adjacency matrix), so a cell has no
cycles. As in the nasbench library's ModelSpec, vertices that are not on any input->output path are
pruned before anything else; a cell whose output cannot be reached from its input is refused. At most
7 vertices in the matrix as given (the space is defined on 7x7 matrices) and, as nasbench counts
them, at most 9 edges after pruning (NASLib's raw samples often hold more, the rest on dead vertices). `NB101Cell`
always holds the pruned cell.

Spellings accepted by `NB101Space.parse`:
  * a nasbench ModelSpec-style mapping `{"matrix": [[0, 1, ...], ...], "ops": ["input", ...,
    "output"]}` (also `module_adjacency` / `module_operations`, as the dataset's fixed statistics
    name them), or its JSON text; a `[matrix, ops]` pair; numpy arrays are read through `tolist()`;
  * NASLib's 56-tuple: the 49 entries of the 7x7 matrix row by row, then 7 op codes indexing
    `NASLIB_OPS`, as a list/tuple or its string form `"(0, 1, 1, ...)"`. The 500 keys of NASLib's
    zc_nasbench101.json are all full 7-vertex raw samples (output code last, dead vertices kept, up
    to 16 edges before pruning); a smaller cell padded at the end (output code at position p < 6
    followed by vertices without edges) is read as the first p + 1 vertices;
  * this space's own string (`to_string`): the matrix rows as bit strings joined by `/`, a `;`, then
    the op names joined by `,`, e.g. `0110/0001/0001/0000;input,conv3x3-bn-relu,maxpool3x3,output`
    (whitespace around the separators is ignored);
  * an `NB101Cell` (returned as is).

Identity: `canonical` is a Weisfeiler-Lehman style hash (sha256): every vertex starts from
(in-degree, out-degree, op), then for as many rounds as there are vertices each vertex label is
rehashed with the sorted labels of its in-neighbours and, separately, of its out-neighbours; the
cell hash covers the vertex and edge counts and the sorted final labels. `canonical_arch` is exact:
of all relabellings of the interior vertices that keep the matrix upper triangular (at most 5! =
120), the one with the smallest (matrix, ops). The two define the same classes on every cell tried
(about 97,000 classes reached by sampling and neighbours; the tests check a smaller sample); the
hash is what dedupe and cache keys use.

Search moves. An elementary edit is: change an interior op; toggle one edge between existing
vertices (the result is pruned and must stay valid); or add one vertex, wired from an existing vertex
u to a later vertex v (it enters just before v). The last is two edge flips on an unused row of the
7x7 matrix: a pruned cell keeps no dead vertices, so without it no edit could ever grow a cell and
searches would only shrink cells.

Encodings (fixed lengths):
  * `adjacency` (ADJACENCY_DIM = 36): the cell padded to 7 vertices (empty vertices inserted just
    before the output), the 21 upper-triangle bits row by row, then for each of the 5 interior slots
    a one-hot over `OPS` (all zero for an empty slot);
  * `path` (PATH_DIM = 364): the BANANAS path encoding, one count per input->output path type, a
    type being the sequence of interior ops along the path; lengths 0..5 take offsets
    0, 1, 4, 13, 40, 121 and a sequence's index is its ops' positions in `OPS` read as a base-3
    number, first op most significant.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from .base import PRIMITIVES, OpGraph, ProxyNetwork, SearchSpace, SpecError

INPUT = "input"
OUTPUT = "output"
OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
"""The interior op vocabulary, in nasbench's order; the encodings index this tuple."""

NASLIB_OPS: tuple[str, ...] = (INPUT, OUTPUT, "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")
"""What the 7 op codes of NASLib's 56-tuple index."""

MAX_VERTICES = 7
MAX_EDGES = 9
N_SLOTS = MAX_VERTICES * MAX_VERTICES + MAX_VERTICES
"""Length of NASLib's flat tuple: 49 matrix entries, then 7 op codes."""

RENDERER_VERSION = "nb101-pytorch/1"
"""Version of the templates below; part of every cache key, so bump it on any change to the text."""

_UPPER: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(MAX_VERTICES) for j in range(i + 1, MAX_VERTICES))
ADJACENCY_DIM = len(_UPPER) + (MAX_VERTICES - 2) * len(OPS)
_PATH_OFFSETS: tuple[int, ...] = tuple(sum(len(OPS) ** i for i in range(n)) for n in range(MAX_VERTICES - 1))
PATH_DIM = sum(len(OPS) ** n for n in range(MAX_VERTICES - 1))

DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}

Matrix = tuple[tuple[int, ...], ...]


# --- validation and pruning ---------------------------------------------------------------------------
def _normalise(matrix: Any, ops: Any) -> tuple[Matrix, tuple[str, ...]]:
    """Shape, entries, triangularity and op names of a raw (unpruned) cell; SpecError names the first fault."""
    if hasattr(matrix, "tolist"):
        matrix = matrix.tolist()
    if hasattr(ops, "tolist"):
        ops = ops.tolist()
    if isinstance(matrix, (str, bytes)) or not isinstance(matrix, Sequence):
        raise SpecError(f"matrix must be a list of rows, got {type(matrix).__name__}")
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
        raise SpecError(f"ops must be a list of op names, got {type(ops).__name__}")
    n = len(matrix)
    if n < 2:
        raise SpecError(f"{n} nodes, at least 2 (input and output)")
    if n > MAX_VERTICES:
        raise SpecError(f"{n} nodes, at most {MAX_VERTICES}")
    rows = []
    for i, row in enumerate(matrix):
        if hasattr(row, "tolist"):
            row = row.tolist()
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise SpecError(f"matrix row {i} must be a list of 0/1 entries, got {type(row).__name__}")
        if len(row) != n:
            raise SpecError(f"matrix row {i} has {len(row)} entries, expected {n} (the matrix must be square)")
        for j, bit in enumerate(row):
            if not isinstance(bit, int) or bit not in (0, 1):  # bool is an int: True/False are 1/0
                raise SpecError(f"matrix entry ({i}, {j}) is {bit!r}, expected 0 or 1")
        rows.append(tuple(int(bit) for bit in row))
    if len(ops) != n:
        raise SpecError(f"the matrix has {n} nodes but there are {len(ops)} ops")
    for i in range(n):
        for j in range(i + 1):
            if rows[i][j]:
                kind = "a self-loop" if i == j else "a back edge, so cycles could form"
                raise SpecError(
                    f"matrix is not upper triangular: entry ({i}, {j}) is 1 ({kind}; an edge must go "
                    "from a node to a later one)"
                )
    if ops[0] != INPUT:
        raise SpecError(f"node 0 must be {INPUT!r}, got {ops[0]!r}")
    if ops[-1] != OUTPUT:
        raise SpecError(f"the last node ({n - 1}) must be {OUTPUT!r}, got {ops[-1]!r}")
    for i in range(1, n - 1):
        op = ops[i]
        if op in (INPUT, OUTPUT):
            raise SpecError(f"node {i} is {op!r}: only node 0 is the input and only the last node the output")
        if op not in OPS:
            raise SpecError(f"unknown op {op!r} at node {i} (expected one of {', '.join(OPS)})")
    return tuple(rows), tuple(ops)


def _live(matrix: Matrix) -> list[int]:
    """Vertices on some input->output path, ascending; SpecError when the output is unreachable."""
    n = len(matrix)
    from_input = {0}
    for i in range(n):
        if i in from_input:
            from_input.update(j for j in range(i + 1, n) if matrix[i][j])
    if n - 1 not in from_input:
        raise SpecError("output not reachable from input")
    to_output = {n - 1}
    for i in range(n - 2, -1, -1):
        if any(matrix[i][j] for j in to_output):
            to_output.add(i)
    return sorted(from_input & to_output)


def _edge_count(matrix: Matrix) -> int:
    return sum(map(sum, matrix))


def _check_edges(matrix: Matrix, pruned: bool) -> None:
    edges = _edge_count(matrix)
    if edges > MAX_EDGES:
        note = " after pruning nodes off every input->output path" if pruned else ""
        raise SpecError(f"{edges} edges{note}, at most {MAX_EDGES}")


def build_cell(matrix: Any, ops: Any) -> NB101Cell:
    """Validate a raw cell, prune its dead vertices and check the edge limit; SpecError otherwise."""
    rows, names = _normalise(matrix, ops)
    keep = _live(rows)
    pruned = len(keep) < len(rows)
    if pruned:
        rows = tuple(tuple(rows[i][j] for j in keep) for i in keep)
        names = tuple(names[i] for i in keep)
    _check_edges(rows, pruned)
    return NB101Cell(rows, names)


@dataclass(frozen=True, slots=True)
class NB101Cell:
    """A pruned NB101 cell: n x n upper-triangular 0/1 matrix (2 <= n <= 7) and n op names.

    Constructing one directly validates it and refuses vertices off every input->output path
    (`build_cell` and `NB101Space.parse` prune them instead).
    """

    matrix: Matrix
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        rows, names = _normalise(self.matrix, self.ops)
        live = _live(rows)
        if len(live) < len(rows):
            dead = sorted(set(range(len(rows))) - set(live))
            raise SpecError(f"node {dead[0]} is not on any input->output path (parse() prunes such nodes)")
        _check_edges(rows, False)
        object.__setattr__(self, "matrix", rows)
        object.__setattr__(self, "ops", names)

    @property
    def n(self) -> int:
        """Number of vertices, input and output included."""
        return len(self.ops)

    def edges(self) -> list[tuple[int, int]]:
        """(source, target) pairs, row by row."""
        return [(i, j) for i, row in enumerate(self.matrix) for j, bit in enumerate(row) if bit]

    def to_string(self) -> str:
        rows = "/".join("".join(str(bit) for bit in row) for row in self.matrix)
        return f"{rows};{','.join(self.ops)}"

    def __str__(self) -> str:
        return self.to_string()


# --- spellings ----------------------------------------------------------------------------------------
def to_naslib(cell: NB101Cell) -> tuple[int, ...]:
    """NASLib's 56-tuple for `cell`: padded to 7 vertices with edgeless conv3x3 vertices before the output."""
    padded, ops = _padded(cell)
    flat = tuple(bit for row in padded for bit in row)
    codes = tuple(NASLIB_OPS.index(op if op else OPS[0]) for op in ops)
    return flat + codes


def _from_naslib(values: Sequence[Any]) -> NB101Cell:
    if len(values) != N_SLOTS:
        raise SpecError(
            f"a flat spec must be NASLib's {N_SLOTS}-tuple ({MAX_VERTICES * MAX_VERTICES} matrix entries "
            f"then {MAX_VERTICES} op codes), got {len(values)} entries"
        )
    flat, codes = list(values[: MAX_VERTICES * MAX_VERTICES]), list(values[MAX_VERTICES * MAX_VERTICES :])
    ops = []
    for node, code in enumerate(codes):
        if isinstance(code, bool) or not isinstance(code, int):
            raise SpecError(f"op code {code!r} at node {node} is not an integer 0..{len(NASLIB_OPS) - 1}")
        if not 0 <= code < len(NASLIB_OPS):
            legend = ", ".join(f"{i} {op}" for i, op in enumerate(NASLIB_OPS))
            raise SpecError(f"op code {code} at node {node} is out of range ({legend})")
        ops.append(NASLIB_OPS[code])
    matrix = [flat[i * MAX_VERTICES : (i + 1) * MAX_VERTICES] for i in range(MAX_VERTICES)]
    if OUTPUT in ops[:-1]:  # a smaller cell padded at the end: keep it when the padding has no edges
        end = ops.index(OUTPUT)
        padding = range(end + 1, MAX_VERTICES)
        if all(not matrix[i][j] and not matrix[j][i] for i in padding for j in range(MAX_VERTICES)):
            matrix = [row[: end + 1] for row in matrix[: end + 1]]
            ops = ops[: end + 1]
    return build_cell(matrix, ops)


_MAPPING_KEYS = (("matrix", "ops"), ("module_adjacency", "module_operations"))


def _from_mapping(value: Mapping[str, Any]) -> NB101Cell:
    keys = set(value)
    for matrix_key, ops_key in _MAPPING_KEYS:
        if matrix_key in keys or ops_key in keys:
            extra = sorted(str(k) for k in keys - {matrix_key, ops_key})
            if extra:
                raise SpecError(
                    f"unknown key(s) {', '.join(map(repr, extra))} (expected {matrix_key!r} and {ops_key!r})"
                )
            missing = [k for k in (matrix_key, ops_key) if k not in keys]
            if missing:
                raise SpecError(f"missing {missing[0]!r} (a cell needs {matrix_key!r} and {ops_key!r})")
            return build_cell(value[matrix_key], value[ops_key])
    raise SpecError(f"a cell mapping needs keys 'matrix' and 'ops', got {', '.join(map(repr, sorted(map(str, keys))))}")


def _from_sequence(value: Sequence[Any]) -> NB101Cell:
    if len(value) == 2 and all(not isinstance(v, (str, bytes)) and isinstance(v, Sequence) for v in value):
        matrix, ops = value
        if ops and all(isinstance(op, str) for op in ops):  # a (matrix, ops) pair
            return build_cell(matrix, ops)
    if value and all(isinstance(v, int) for v in value):
        return _from_naslib(value)
    raise SpecError(
        f"a list spec must be NASLib's {N_SLOTS}-tuple of integers or a [matrix, ops] pair, got {len(value)} items"
    )


def _from_own_string(text: str) -> NB101Cell:
    rows_text, sep, ops_text = text.partition(";")
    if not sep or ";" in ops_text:
        raise SpecError(
            f"cannot read {text!r}: expected 'ROWS;OPS' like '011/001/000;input,conv3x3-bn-relu,output', "
            "a NASLib tuple '(0, 1, ...)' or a JSON object with matrix and ops"
        )
    matrix = []
    for i, row in enumerate(rows_text.split("/")):
        row = row.strip()
        if not row or set(row) - {"0", "1"}:
            raise SpecError(f"matrix row {i} {row!r} must be a string of 0s and 1s")
        matrix.append([int(c) for c in row])
    ops = [op.strip() for op in ops_text.split(",")]
    return build_cell(matrix, ops)


@lru_cache(maxsize=1 << 14)
def _parse_string(text: str) -> NB101Cell:
    # Memoised: searches send the same cells again and again (errors are not cached).
    text = text.strip()
    if not text:
        raise SpecError("empty cell spec")
    if text[0] == "{":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"malformed JSON cell spec: {exc}") from None
        if not isinstance(value, Mapping):
            raise SpecError("a JSON cell spec must be an object with 'matrix' and 'ops'")
        return _from_mapping(value)
    if text[0] in "([":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise SpecError(f"malformed cell spec: {text[:80]!r} is not a list or tuple literal") from None
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise SpecError(f"malformed cell spec: {text[:80]!r} is not a list or tuple")
        return _from_sequence(value)
    return _from_own_string(text)


def parse_cell(value: Any) -> NB101Cell:
    """Any accepted spelling (see the module docstring) -> the pruned, validated cell."""
    if isinstance(value, NB101Cell):
        return value
    if isinstance(value, str):
        return _parse_string(value)
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return _from_sequence(value)
    raise SpecError(f"expected an NB101 cell spec (string, mapping or list), got {type(value).__name__}")


# --- identity -----------------------------------------------------------------------------------------
def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@lru_cache(maxsize=1 << 14)
def graph_hash(cell: NB101Cell) -> str:
    """Isomorphism-invariant hash of a cell (32 hex characters); see the module docstring."""
    n, m = cell.n, cell.matrix
    sources = [[i for i in range(n) if m[i][j]] for j in range(n)]
    targets = [[j for j in range(n) if m[i][j]] for i in range(n)]
    labels = [_digest(str(len(sources[v])), str(len(targets[v])), cell.ops[v]) for v in range(n)]
    for _ in range(n):
        labels = [
            _digest(
                labels[v],
                "in:" + ",".join(sorted(labels[u] for u in sources[v])),
                "out:" + ",".join(sorted(labels[w] for w in targets[v])),
            )
            for v in range(n)
        ]
    return _digest("nb101", str(n), str(_edge_count(m)), *sorted(labels))[:32]


@lru_cache(maxsize=1 << 14)
def canonical_cell(cell: NB101Cell) -> NB101Cell:
    """The smallest (matrix, ops) over relabellings of the interior vertices that keep edges pointing forward."""
    n, m, edges = cell.n, cell.matrix, cell.edges()
    best: tuple[Matrix, tuple[str, ...]] | None = None
    for interior in itertools.permutations(range(1, n - 1)):
        order = (0, *interior, n - 1)  # order[new] = old
        position = {old: new for new, old in enumerate(order)}
        if any(position[i] > position[j] for i, j in edges):
            continue
        key = (tuple(tuple(m[a][b] for b in order) for a in order), tuple(cell.ops[a] for a in order))
        if best is None or key < best:
            best = key
    assert best is not None  # the identity ordering always qualifies
    return cell if best == (cell.matrix, cell.ops) else NB101Cell(*best)


# --- search moves -------------------------------------------------------------------------------------
def _padded(cell: NB101Cell) -> tuple[Matrix, tuple[str | None, ...]]:
    """The cell on 7 vertices: empty vertices (op None, no edges) inserted just before the output."""
    n, pad = cell.n, MAX_VERTICES - cell.n
    index = [*range(n - 1), MAX_VERTICES - 1]  # old vertex -> padded vertex
    rows = [[0] * MAX_VERTICES for _ in range(MAX_VERTICES)]
    for i, j in cell.edges():
        rows[index[i]][index[j]] = 1
    ops: list[str | None] = [*cell.ops[:-1], *([None] * pad), OUTPUT]
    return tuple(map(tuple, rows)), tuple(ops)


def _try(matrix: Any, ops: Any) -> NB101Cell | None:
    try:
        return build_cell(matrix, ops)
    except SpecError:
        return None


@lru_cache(maxsize=256)  # small: each entry holds up to ~90 cells
def _moves(cell: NB101Cell) -> tuple[tuple[NB101Cell, ...], ...]:
    """Valid results of each kind of elementary edit: op changes, edge toggles, added vertices."""
    n, m, ops = cell.n, cell.matrix, cell.ops
    changes = []
    for v in range(1, n - 1):
        for op in OPS:
            if op != ops[v]:
                changes.append(NB101Cell(m, (*ops[:v], op, *ops[v + 1 :])))
    toggles = []
    for i in range(n - 1):
        for j in range(i + 1, n):
            rows = [list(row) for row in m]
            rows[i][j] ^= 1
            child = _try(rows, ops)
            if child is not None:
                toggles.append(child)
    grows = []
    if n < MAX_VERTICES and _edge_count(m) + 2 <= MAX_EDGES:
        for u in range(n - 1):
            for v in range(u + 1, n):
                # the new vertex takes index v; old vertices v.. move up by one
                old = [*range(v), None, *range(v, n)]
                rows = [[m[a][b] if a is not None and b is not None else 0 for b in old] for a in old]
                rows[u][v] = rows[v][v + 1] = 1
                for op in OPS:
                    child = _try(rows, (*ops[:v], op, *ops[v:]))
                    if child is not None:
                        grows.append(child)
    return tuple(changes), tuple(toggles), tuple(grows)


def sample_cell(rng: random.Random) -> NB101Cell:
    """nasbench-style: random 7x7 upper-triangular matrix and ops, redrawn until valid after pruning."""
    while True:
        rows = [[0] * MAX_VERTICES for _ in range(MAX_VERTICES)]
        for i, j in _UPPER:
            rows[i][j] = rng.randrange(2)
        ops = [INPUT, *(rng.choice(OPS) for _ in range(MAX_VERTICES - 2)), OUTPUT]
        cell = _try(rows, ops)
        if cell is not None:
            return cell


# --- encodings ----------------------------------------------------------------------------------------
def adjacency_encoding(cell: NB101Cell) -> list[float]:
    """21 upper-triangle bits of the 7-vertex padded matrix + 5 x 3 op one-hots (ADJACENCY_DIM = 36)."""
    rows, ops = _padded(cell)
    out = [float(rows[i][j]) for i, j in _UPPER]
    for v in range(1, MAX_VERTICES - 1):
        onehot = [0.0] * len(OPS)
        if ops[v] is not None:
            onehot[OPS.index(ops[v])] = 1.0
        out.extend(onehot)
    return out


def paths(cell: NB101Cell) -> list[tuple[str, ...]]:
    """The interior op sequence of every input->output path, in depth-first order."""
    n, m = cell.n, cell.matrix
    found: list[tuple[str, ...]] = []

    def walk(v: int, trail: tuple[str, ...]) -> None:
        for w in range(v + 1, n):
            if m[v][w]:
                if w == n - 1:
                    found.append(trail)
                else:
                    walk(w, (*trail, cell.ops[w]))

    walk(0, ())
    return found


def path_encoding(cell: NB101Cell) -> list[float]:
    """Counts of input->output paths by interior op sequence (PATH_DIM = 364); index scheme in the module doc."""
    out = [0.0] * PATH_DIM
    for trail in paths(cell):
        index = 0
        for op in trail:
            index = index * len(OPS) + OPS.index(op)
        out[_PATH_OFFSETS[len(trail)] + index] += 1.0
    return out


# --- rendering: cell -> PyTorch source text -------------------------------------------------------------
_HELPERS = """\
class ConvBnRelu(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Projection(ConvBnRelu):
    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, kernel_size=1)"""

_NETWORK = '''\
class Network(nn.Module):
    """NAS-Bench-101 skeleton: conv stem, 3 stacks of 3 cells, 2x2 max pooling and twice the width between stacks."""

    def __init__(self, stem_channels=128, num_classes={classes}):
        super().__init__()
        self.stem = {stem}
        layers = []
        in_channels = out_channels = stem_channels
        for stack in range(3):
            if stack > 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                out_channels *= 2
            for _ in range(3):
                layers.append(Cell(in_channels, out_channels))
                in_channels = out_channels
        self.cells = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(out_channels, num_classes)

    def forward(self, images):
        x = self.cells(self.stem(images))
        return self.classifier(self.pool(x).flatten(1))'''


def _conv_bn_relu(c_in: str, c_out: str, kernel: int, primitives: str) -> str:
    if primitives == "inline":
        padding = f", padding={kernel // 2}" if kernel > 1 else ""
        return (
            f"nn.Sequential(nn.Conv2d({c_in}, {c_out}, kernel_size={kernel}{padding}, bias=False), "
            f"nn.BatchNorm2d({c_out}), nn.ReLU())"
        )
    return f"ConvBnRelu({c_in}, {c_out}, kernel_size={kernel})"


def _projection(c_in: str, c_out: str, primitives: str) -> str:
    if primitives == "inline":
        return _conv_bn_relu(c_in, c_out, 1, primitives)
    return f"Projection({c_in}, {c_out})"


def _op_module(op: str, width: str, primitives: str) -> str:
    if op == "maxpool3x3":
        return "nn.MaxPool2d(kernel_size=3, stride=1, padding=1)"
    return _conv_bn_relu(width, width, 3 if op == "conv3x3-bn-relu" else 1, primitives)


def vertex_widths(cell: NB101Cell) -> tuple[list[int], dict[int, int]]:
    """(vertices concatenated into the output, interior vertex -> width rank), NB101's channel rule.

    The k vertices feeding the output split `out_channels`: the one of rank r (in vertex order) gets
    (out_channels + k - 1 - r) // k, so the first out_channels % k get one channel more. Any other
    interior vertex takes the widest width among its interior successors, i.e. their smallest rank.
    Wider inputs are truncated to a vertex's width; the cell input reaches a vertex through a 1x1
    projection.
    """
    out = cell.n - 1
    feeders = [v for v in range(1, out) if cell.matrix[v][out]]
    rank = {v: r for r, v in enumerate(feeders)}
    for v in range(out - 1, 0, -1):
        if v not in rank:
            rank[v] = min(rank[w] for w in range(v + 1, out) if cell.matrix[v][w])
    return feeders, rank


def _width_expr(r: int, k: int) -> str:
    if k == 1:
        return "out_channels"
    extra = k - 1 - r
    return f"(out_channels + {extra}) // {k}" if extra else f"out_channels // {k}"


def render_cell_class(cell: NB101Cell, primitives: str) -> str:
    """`class Cell(nn.Module)` taking (in_channels, out_channels), with NB101's width split and projections."""
    n, m, ops = cell.n, cell.matrix, cell.ops
    out = n - 1
    feeders, rank = vertex_widths(cell)
    k = len(feeders)
    init = [
        "class Cell(nn.Module):",
        "    def __init__(self, in_channels, out_channels):",
        "        super().__init__()",
    ]
    forward = ["", "    def forward(self, x):"]
    init += [f"        c{r + 1} = {_width_expr(r, k)}" for r in range(k)]
    truncated = sorted({rank[j] for i, j in cell.edges() if 0 < i and j < out and rank[i] != rank[j]})
    init += [f"        self.c{r + 1} = c{r + 1}" for r in truncated]
    for v in range(1, out):
        width = f"c{rank[v] + 1}"
        terms = []
        if m[0][v]:
            init.append(f"        self.proj{v} = {_projection('in_channels', width, primitives)}")
            terms.append(f"self.proj{v}(x)")
        init.append(f"        self.node{v} = {_op_module(ops[v], width, primitives)}")
        for u in range(1, v):
            if m[u][v]:
                terms.append(f"x{u}" if rank[u] == rank[v] else f"x{u}[:, :self.{width}]")
        forward.append(f"        x{v} = self.node{v}({' + '.join(terms)})")
    if k == 0:
        result = "self.proj_out(x)"
    else:
        result = f"x{feeders[0]}" if k == 1 else f"torch.cat([{', '.join(f'x{v}' for v in feeders)}], dim=1)"
        if m[0][out]:
            result += " + self.proj_out(x)"
    if m[0][out]:
        init.append(f"        self.proj_out = {_projection('in_channels', 'out_channels', primitives)}")
    forward.append(f"        return {result}")
    return "\n".join(init + forward)


def render_nb101(cell: NB101Cell, primitives: str, context: str, dataset: str) -> str:
    """The full text for one cell: primitives x context x dataset (see NB101Space.render)."""
    parts: list[str] = []
    if primitives == "helper":
        parts.append(_HELPERS)
    parts.append(render_cell_class(cell, primitives))
    if context == "backbone":
        stem = _conv_bn_relu("3", "stem_channels", 3, primitives)
        parts.append(_NETWORK.replace("{classes}", str(DATASET_CLASSES[dataset])).replace("{stem}", stem))
    return "\n\n\n".join(parts) + "\n"


class NB101Space(SearchSpace[NB101Cell]):
    """NAS-Bench-101 as a SearchSpace: 423,624 cells up to isomorphism (not enumerated here)."""

    name = "nb101"
    renderer_version = RENDERER_VERSION
    encodings = ("adjacency", "path")
    default_encodings = ("path",)
    render_choices: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "primitives": PRIMITIVES,
        "context": ("none", "backbone"),
        "dataset": tuple(DATASET_CLASSES),
    }
    description = (
        "NAS-Bench-101 cells: 'ROWS;OPS' like '0110/0001/0001/0000;input,conv3x3-bn-relu,maxpool3x3,output', "
        "{'matrix': [[...]], 'ops': [...]}, or NASLib's 56-tuple (7x7 matrix row-major + 7 op codes)"
    )

    def parse(self, value: Any) -> NB101Cell:
        return parse_cell(value)

    def to_string(self, arch: NB101Cell) -> str:
        return arch.to_string()

    def canonical(self, arch: NB101Cell) -> str:
        return graph_hash(arch)

    def canonical_arch(self, arch: NB101Cell) -> NB101Cell:
        return canonical_cell(arch)

    def sample(self, rng: random.Random) -> NB101Cell:
        return sample_cell(rng)

    def mutate(self, arch: NB101Cell, rng: random.Random, edits: int = 1) -> NB101Cell:
        """`edits` successive elementary edits (kind drawn first, then the edit), redrawn until the result differs."""
        if edits < 1:
            raise ValueError(f"edits must be at least 1, got {edits}")
        for _ in range(64):
            child = arch
            for _ in range(edits):
                kinds = [moves for moves in _moves(child) if moves]
                child = rng.choice(rng.choice(kinds))
            if child != arch:
                return child
        raise ValueError(f"no {edits} edit(s) of {arch.to_string()} give a different cell")  # pragma: no cover

    def neighbours(self, arch: NB101Cell) -> list[NB101Cell]:
        """Op changes, then edge toggles, then added vertices; exact duplicates and `arch` itself dropped."""
        seen = {arch}
        out = []
        for moves in _moves(arch):
            for child in moves:
                if child not in seen:
                    seen.add(child)
                    out.append(child)
        return out

    def encode(self, arch: NB101Cell, kind: str) -> list[float]:
        if kind == "adjacency":
            return adjacency_encoding(arch)
        if kind == "path":
            return path_encoding(arch)
        return super().encode(arch, kind)

    def op_graph(self, arch: NB101Cell) -> OpGraph:
        """The pruned cell as it is: ops on vertices (`input`, the interior ops, `output`), its matrix's edges."""
        return OpGraph(arch.ops, tuple(arch.edges()))

    def render(
        self, arch: NB101Cell, *, primitives: str = "exclude_helper", context: str = "none", dataset: str = "cifar10"
    ) -> str:
        """`class Cell(nn.Module)` (in_channels, out_channels), optionally with the helpers (`helper`) or
        written from torch.nn layers (`inline`), and NB101's macro `Network` (`backbone`)."""
        self.check_render_options(primitives=primitives, context=context, dataset=dataset)
        return render_nb101(arch, primitives, context, dataset)

    def helper_source(self) -> str:
        return _HELPERS + "\n"

    def proxy_network(self) -> ProxyNetwork:
        """NAS-Bench-101's network at a 16-channel stem (NB101 trains 128; the 8x narrower one is ~60x
        cheaper to score on a CPU and keeps the cell structure), CIFAR-10 input and classes."""
        return ProxyNetwork(
            {"primitives": "inline", "context": "backbone", "dataset": "cifar10"},
            "Network(stem_channels=16)",
            (3, 32, 32),
            10,
        )

    def example_call(self, arch: NB101Cell, context: str = "none") -> tuple[str, tuple]:
        if context == "backbone":
            return "Network(stem_channels=16)", (2, 3, 32, 32)
        return "Cell(8, 16)", (2, 8, 8, 8)
