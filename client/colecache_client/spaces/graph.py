"""Generic DAGs written as JSON: a search space for architectures nobody has named yet.

Spec (a JSON object, or its text)::

    {"nodes": [{"id": "in", "op": "input"},
               {"id": "c1", "op": "Conv2d", "params": {"kernel_size": 3, "padding": 1}},
               {"id": "r", "op": "ReLU"},
               {"id": "m", "op": "MyFancyBlock", "params": {"width": 2}},
               {"id": "out", "op": "output", "merge": "concat"}],
     "edges": [["in", "c1"], ["c1", "r"], ["in", "m"], ["r", "out"], ["m", "out"]]}

- `id`: a non-empty string (at most 64 characters) or an integer, unique. Ids name nodes in the
  spec only; the rendered code never contains them.
- `op`: exactly one `input` and one `output` node (no params); every other op is a class name
  (`[A-Z][A-Za-z0-9_]*`, not a Python builtin, not `Net`). Names in `TORCH_NN_LAYERS` render as
  `nn.<Name>(...)`, any other name as a call to a helper class `<Name>(...)` the user supplies.
  Class names only, so a spec can call a torch.nn layer or a helper, never `open` or `eval`.
- `params` (optional): keyword arguments; names are ASCII identifiers, values JSON scalars (finite
  numbers, booleans, null, strings of `[A-Za-z0-9_.-]`) or lists of them (two levels deep at most),
  rendered with `repr` (lists as tuples), so no value can become code.
- `merge` (optional): how a node with several inputs combines them, `sum` (default) or `concat`
  (`torch.cat` on dim 1, inputs in node-list order); dropped on nodes with a single input.
- `edges`: `[source_id, target_id]` pairs; duplicates, self-loops, cycles, edges into `input` or
  out of `output` are refused, as are more than 64 nodes or 256 edges.

Nodes not on any input->output path are pruned (as NB101 does), so a spec with dead branches is
accepted and means the graph without them; the output must be reachable from the input.

Channel arguments: a layer with a Lazy variant (conv, transposed conv, linear, batch and instance
norm) renders as the eager layer when params give its input size (`in_channels`, `in_features`,
`num_features`), the output size defaulting to `DEFAULT_WIDTH` (16); without it, as the Lazy
layer (`nn.LazyConv2d(out_channels, ...)`, `nn.LazyLinear`, `nn.LazyBatchNorm2d`). Other layers
take their arguments from params as written.

Identity: `canonical` is `to_string(canonical_arch(arch))`, the graph relabelled in a canonical
node order (ids `n0`, `n1`, ...; input first, output last, topologically sorted). The order comes
from colour refinement (1-WL over in- and out-neighbours, seeded with each node's depth and
op/params/merge), then an exact individualisation-refinement search over the remaining ties that
keeps the ordering with the smallest sorted edge list, so graphs 1-WL cannot tell apart are still
told apart exactly. Twins (same op, same sources, same targets) are interchangeable and searched as
one. The search tree has at most `SEARCH_CAP` (2,000) nodes; past that (highly symmetric graphs,
e.g. seven or more identical parallel chains) the order follows one deterministic path (the first
tied node in list order): the canonical string then still never merges non-isomorphic graphs, but
isomorphic ones may be kept apart. Concat inputs are joined in node order, so graphs equal up to
that order share a class (their functions differ by a channel permutation).
"""

from __future__ import annotations

import builtins
import json
import keyword
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .base import PRIMITIVES, OpGraph, SearchSpace, SpecError

RENDERER_VERSION = "graph-pytorch/1"
"""Version of the templates below; part of every cache key, so bump it on any change to the text."""

MAX_NODES = 64
MAX_EDGES = 256
MAX_PARAMS = 32
MAX_LIST = 16
MAX_SPEC_CHARS = 200_000
DEFAULT_WIDTH = 16
"""Output width of channel-bearing layers whose params do not give one; also the sampled width."""

SEARCH_CAP = 2_000
"""Most nodes (refinements) the exact canonical search tree may have (well under a second at 64 nodes);
its size depends on the graph only up to isomorphism, so a graph and its relabellings all stay under or all go over."""

MAX_NEIGHBOURS = 1024

NodeId = str | int

TORCH_NN_LAYERS: tuple[str, ...] = (
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AlphaDropout",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "CELU",
    "ChannelShuffle",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "ELU",
    "Flatten",
    "GELU",
    "GLU",
    "GroupNorm",
    "Hardshrink",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "LogSigmoid",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Mish",
    "PReLU",
    "PixelShuffle",
    "PixelUnshuffle",
    "RMSNorm",
    "ReLU",
    "ReLU6",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "SELU",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softmax2d",
    "Softmin",
    "Softplus",
    "Softshrink",
    "Softsign",
    "Tanh",
    "Tanhshrink",
    "Threshold",
    "Unflatten",
    "Upsample",
    "UpsamplingBilinear2d",
    "UpsamplingNearest2d",
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
)
"""torch.nn layers that map one tensor to one tensor (layers returning tuples, such as
MultiheadAttention or LSTM, are left out: such a name is treated as a helper)."""

_CHANNEL_ARGS: dict[str, tuple[str, str | None]] = {
    **{f"Conv{d}d": ("in_channels", "out_channels") for d in (1, 2, 3)},
    **{f"ConvTranspose{d}d": ("in_channels", "out_channels") for d in (1, 2, 3)},
    "Linear": ("in_features", "out_features"),
    **{f"BatchNorm{d}d": ("num_features", None) for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": ("num_features", None) for d in (1, 2, 3)},
}
"""Layers with a Lazy variant: (input-size argument, output-size argument or None)."""

_CONV3 = {"in_channels": DEFAULT_WIDTH, "out_channels": DEFAULT_WIDTH, "kernel_size": 3, "padding": 1}
_POOL = {"kernel_size": 3, "stride": 1, "padding": 1}
VOCABULARY: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Conv2d", _CONV3),
    ("Conv2d", {"in_channels": DEFAULT_WIDTH, "out_channels": DEFAULT_WIDTH, "kernel_size": 1}),
    ("BatchNorm2d", {"num_features": DEFAULT_WIDTH}),
    ("ReLU", {}),
    ("MaxPool2d", _POOL),
    ("AvgPool2d", _POOL),
    ("Identity", {}),
)
"""The ops `sample`, `mutate` and `neighbours` use: each keeps 16 channels and the resolution."""

ENCODED_OPS: tuple[str, ...] = ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d", "Identity")
OPS_DIM = len(ENCODED_OPS) + 1 + 3
"""'ops' encoding: a count per name above, one for any other op, then op nodes, edges, depth."""

_IO = ("input", "output")
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]{0,63}")
_SAFE_STRING = re.compile(r"[A-Za-z0-9_.\-]{0,64}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED = frozenset(dir(builtins)) | {"Net"}
_NODE_FIELDS = ("id", "op", "params", "merge")
_MERGES = ("sum", "concat")


@dataclass(frozen=True, slots=True)
class Node:
    """One node. `params` are sorted (name, compact JSON text) pairs: the text keeps 1, 1.0 and true
    apart, which Python's == (and so the dataclass's hash) would not."""

    id: NodeId
    op: str
    params: tuple[tuple[str, str], ...] = ()
    merge: str = "sum"

    def kwargs(self) -> dict[str, Any]:
        return {name: json.loads(text) for name, text in self.params}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "op": self.op}
        if self.params:
            out["params"] = self.kwargs()
        if self.merge != "sum":
            out["merge"] = self.merge
        return out


@dataclass(frozen=True, slots=True)
class Graph:
    """A validated DAG: nodes in spec order, edges as sorted (source, target) indices into `nodes`."""

    nodes: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, Any]:
        ids = [node.id for node in self.nodes]
        return {"nodes": [node.to_dict() for node in self.nodes], "edges": [[ids[s], ids[t]] for s, t in self.edges]}

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


# --- parsing and validation ----------------------------------------------------------------------
def _where(index: int, node_id: Any = None) -> str:
    return f"node {index}" if node_id is None else f"node {index} ({node_id!r})"


def _check_id(value: Any, where: str) -> NodeId:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SpecError(f"{where}: an id is a string or an integer, got {type(value).__name__}")
    if isinstance(value, str) and not (0 < len(value) <= 64 and value.isprintable()):
        raise SpecError(f"{where}: id {value[:80]!r} must be 1-64 printable characters")
    return value


def _check_op(op: Any, where: str) -> str:
    if not isinstance(op, str):
        raise SpecError(f"{where}: op must be a string, got {type(op).__name__}")
    if op in _IO:
        return op
    if not _CLASS_NAME.fullmatch(op):
        raise SpecError(
            f"{where}: op {op[:80]!r} is not a class name ([A-Z][A-Za-z0-9_]*, at most 64 characters) "
            "nor 'input'/'output'"
        )
    if op in _RESERVED:
        raise SpecError(f"{where}: op {op!r} is a Python builtin or reserved name, not a layer")
    return op


def _check_value(value: Any, where: str, depth: int = 0) -> None:
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(f"{where}: {value!r} is not a finite number")
        return
    if isinstance(value, str):
        if not _SAFE_STRING.fullmatch(value):
            raise SpecError(f"{where}: string {value[:80]!r} may only hold letters, digits, '_', '.', '-' (64 at most)")
        return
    if isinstance(value, (list, tuple)):
        if depth >= 2:
            raise SpecError(f"{where}: lists nest two levels deep at most")
        if len(value) > MAX_LIST:
            raise SpecError(f"{where}: lists hold {MAX_LIST} items at most, got {len(value)}")
        for item in value:
            _check_value(item, where, depth + 1)
        return
    raise SpecError(f"{where}: a value is a JSON scalar or list, got {type(value).__name__}")


def _check_params(params: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(params, Mapping):
        raise SpecError(f"{where}: params must be an object, got {type(params).__name__}")
    if len(params) > MAX_PARAMS:
        raise SpecError(f"{where}: {len(params)} params, at most {MAX_PARAMS}")
    out = []
    for name, value in params.items():
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name) or keyword.iskeyword(name):
            raise SpecError(f"{where}: param name {str(name)[:80]!r} is not an ASCII Python identifier")
        _check_value(value, f"{where} param {name!r}")
        out.append((name, json.dumps(value, separators=(",", ":"))))
    return tuple(sorted(out))


def _parse_node(index: int, item: Any) -> Node:
    if not isinstance(item, Mapping):
        raise SpecError(f"{_where(index)}: expected an object with 'id' and 'op', got {type(item).__name__}")
    for field in item:
        if field not in _NODE_FIELDS:
            raise SpecError(f"{_where(index)}: unknown field {str(field)[:80]!r} (expected {', '.join(_NODE_FIELDS)})")
    for field in ("id", "op"):
        if field not in item:
            raise SpecError(f"{_where(index)}: missing field {field!r}")
    node_id = _check_id(item["id"], _where(index))
    where = _where(index, node_id)
    op = _check_op(item["op"], where)
    params = _check_params(item.get("params", {}), where)
    if op in _IO and params:
        raise SpecError(f"{where}: the {op} node takes no params")
    merge = item.get("merge", "sum")
    if merge not in _MERGES:
        raise SpecError(f"{where}: merge {str(merge)[:80]!r} must be 'sum' or 'concat'")
    return Node(node_id, op, params, merge)


def parse_spec(spec: Any) -> Graph:
    """Validate a spec (dict, or its JSON text) into a Graph; SpecError names the node or edge index."""
    if isinstance(spec, str):
        if len(spec) > MAX_SPEC_CHARS:
            raise SpecError(f"graph spec is {len(spec)} characters, at most {MAX_SPEC_CHARS}")
        try:
            spec = json.loads(spec, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise SpecError(f"graph spec is not valid JSON: {exc}") from None
    if not isinstance(spec, Mapping):
        raise SpecError(f"a graph spec is an object with 'nodes' and 'edges', got {type(spec).__name__}")
    for field in spec:
        if field not in ("nodes", "edges"):
            raise SpecError(f"unknown field {str(field)[:80]!r} in graph spec (expected nodes, edges)")
    for field in ("nodes", "edges"):
        if field not in spec:
            raise SpecError(f"graph spec is missing {field!r}")
        if not isinstance(spec[field], (list, tuple)):
            raise SpecError(f"{field!r} must be a list, got {type(spec[field]).__name__}")
    raw_nodes, raw_edges = spec["nodes"], spec["edges"]
    if len(raw_nodes) > MAX_NODES:
        raise SpecError(f"{len(raw_nodes)} nodes, at most {MAX_NODES}")
    if len(raw_edges) > MAX_EDGES:
        raise SpecError(f"{len(raw_edges)} edges, at most {MAX_EDGES}")
    nodes: list[Node] = []
    index: dict[NodeId, int] = {}
    for i, item in enumerate(raw_nodes):
        node = _parse_node(i, item)
        if node.id in index:
            raise SpecError(f"{_where(i, node.id)}: duplicate id (first used by node {index[node.id]})")
        index[node.id] = i
        nodes.append(node)
    for op in _IO:
        found = [i for i, node in enumerate(nodes) if node.op == op]
        if len(found) != 1:
            where = f" (nodes {', '.join(map(str, found))})" if found else ""
            raise SpecError(f"a graph needs exactly one {op!r} node, got {len(found)}{where}")
    edges: list[tuple[int, int]] = []
    seen: dict[tuple[int, int], int] = {}
    for j, item in enumerate(raw_edges):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise SpecError(f"edge {j}: expected [source_id, target_id], got {str(item)[:80]}")
        pair = []
        for end in item:
            _check_id(end, f"edge {j}")
            if end not in index:
                raise SpecError(f"edge {j}: unknown node id {end!r}")
            pair.append(index[end])
        s, t = pair
        if s == t:
            raise SpecError(f"edge {j}: self-loop on node {s} ({nodes[s].id!r})")
        if (s, t) in seen:
            raise SpecError(f"edge {j}: duplicates edge {seen[s, t]} ({nodes[s].id!r} -> {nodes[t].id!r})")
        if nodes[t].op == "input":
            raise SpecError(f"edge {j}: enters the input node {nodes[t].id!r}")
        if nodes[s].op == "output":
            raise SpecError(f"edge {j}: leaves the output node {nodes[s].id!r}")
        seen[s, t] = j
        edges.append((s, t))
    return _finish(nodes, edges)


def _refuse_constant(name: str) -> Any:
    raise SpecError(f"graph spec holds {name}, not a finite number")


def _finish(nodes: list[Node], edges: list[tuple[int, int]]) -> Graph:
    """Check acyclicity and reachability, prune nodes off every input->output path, normalise merges."""
    n = len(nodes)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, t in edges:
        succs[s].append(t)
        preds[t].append(s)
    indegree = [len(p) for p in preds]
    ready = [v for v in range(n) if indegree[v] == 0]
    done = 0
    while ready:
        v = ready.pop()
        done += 1
        for w in succs[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
    if done < n:
        # Every unfinished node has an unfinished predecessor: walk back until a node repeats.
        v = min(w for w in range(n) if indegree[w] > 0)
        walk: list[int] = []
        while v not in walk:
            walk.append(v)
            v = next(u for u in preds[v] if indegree[u] > 0)
        cycle = walk[walk.index(v) :][::-1]
        first = cycle.index(min(cycle))
        cycle = cycle[first:] + cycle[:first]  # start at the earliest listed node
        path = " -> ".join(repr(nodes[u].id) for u in [*cycle, cycle[0]])
        raise SpecError(f"cycle through node {cycle[0]} ({nodes[cycle[0]].id!r}): {path}")
    source = next(i for i, node in enumerate(nodes) if node.op == "input")
    sink = next(i for i, node in enumerate(nodes) if node.op == "output")
    forward, backward = _reach(source, succs), _reach(sink, preds)
    if sink not in forward:
        raise SpecError(f"output node {nodes[sink].id!r} is not reachable from input node {nodes[source].id!r}")
    keep = [v for v in range(n) if v in forward and v in backward]
    new = {v: i for i, v in enumerate(keep)}
    kept_edges = sorted((new[s], new[t]) for s, t in edges if s in new and t in new)
    fan_in = [0] * len(keep)
    for _, t in kept_edges:
        fan_in[t] += 1
    kept_nodes = []
    for i, v in enumerate(keep):
        node = nodes[v]
        if node.merge != "sum" and fan_in[i] < 2:
            node = Node(node.id, node.op, node.params, "sum")
        kept_nodes.append(node)
    return Graph(tuple(kept_nodes), tuple(kept_edges))


def _reach(start: int, neighbours: list[list[int]]) -> set[int]:
    seen = {start}
    stack = [start]
    while stack:
        for w in neighbours[stack.pop()]:
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


@dataclass(frozen=True)
class _Topology:
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    """Topological order, ties broken by list index."""
    depth: tuple[int, ...]
    """Edges on the longest path from the input."""
    source: int
    sink: int


@lru_cache(maxsize=4096)
def topology(graph: Graph) -> _Topology:
    n = len(graph.nodes)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, t in graph.edges:
        succs[s].append(t)
        preds[t].append(s)
    indegree = [len(p) for p in preds]
    ready = sorted(v for v in range(n) if indegree[v] == 0)
    order: list[int] = []
    while ready:
        v = ready.pop(0)
        order.append(v)
        for w in succs[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
        ready.sort()
    depth = [0] * n
    for v in order:
        for w in succs[v]:
            depth[w] = max(depth[w], depth[v] + 1)
    source = next(i for i, node in enumerate(graph.nodes) if node.op == "input")
    sink = next(i for i, node in enumerate(graph.nodes) if node.op == "output")
    return _Topology(
        tuple(tuple(p) for p in preds), tuple(tuple(s) for s in succs), tuple(order), tuple(depth), source, sink
    )


# --- canonical form ------------------------------------------------------------------------------
def _ranks(keys: list) -> list[int]:
    table = {key: rank for rank, key in enumerate(sorted(set(keys)))}
    return [table[key] for key in keys]


def _refine(colours: list[int], preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """1-WL colour refinement over in- and out-neighbours; new colours keep the old order (ranks)."""
    count = len(set(colours))
    nodes = range(len(colours))
    while True:
        colour = colours.__getitem__
        keys = [(colours[v], *sorted(map(colour, preds[v])), -1, *sorted(map(colour, succs[v]))) for v in nodes]
        colours = _ranks(keys)
        new_count = len(set(colours))
        if new_count == count:
            return colours
        count = new_count


def _target_cell(colours: list[int]) -> list[int]:
    """Members of the first (lowest-colour) cell with more than one node, in list order; [] if discrete."""
    sizes: dict[int, int] = {}
    for c in colours:
        sizes[c] = sizes.get(c, 0) + 1
    tied = [c for c, size in sizes.items() if size > 1]
    if not tied:
        return []
    target = min(tied)
    return [v for v, c in enumerate(colours) if c == target]


def _individualise(colours: list[int], v: int) -> list[int]:
    """Give `v` its own colour just before the rest of its cell."""
    mine = colours[v]
    return [2 * c + (1 if c == mine and u != v else 0) for u, c in enumerate(colours)]


class _OverBudget(Exception):
    pass


@lru_cache(maxsize=4096)
def canonical_order(graph: Graph) -> tuple[int, ...]:
    """Node indices in canonical order (input first, output last, topological); see the module docstring."""
    topo = topology(graph)
    n = len(graph.nodes)
    # Twins (same op, sources and targets) are interchangeable: search over their classes.
    twin_of: dict[tuple, int] = {}
    classes: list[list[int]] = []
    for v in range(n):
        node = graph.nodes[v]
        key = (node.op, node.params, node.merge, tuple(sorted(topo.preds[v])), tuple(sorted(topo.succs[v])))
        if key not in twin_of:
            twin_of[key] = len(classes)
            classes.append([])
        classes[twin_of[key]].append(v)
    member = {v: k for k, vs in enumerate(classes) for v in vs}
    m = len(classes)
    preds = [sorted({member[u] for u in topo.preds[vs[0]]}) for vs in classes]
    succs = [sorted({member[w] for w in topo.succs[vs[0]]}) for vs in classes]
    edges = sorted({(member[s], member[t]) for s, t in graph.edges})
    seeds = []
    for vs in classes:
        node = graph.nodes[vs[0]]
        seeds.append((topo.depth[vs[0]], node.op, node.params, node.merge, len(vs)))
    colours = _refine(_ranks(seeds), preds, succs)

    best: list[Any] = [None, None]
    budget = [SEARCH_CAP]

    def search(current: list[int]) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _OverBudget
        cell = _target_cell(current)
        if not cell:
            key = tuple(sorted((current[s], current[t]) for s, t in edges))
            if best[0] is None or key < best[0]:
                best[0], best[1] = key, current
            return
        for v in cell:
            search(_refine(_individualise(current, v), preds, succs))

    try:
        search(colours)
        colours = best[1]
    except _OverBudget:
        # Too many ties to search: one deterministic path, exact but not isomorphism-invariant.
        while cell := _target_cell(colours):
            colours = _refine(_individualise(colours, cell[0]), preds, succs)
    by_class = sorted(range(m), key=colours.__getitem__)
    return tuple(v for k in by_class for v in classes[k])


def relabel(graph: Graph) -> Graph:
    """The canonical representative: nodes in canonical order, ids n0, n1, ..."""
    order = canonical_order(graph)
    position = {v: i for i, v in enumerate(order)}
    nodes = tuple(
        Node(f"n{i}", graph.nodes[v].op, graph.nodes[v].params, graph.nodes[v].merge) for i, v in enumerate(order)
    )
    edges = tuple(sorted((position[s], position[t]) for s, t in graph.edges))
    return Graph(nodes, edges)


# --- rendering -----------------------------------------------------------------------------------
def _literal(value: Any) -> str:
    if isinstance(value, list):
        return repr(tuple(_as_tuple(item) for item in value))
    return repr(value)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(item) for item in value) if isinstance(value, list) else value


def _call(node: Node) -> str:
    """The constructor call for one op node (torch.nn layers spelled `nn.X`, others as given)."""
    kwargs = node.kwargs()
    positional: list[str] = []
    name = node.op
    if node.op in _CHANNEL_ARGS:
        in_arg, out_arg = _CHANNEL_ARGS[node.op]
        if in_arg in kwargs:
            positional.append(_literal(kwargs.pop(in_arg)))
        else:
            name = "Lazy" + node.op
        if out_arg is not None:
            positional.append(_literal(kwargs.pop(out_arg, DEFAULT_WIDTH)))
    args = positional + [f"{key}={_literal(value)}" for key, value in sorted(kwargs.items())]
    prefix = "nn." if node.op in TORCH_NN_LAYERS else ""
    return f"{prefix}{name}({', '.join(args)})"


def _helper_stub(name: str) -> str:
    return (
        f"class {name}(nn.Module):\n"
        f'    """Placeholder for the op {name}: its definition is not part of the graph spec; passes x through."""\n'
        "\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__()\n"
        "\n"
        "    def forward(self, x):\n"
        "        return x"
    )


def render_graph(graph: Graph, primitives: str) -> str:
    """`class Net(nn.Module)`: one attribute per op node, one line per node in topological order."""
    topo = topology(graph)
    unknown = sorted({n.op for n in graph.nodes if n.op not in _IO and n.op not in TORCH_NN_LAYERS})
    parts = [_helper_stub(name) for name in unknown] if primitives == "helper" else []
    lines = ["class Net(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    ops = [v for v in topo.order if graph.nodes[v].op not in _IO]
    for v in ops:
        node = graph.nodes[v]
        if primitives == "inline" and node.op in unknown:
            lines.append(f"        self.n{v} = nn.Identity()  # placeholder for {_call(node)}")
        else:
            lines.append(f"        self.n{v} = {_call(node)}")
    if not ops:
        lines.append("        pass")
    lines += ["", "    def forward(self, x):"]

    def merged(v: int) -> str:
        terms = ["x" if u == topo.source else f"x{u}" for u in sorted(topo.preds[v])]
        if len(terms) == 1:
            return terms[0]
        if graph.nodes[v].merge == "concat":
            return f"torch.cat([{', '.join(terms)}], dim=1)"
        return " + ".join(terms)

    for v in ops:
        lines.append(f"        x{v} = self.n{v}({merged(v)})")
    lines.append(f"        return {merged(topo.sink)}")
    parts.append("\n".join(lines))
    return "\n\n\n".join(parts) + "\n"


# --- search moves --------------------------------------------------------------------------------
def _vocab_node(node_id: NodeId, entry: tuple[str, dict[str, Any]]) -> Node:
    op, params = entry
    return Node(node_id, op, _check_params(params, "vocabulary"))


_VOCAB_SIGNATURES = tuple((op, _check_params(params, "vocabulary")) for op, params in VOCABULARY)


def _fresh_id(graph: Graph) -> str:
    taken = {node.id for node in graph.nodes}
    k = len(graph.nodes)
    while f"n{k}" in taken:
        k += 1
    return f"n{k}"


def _descendants(graph: Graph) -> list[set[int]]:
    topo = topology(graph)
    below: list[set[int]] = [set() for _ in graph.nodes]
    for v in reversed(topo.order):
        for w in topo.succs[v]:
            below[v].add(w)
            below[v] |= below[w]
    return below


def _moves(graph: Graph) -> list[list[tuple]]:
    """Every elementary edit, grouped by kind: op change, edge removal, edge addition, node insertion
    (splitting an edge), node removal (its sources then feed its targets)."""
    topo = topology(graph)
    n = len(graph.nodes)
    inner = [v for v in range(n) if graph.nodes[v].op not in _IO]
    edge_set = set(graph.edges)
    changes = [
        ("op", v, k)
        for v in inner
        for k, signature in enumerate(_VOCAB_SIGNATURES)
        if signature != (graph.nodes[v].op, graph.nodes[v].params)
    ]
    removals = [("del_edge", s, t) for s, t in graph.edges if len(topo.succs[s]) > 1 and len(topo.preds[t]) > 1]
    additions: list[tuple] = []
    if len(graph.edges) < MAX_EDGES:
        below = _descendants(graph)
        for s in range(n):
            for t in range(n):
                if s != t and s != topo.sink and t != topo.source and (s, t) not in edge_set and s not in below[t]:
                    additions.append(("add_edge", s, t))
    inserts: list[tuple] = []
    if n < MAX_NODES and len(graph.edges) < MAX_EDGES:
        inserts = [("insert", s, t, k) for s, t in graph.edges for k in range(len(VOCABULARY))]
    deletes = []
    for v in inner:
        added = sum((s, t) not in edge_set for s in topo.preds[v] for t in topo.succs[v])
        removed = len(topo.preds[v]) + len(topo.succs[v])
        if len(graph.edges) + added - removed <= MAX_EDGES:
            deletes.append(("delete", v))
    return [changes, removals, additions, inserts, deletes]


def _apply(graph: Graph, move: tuple) -> Graph:
    nodes = list(graph.nodes)
    edges = set(graph.edges)
    kind = move[0]
    if kind == "op":
        _, v, k = move
        old = nodes[v]
        op, params = _VOCAB_SIGNATURES[k]
        nodes[v] = Node(old.id, op, params, old.merge)
    elif kind == "del_edge":
        edges.discard(move[1:])
    elif kind == "add_edge":
        edges.add(move[1:])
    elif kind == "insert":
        _, s, t, k = move
        w = len(nodes)
        nodes.append(_vocab_node(_fresh_id(graph), VOCABULARY[k]))
        edges.discard((s, t))
        edges |= {(s, w), (w, t)}
    else:
        _, v = move
        topo = topology(graph)
        edges |= {(s, t) for s in topo.preds[v] for t in topo.succs[v]}
        remap = {u: (u if u < v else u - 1) for u in range(len(nodes)) if u != v}
        edges = {(remap[s], remap[t]) for s, t in edges if v not in (s, t)}
        del nodes[v]
    return _finish(nodes, sorted(edges))


def _interleave(groups: list[list[tuple]], limit: int) -> list[tuple]:
    """Round-robin over the kinds so a cap cuts every kind, not only the last ones."""
    out: list[tuple] = []
    position = 0
    while len(out) < limit and any(position < len(g) for g in groups):
        for group in groups:
            if position < len(group) and len(out) < limit:
                out.append(group[position])
        position += 1
    return out


class GraphSpace(SearchSpace[Graph]):
    """Any DAG of torch.nn layers and user helpers, spelled as JSON nodes and edges."""

    name = "graph"
    renderer_version = RENDERER_VERSION
    encodings = ("ops",)
    default_encodings = ()
    render_choices = {"primitives": PRIMITIVES, "context": ("none",)}
    description = (
        'generic DAG as JSON: {"nodes": [{"id": "in", "op": "input"}, {"id": "c", "op": "Conv2d", '
        '"params": {"kernel_size": 3}}, {"id": "out", "op": "output"}], "edges": [["in", "c"], ["c", "out"]]}'
    )

    def parse(self, value: Any) -> Graph:
        if isinstance(value, Graph):
            try:
                value = value.to_dict()
            except (AttributeError, IndexError, TypeError, ValueError) as exc:
                raise SpecError(f"malformed Graph instance: {exc}") from None
        return parse_spec(value)

    def to_string(self, arch: Graph) -> str:
        return str(arch)

    def canonical(self, arch: Graph) -> str:
        return str(relabel(arch))

    def canonical_arch(self, arch: Graph) -> Graph:
        return relabel(arch)

    def sample(self, rng: random.Random) -> Graph:
        """3-10 nodes, ops from VOCABULARY: every op node gets a source before it and a target after it."""
        n = rng.randint(3, 10)
        nodes = [Node("n0", "input")]
        nodes += [_vocab_node(f"n{i}", rng.choice(VOCABULARY)) for i in range(1, n - 1)]
        nodes.append(Node(f"n{n - 1}", "output"))
        edges = {(rng.randrange(i), i) for i in range(1, n)}
        for i in range(1, n - 1):
            if not any(s == i for s, _ in edges):
                edges.add((i, rng.randrange(i + 1, n)))
        for t in range(1, n):
            for s in range(t):
                if rng.random() < 0.15:
                    edges.add((s, t))
        return _finish(nodes, sorted(edges))

    def mutate(self, arch: Graph, rng: random.Random, edits: int = 1) -> Graph:
        if edits < 1:
            raise ValueError(f"edits must be at least 1, got {edits}")
        for _ in range(32):
            child = arch
            for _ in range(edits):
                kinds = [group for group in _moves(child) if group]
                child = _apply(child, rng.choice(rng.choice(kinds)))
            if child != arch:
                return child
        raise ValueError(f"no edit of {self.to_string(arch)} gives a different graph")  # pragma: no cover

    def neighbours(self, arch: Graph) -> list[Graph]:
        """One-edit variants, kinds interleaved, at most MAX_NEIGHBOURS."""
        return [_apply(arch, move) for move in _interleave(_moves(arch), MAX_NEIGHBOURS)]

    def encode(self, arch: Graph, kind: str) -> list[float]:
        if kind != "ops":
            return super().encode(arch, kind)
        out = [0.0] * OPS_DIM
        for node in arch.nodes:
            if node.op in _IO:
                continue
            slot = ENCODED_OPS.index(node.op) if node.op in ENCODED_OPS else len(ENCODED_OPS)
            out[slot] += 1.0
        topo = topology(arch)
        out[-3] = float(len(arch.nodes) - 2)
        out[-2] = float(len(arch.edges))
        out[-1] = float(topo.depth[topo.sink])
        return out

    def op_graph(self, arch: Graph) -> OpGraph:
        """The DAG as written; a node's label is its op with its params and a `concat` merge, so
        `Conv2d(kernel_size=3)` and `Conv2d(kernel_size=5)` are different node types."""
        labels = []
        for node in arch.nodes:
            args = [f"{name}={text}" for name, text in node.params]
            if node.merge != "sum":
                args.append(f"merge={node.merge}")
            labels.append(f"{node.op}({','.join(args)})" if args else node.op)
        return OpGraph(tuple(labels), arch.edges)

    def render(
        self, arch: Graph, *, primitives: str = "exclude_helper", context: str = "none", dataset: str = "cifar10"
    ) -> str:
        """`class Net(nn.Module)`. Unknown ops: referenced (`exclude_helper`), defined as pass-through
        placeholders (`helper`), or replaced by `nn.Identity()` with a comment naming them (`inline`)."""
        self.check_render_options(primitives=primitives, context=context)
        return render_graph(arch, primitives)

    def helper_source(self) -> str:
        return ""  # the default vocabulary is all torch.nn

    def example_call(self, arch: Graph, context: str = "none") -> tuple[str, tuple]:
        return "Net()", (2, DEFAULT_WIDTH, 8, 8)
