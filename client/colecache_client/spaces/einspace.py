"""einspace (Ericsson et al., NeurIPS 2024): architectures as derivation trees of a shape-aware PCFG.

An architecture is a tree of four module kinds, spelled with the names of einspace's own grammar
(`einspace/grammars/einspace.py` in the authors' code), children in derivation order:

    sequential{M, M}                              first module, then the second
    branching(2){BRANCH, M, M, AGG}               split the input in 2, one module per branch, merge
    branching(4){BRANCH, M, AGG}                  4 (or 8) branches, each its own copy of one module
    routing{PRE, M, POST}                         reshape/permute/unfold, a module, then reshape back
    computation{OP}                               one leaf op

    BRANCH  clone(k) | group(k,d)                       copies, or k equal chunks along tensor dim d
    AGG     add(k) | cat(k,d) | dot_product | dot_product(scaled)     (dot products: k = 2 only)
    PRE     identity | perm(...) | im2col(kernel,stride,padding)
    POST    identity | perm(...) | col2im
    OP      identity | linear(16..2048) | norm | relu | softmax | pos_enc

Dimension numbers (`group(2,1)`, `cat(2,3)`, `perm(0,2,1)`) count the batch as dim 0, as einspace
does. A feature is an image `(C, H, W)` or a token matrix `(N, D)` (shapes here leave the batch
out); `im2col` turns an image into tokens (one per kernel position, `C*k*k` features) and records
the grid it came from, which a later `col2im` restores. Every node's input and output shapes are
inferred from a fixed input shape (default `(16, 16, 16)`), and trees whose shapes do not agree
are refused, naming the node by its path of child indices (`node 1.3`: child 3 of the root's child 1).

Spellings accepted by `parse`:
  * the bracketed string above, e.g.
    `sequential{routing{im2col(3,1,1), computation{linear(32)}, col2im}, computation{relu}}`;
    at a module position a bare computation op (`relu`) stands for `computation{relu}`;
  * JSON: `{"op": "sequential", "children": [{"op": "computation", "children": ["relu"]}, "norm"]}`
    (terminals are strings), or nested lists `["sequential", ["computation", "relu"], "norm"]`;
  * an `EinNode`. The old einspace function names (`clone_tensor2`, `group_dim2s1d`,
    `add_tensors`, `cat_tensors1d2t`, `permute21`, `im2col3k1s1p`, `linear64`, ...) are accepted
    and rewritten to the names above.

Left out of einspace's grammars: `sequential(4)`/`sequential(8)`, `broadcast(2)` and
`linear(x...)` (the deep/broadcast variants), and einspace's network-level stem/head and cell
repetition; a rendered `Network` maps the input to the inferred output feature, nothing more.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from .base import PRIMITIVES, OpGraph, SearchSpace, SpecError

RENDERER_VERSION = "einspace-pytorch/1"
"""Version of the templates below; part of every cache key, so bump it on any change to the text."""

# --- the closed vocabulary -----------------------------------------------------------------------
MODULES: tuple[str, ...] = ("sequential", "branching(2)", "branching(4)", "branching(8)", "routing", "computation")
NETWORK_MODULES: tuple[str, ...] = MODULES[:-1]
"""einspace's `network` level: the root is never a bare computation module."""

ARITIES: tuple[int, ...] = (2, 4, 8)
BRANCHING_FNS: dict[int, tuple[str, ...]] = {
    k: (f"clone({k})", *(f"group({k},{d})" for d in (1, 2, 3))) for k in ARITIES
}
AGGREGATION_FNS: dict[int, tuple[str, ...]] = {
    k: (f"add({k})", *(f"cat({k},{d})" for d in (1, 2, 3)), *(("dot_product", "dot_product(scaled)") if k == 2 else ()))
    for k in ARITIES
}
PERMUTATIONS: tuple[str, ...] = (
    "perm(0,2,1)",
    "perm(0,1,3,2)",
    "perm(0,3,1,2)",
    "perm(0,3,2,1)",
    "perm(0,2,1,3)",
    "perm(0,2,3,1)",
)
IM2COLS: tuple[str, ...] = (
    "im2col(1,1,0)",
    "im2col(1,2,0)",
    "im2col(3,1,1)",
    "im2col(3,2,1)",
    "im2col(4,4,0)",
    "im2col(8,8,0)",
    "im2col(16,16,0)",
)
PREROUTING_FNS: tuple[str, ...] = ("identity", *PERMUTATIONS, *IM2COLS)
POSTROUTING_FNS: tuple[str, ...] = ("identity", *PERMUTATIONS, "col2im")
LINEAR_WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
COMPUTATION_FNS: tuple[str, ...] = (
    "identity",
    *(f"linear({w})" for w in LINEAR_WIDTHS),
    "norm",
    "relu",
    "softmax",
    "pos_enc",
)

LAYOUT: dict[str, tuple[str, ...]] = {
    "sequential": ("module", "module"),
    "branching(2)": ("branching_fn", "module", "module", "aggregation_fn"),
    "branching(4)": ("branching_fn", "module", "aggregation_fn"),
    "branching(8)": ("branching_fn", "module", "aggregation_fn"),
    "routing": ("prerouting_fn", "module", "postrouting_fn"),
    "computation": ("computation_fn",),
}
"""Each module's children, in einspace's derivation order."""

_ROLE_WORDS = {
    "branching_fn": "branching function",
    "aggregation_fn": "aggregation function",
    "prerouting_fn": "pre-routing function",
    "postrouting_fn": "post-routing function",
    "computation_fn": "computation function",
}

ENCODING_NAMES: tuple[str, ...] = (
    *(f"module:{m}" for m in MODULES),
    *(f"branching_fn:{f}" for k in ARITIES for f in BRANCHING_FNS[k]),
    *(f"aggregation_fn:{f}" for k in ARITIES for f in AGGREGATION_FNS[k]),
    *(f"prerouting_fn:{f}" for f in PREROUTING_FNS),
    *(f"postrouting_fn:{f}" for f in POSTROUTING_FNS),
    *(f"computation_fn:{f}" for f in COMPUTATION_FNS),
    "depth",
    "nodes",
)
"""What each feature of the `ops` encoding counts (69 features)."""
_ENCODING_INDEX = {name: i for i, name in enumerate(ENCODING_NAMES)}

DEFAULT_INPUT_SHAPE = (16, 16, 16)
MAX_NEIGHBOURS = 256

Shape = tuple[int, ...]
Grid = tuple[int, int] | None
Path = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EinNode:
    """One node of a derivation tree: a module (with children) or a terminal function (without)."""

    op: str
    children: tuple[EinNode, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.children, tuple):  # keep nodes hashable when built from lists
            object.__setattr__(self, "children", tuple(self.children))

    def __str__(self) -> str:
        return spell(self)


def spell(node: EinNode) -> str:
    """The bracketed string form: `op` for terminals, `op{child, child}` for modules."""
    if not node.children:
        return node.op
    return node.op + "{" + ", ".join(spell(child) for child in node.children) + "}"


def to_json(node: EinNode) -> Any:
    """The JSON form: `{"op": ..., "children": [...]}` for modules, a plain string for terminals."""
    if not node.children:
        return node.op
    return {"op": node.op, "children": [to_json(child) for child in node.children]}


def fmt_path(path: Path) -> str:
    return ".".join(map(str, path)) if path else "root"


# --- terminal functions: names -> arguments -> shape rules -----------------------------------------
_NAME = re.compile(r"^([a-z_][a-z0-9_]*)(?:\(([^()]*)\))?$")


@cache
def _spec(name: str) -> tuple[str, tuple[Any, ...]]:
    """('group', (2, 1)) for 'group(2,1)'; only called on names of the closed vocabulary."""
    match = _NAME.match(name)
    assert match, name
    base, args = match[1], match[2]
    if not args:
        return base, ()
    return base, tuple(int(a) if a.isdigit() else a for a in args.split(","))


class _ShapeError(Exception):
    """A shape rule broken by a terminal; the caller adds the node path."""


def split_shapes(fn: str, shape: Shape) -> Shape:
    """Shape of each branch that branching function `fn` makes from `shape`."""
    base, args = _spec(fn)
    if base == "clone":
        return shape
    k, dim = args
    if dim > len(shape):
        raise _ShapeError(f"{fn} splits tensor dim {dim}, but {shape} has only dims 1..{len(shape)}")
    size = shape[dim - 1]
    if size % k:
        raise _ShapeError(f"{fn} needs tensor dim {dim} of {shape} divisible by {k}")
    return shape[: dim - 1] + (size // k,) + shape[dim:]


def merge_shapes(fn: str, shapes: Sequence[Shape]) -> Shape:
    """Output shape of aggregation function `fn` on the branch outputs `shapes`."""
    base, args = _spec(fn)
    first = shapes[0]
    if base == "add":
        for other in shapes[1:]:
            if other != first:
                raise _ShapeError(f"{fn} needs equal shapes, got {first} and {other}")
        return first
    if base == "cat":
        dim = args[1]
        for other in shapes:
            if len(other) < dim:
                raise _ShapeError(f"{fn} concatenates tensor dim {dim}, but {other} has only dims 1..{len(other)}")
        for other in shapes[1:]:
            if len(other) != len(first) or other[: dim - 1] + other[dim:] != first[: dim - 1] + first[dim:]:
                raise _ShapeError(f"{fn} needs shapes equal except in dim {dim}, got {first} and {other}")
        return first[: dim - 1] + (sum(s[dim - 1] for s in shapes),) + first[dim:]
    a, b = shapes  # dot_product: batched matrix product over the last two dims
    if len(a) != len(b) or a[:-2] != b[:-2] or a[-1] != b[-2]:
        raise _ShapeError(f"{fn} needs (..., n, m) @ (..., m, p) shapes, got {a} and {b}")
    return a[:-1] + (b[-1],)


def route_shape(fn: str, shape: Shape, grid: Grid) -> tuple[Shape, Grid]:
    """(shape, grid) after a pre- or post-routing function; `grid` is the last im2col's (H', W')."""
    base, args = _spec(fn)
    if base == "identity":
        return shape, grid
    if base == "perm":
        if len(args) != len(shape) + 1:
            kind = "an image (C, H, W)" if len(args) == 4 else "tokens (N, D)"
            raise _ShapeError(f"{fn} permutes {kind}, got {shape}")
        return tuple(shape[d - 1] for d in args[1:]), grid
    if base == "im2col":
        kernel, stride, padding = args
        if len(shape) != 3:
            raise _ShapeError(f"{fn} needs an image (C, H, W), got tokens {shape}")
        channels, height, width = shape
        if height < kernel or width < kernel:
            raise _ShapeError(f"{fn} needs an image of at least {kernel}x{kernel}, got {shape}")
        out_h = (height + 2 * padding - kernel) // stride + 1
        out_w = (width + 2 * padding - kernel) // stride + 1
        return (out_h * out_w, channels * kernel * kernel), (out_h, out_w)
    # col2im
    if len(shape) != 2:
        raise _ShapeError(f"col2im needs tokens (N, D), got an image {shape}")
    if grid is None:
        raise _ShapeError(f"col2im has no image grid to restore (no im2col upstream of tokens {shape})")
    if shape[0] != grid[0] * grid[1]:
        raise _ShapeError(f"col2im needs {grid[0]}*{grid[1]} = {grid[0] * grid[1]} tokens for its grid, got {shape}")
    return (shape[1], *grid), grid


def compute_shape(fn: str, shape: Shape) -> tuple[Shape, int]:
    """(output shape, parameter count) of computation function `fn`."""
    base, args = _spec(fn)
    if base == "linear":
        width = args[0]
        return shape[:-1] + (width,), shape[-1] * width + width
    if base == "norm":  # BatchNorm2d over channels for images, LayerNorm over features for tokens
        return shape, 2 * (shape[0] if len(shape) == 3 else shape[-1])
    if base == "pos_enc":
        return shape, math.prod(shape)
    return shape, 0


# --- parsing ---------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*(?:\s*\([^(){}]*\))?)|([{},])|(\S))")


def _parse_text(text: str, max_nesting: int, max_tokens: int) -> EinNode:
    """Recursive descent over `name` / `name{child, ...}`; errors give the character offset."""
    tokens: list[tuple[str, str, int]] = []
    for match in _TOKEN.finditer(text):
        if match[3] is not None:
            raise SpecError(f"einspace string: unexpected {match[3]!r} at character {match.start(3)}")
        if match[1] is not None:
            tokens.append(("name", re.sub(r"\s+", "", match[1]), match.start(1)))
        elif match[2] is not None:
            tokens.append((match[2], match[2], match.start(2)))
        if len(tokens) > max_tokens:
            raise SpecError(f"einspace string: more than {max_tokens} tokens")
    if not tokens:
        raise SpecError("einspace string is empty")
    position = 0

    def describe(index: int) -> str:
        if index >= len(tokens):
            return "the end of the string"
        return f"{tokens[index][1]!r} at character {tokens[index][2]}"

    def node(level: int) -> EinNode:
        nonlocal position
        if level > max_nesting:
            raise SpecError(f"einspace string: nested more than {max_nesting} levels deep")
        if position >= len(tokens) or tokens[position][0] != "name":
            raise SpecError(f"einspace string: expected a module or function name, found {describe(position)}")
        name = tokens[position][1]
        position += 1
        children: list[EinNode] = []
        if position < len(tokens) and tokens[position][0] == "{":
            position += 1
            children.append(node(level + 1))
            while position < len(tokens) and tokens[position][0] == ",":
                position += 1
                children.append(node(level + 1))
            if position >= len(tokens) or tokens[position][0] != "}":
                raise SpecError(
                    f"einspace string: expected ',' or '}}' after the children of {name}, found {describe(position)}"
                )
            position += 1
        return EinNode(name, tuple(children))

    root = node(0)
    if position != len(tokens):
        raise SpecError(f"einspace string: unexpected {describe(position)} after the complete tree")
    return root


def _from_json(value: Any, path: Path, max_nesting: int) -> EinNode:
    """A raw tree from the JSON object / nested-list forms (names are normalised later)."""
    if len(path) > max_nesting:
        raise SpecError(f"node {fmt_path(path)}: nested more than {max_nesting} levels deep")
    if isinstance(value, str):
        return EinNode(re.sub(r"\s+", "", value))
    if isinstance(value, dict):
        extra = set(value) - {"op", "children"}
        if extra:
            raise SpecError(f"node {fmt_path(path)}: unknown key(s) {sorted(extra)} (expected 'op' and 'children')")
        op, children = value.get("op"), value.get("children", [])
        if not isinstance(children, (list, tuple)):
            raise SpecError(f"node {fmt_path(path)}: 'children' must be a list, got {type(children).__name__}")
    elif isinstance(value, (list, tuple)):
        if not value:
            raise SpecError(f"node {fmt_path(path)}: empty list (expected [op, child, ...])")
        op, children = value[0], value[1:]
    else:
        raise SpecError(f"node {fmt_path(path)}: expected a string, an object or a list, got {type(value).__name__}")
    if not isinstance(op, str):
        raise SpecError(f"node {fmt_path(path)}: 'op' must be a string, got {type(op).__name__}")
    kids = tuple(_from_json(child, (*path, i), max_nesting) for i, child in enumerate(children))
    return EinNode(re.sub(r"\s+", "", op), kids)


_MODULE_ALIASES = {"sequential_module": "sequential", "routing_module": "routing", "computation_module": "computation"}
_OLD_PERMUTES = {
    "permute21": (0, 2, 1),
    "permute132": (0, 1, 3, 2),
    "permute213": (0, 2, 1, 3),
    "permute231": (0, 2, 3, 1),
    "permute312": (0, 3, 1, 2),
    "permute321": (0, 3, 2, 1),
}


def _alias(name: str, role: str, arity: int) -> str:
    """Rewrite einspace's older function names (and arity-less add/clone) to the current spelling."""
    if match := re.fullmatch(r"clone_tensor(\d+)", name):
        return f"clone({match[1]})"
    if match := re.fullmatch(r"group_dim(\d+)s(\d)d", name):
        return f"group({match[1]},{match[2]})"
    if match := re.fullmatch(r"cat_tensors(\d)d(\d+)t", name):
        return f"cat({match[2]},{match[1]})"
    if match := re.fullmatch(r"im2col(\d+)k(\d+)s(\d+)p", name):
        return f"im2col({match[1]},{match[2]},{match[3]})"
    if match := re.fullmatch(r"linear(\d+)", name):
        return f"linear({match[1]})"
    if match := re.fullmatch(r"permute\(([\d,]+)\)", name):
        return f"perm({match[1]})"
    if name in _OLD_PERMUTES:
        return "perm(" + ",".join(map(str, _OLD_PERMUTES[name])) + ")"
    if role == "aggregation_fn" and name in ("add", "add_tensors"):
        return f"add({arity})"
    if role == "branching_fn" and name == "clone":
        return f"clone({arity})"
    return {
        "scaled_dot_product": "dot_product(scaled)",
        "dot_product(scaled=True)": "dot_product(scaled)",
        "dot_product(scaled=False)": "dot_product",
        "learnable_positional_encoding": "pos_enc",
    }.get(name, name)


def _normalise(node: EinNode, role: str, arity: int) -> EinNode:
    """Apply aliases and the `relu` -> `computation{relu}` shorthand, position by position."""
    if role in ("module", "network"):
        op = _MODULE_ALIASES.get(node.op, node.op)
        if op not in LAYOUT and not node.children:
            leaf = _alias(op, "computation_fn", 0)
            if leaf in COMPUTATION_FNS:
                return EinNode("computation", (EinNode(leaf),))
        layout = LAYOUT.get(op)
        if layout is None or len(layout) != len(node.children):
            return EinNode(op, node.children)  # validation names the problem
        k = int(op[10:-1]) if op.startswith("branching(") else 0
        return EinNode(op, tuple(_normalise(c, r, k) for c, r in zip(node.children, layout)))
    return EinNode(_alias(node.op, role, arity), node.children)


# --- validation / shape inference --------------------------------------------------------------------
@dataclass
class Analysis:
    """What shape inference learned about a tree (see `EinSpace.analyse`)."""

    output_shape: Shape = ()
    params: int = 0
    nodes: int = 0
    depth: int = 0
    inputs: dict[Path, tuple[Shape, Grid, int]] = field(default_factory=dict)
    """Module path -> (input shape, input grid, module depth); filled when asked for."""


class _Checker:
    """One validation pass; raises SpecError naming the node path and the broken rule."""

    def __init__(self, space: EinSpace, record: bool):
        self.space = space
        self.record = record
        self.result = Analysis()

    def run(self, root: EinNode) -> Analysis:
        shape, _ = self.module(root, self.space.input_shape, None, (), 1, 1, network=True)
        space, result = self.space, self.result
        if result.params > space.max_params:
            raise SpecError(f"architecture has {result.params:,} parameters, more than max_params={space.max_params:,}")
        result.output_shape = shape
        return result

    def count(self, path: Path) -> None:
        self.result.nodes += 1
        if self.result.nodes > self.space.max_nodes:
            raise SpecError(f"node {fmt_path(path)}: the tree has more than max_nodes={self.space.max_nodes} nodes")

    def check_size(self, shape: Shape, path: Path, what: str) -> None:
        if math.prod(shape) > self.space.max_elements:
            raise SpecError(
                f"node {fmt_path(path)}: {what} output {shape} has {math.prod(shape):,} elements, "
                f"more than max_elements={self.space.max_elements:,}"
            )

    def terminal(self, node: Any, role: str, allowed: Sequence[str], path: Path, parent: str) -> str:
        self.count(path)
        word = _ROLE_WORDS[role]
        if not isinstance(node, EinNode):
            raise SpecError(f"node {fmt_path(path)}: expected a {word} node, got {type(node).__name__}")
        if node.op not in allowed:
            raise SpecError(
                f"node {fmt_path(path)}: unknown {word} {node.op!r} for {parent} (known: {', '.join(allowed)})"
            )
        if node.children:
            raise SpecError(f"node {fmt_path(path)}: {word} {node.op} takes no children, got {len(node.children)}")
        return node.op

    def module(
        self, node: Any, shape: Shape, grid: Grid, path: Path, depth: int, copies: int, network: bool = False
    ) -> tuple[Shape, Grid]:
        where = f"node {fmt_path(path)}"
        self.count(path)
        if depth > self.space.max_depth:
            raise SpecError(f"{where}: module depth {depth} exceeds max_depth={self.space.max_depth}")
        self.result.depth = max(self.result.depth, depth)
        if self.record:
            self.result.inputs[path] = (shape, grid, depth)
        if not isinstance(node, EinNode):
            raise SpecError(f"{where}: expected a module node, got {type(node).__name__}")
        op, kids = node.op, node.children
        if op not in LAYOUT:
            if op in COMPUTATION_FNS:
                raise SpecError(f"{where}: computation function {op} takes no children, got {len(kids)}")
            raise SpecError(
                f"{where}: unknown module {op!r} (known: {', '.join(MODULES)}, "
                "or a computation function standing for computation{...})"
            )
        if network and op == "computation":
            raise SpecError(
                f"{where}: the root must be one of {', '.join(NETWORK_MODULES)} "
                "(einspace's network level has no bare computation module)"
            )
        layout = LAYOUT[op]
        if len(kids) != len(layout):
            raise SpecError(f"{where}: {op} takes {len(layout)} children ({', '.join(layout)}), got {len(kids)}")
        return self._module(op, kids, shape, grid, path, depth, copies)

    def _module(
        self, op: str, kids: tuple[EinNode, ...], shape: Shape, grid: Grid, path: Path, depth: int, copies: int
    ) -> tuple[Shape, Grid]:
        def at(index: int) -> Path:
            return (*path, index)

        def shaped(index: int, rule, *args):
            try:
                return rule(*args)
            except _ShapeError as exc:
                raise SpecError(f"node {fmt_path(at(index))}: {exc}") from None

        if op == "sequential":
            shape, grid = self.module(kids[0], shape, grid, at(0), depth + 1, copies)
            return self.module(kids[1], shape, grid, at(1), depth + 1, copies)
        if op == "computation":
            fn = self.terminal(kids[0], "computation_fn", COMPUTATION_FNS, at(0), op)
            out, params = compute_shape(fn, shape)
            self.result.params += params * copies
            self.check_size(out, at(0), fn)
            return out, grid
        if op == "routing":
            pre = self.terminal(kids[0], "prerouting_fn", PREROUTING_FNS, at(0), op)
            shape, grid = shaped(0, route_shape, pre, shape, grid)
            self.check_size(shape, at(0), pre)
            shape, grid = self.module(kids[1], shape, grid, at(1), depth + 1, copies)
            post = self.terminal(kids[2], "postrouting_fn", POSTROUTING_FNS, at(2), op)
            return shaped(2, route_shape, post, shape, grid)
        k = int(op[10:-1])
        split = self.terminal(kids[0], "branching_fn", BRANCHING_FNS[k], at(0), op)
        branch = shaped(0, split_shapes, split, shape)
        if k == 2:
            outs = [self.module(kids[i], branch, grid, at(i), depth + 1, copies) for i in (1, 2)]
        else:  # one module, instantiated once per branch (as einspace builds branching(4) and (8))
            outs = [self.module(kids[1], branch, grid, at(1), depth + 1, copies * k)] * k
        merge = self.terminal(kids[-1], "aggregation_fn", AGGREGATION_FNS[k], at(len(kids) - 1), op)
        out = shaped(len(kids) - 1, merge_shapes, merge, [s for s, _ in outs])
        self.check_size(out, at(len(kids) - 1), merge)
        grids = {g for _, g in outs}
        return out, grids.pop() if len(grids) == 1 else None


# --- tree surgery ----------------------------------------------------------------------------------------
def get_node(root: EinNode, path: Path) -> EinNode:
    for index in path:
        root = root.children[index]
    return root


def replace_node(root: EinNode, path: Path, new: EinNode) -> EinNode:
    """`root` with the subtree at `path` replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    kids = list(root.children)
    kids[head] = replace_node(kids[head], rest, new)
    return EinNode(root.op, tuple(kids))


def iter_nodes(root: EinNode, path: Path = ()) -> Iterator[tuple[Path, EinNode]]:
    """Every node with its path, in pre-order (the derivation order)."""
    yield path, root
    for index, child in enumerate(root.children):
        yield from iter_nodes(child, (*path, index))


def count_nodes(root: EinNode) -> int:
    return 1 + sum(count_nodes(child) for child in root.children)


# --- sampling ---------------------------------------------------------------------------------------------
class _Dead(Exception):
    """This choice has no shape-valid completion here: backtrack."""


class _Restart(Exception):
    """The derivation outgrew the node budget: start again."""


class _Sampler:
    """einspace's PCFG sampled top-down with shape-aware filtering and backtracking.

    Terminal functions are drawn uniformly among those valid for the current shape; module kinds
    with einspace's probabilities (computation `p`, sequential and routing (1-p)/3 each, every
    branching arity (1-p)/9). At `max_depth` only a computation module is allowed, which ends the
    recursion; a derivation that outgrows `max_nodes` is abandoned and drawn again.
    """

    def __init__(self, space: EinSpace, rng: random.Random, node_budget: int):
        self.space = space
        self.rng = rng
        self.nodes = 0
        self.budget = node_budget

    def spend(self, n: int) -> None:
        self.nodes += n
        if self.nodes > self.budget:
            raise _Restart

    def module(self, shape: Shape, grid: Grid, depth: int, network: bool = False) -> tuple[EinNode, Shape, Grid]:
        space = self.space
        p = space.computation_prob
        if network:
            options = {
                "sequential": 1 / 3,
                "branching(2)": 1 / 9,
                "branching(4)": 1 / 9,
                "branching(8)": 1 / 9,
                "routing": 1 / 3,
            }
        elif depth >= space.max_depth:
            options = {"computation": 1.0}
        else:
            options = {
                "sequential": (1 - p) / 3,
                "branching(2)": (1 - p) / 9,
                "branching(4)": (1 - p) / 9,
                "branching(8)": (1 - p) / 9,
                "routing": (1 - p) / 3,
                "computation": p,
            }
        while options:
            names = list(options)
            op = self.rng.choices(names, weights=[options[n] for n in names])[0]
            spent = self.nodes
            try:
                return self.build(op, shape, grid, depth)
            except _Dead:
                self.nodes = spent
                del options[op]
        raise _Dead

    def pick(self, candidates: Sequence[str], rule) -> tuple[str, Any]:
        """A uniformly drawn candidate whose shape rule succeeds (within the element limit)."""
        valid = []
        for name in candidates:
            try:
                out = rule(name)
            except _ShapeError:
                continue
            shape = out[0] if isinstance(out[0], tuple) else out
            if math.prod(shape) <= self.space.max_elements:
                valid.append((name, out))
        if not valid:
            raise _Dead
        return self.rng.choice(valid)

    def build(self, op: str, shape: Shape, grid: Grid, depth: int) -> tuple[EinNode, Shape, Grid]:
        self.spend(1)
        if op == "computation":
            self.spend(1)
            fn, (out, _) = self.pick(COMPUTATION_FNS, lambda f: compute_shape(f, shape))
            return EinNode(op, (EinNode(fn),)), out, grid
        if op == "sequential":
            first, shape, grid = self.module(shape, grid, depth + 1)
            second, shape, grid = self.module(shape, grid, depth + 1)
            return EinNode(op, (first, second)), shape, grid
        if op == "routing":
            self.spend(2)
            pre, (shape, grid) = self.pick(PREROUTING_FNS, lambda f: route_shape(f, shape, grid))
            inner, shape, grid = self.module(shape, grid, depth + 1)
            post, (shape, grid) = self.pick(POSTROUTING_FNS, lambda f: route_shape(f, shape, grid))
            return EinNode(op, (EinNode(pre), inner, EinNode(post))), shape, grid
        k = int(op[10:-1])
        self.spend(2)
        split, branch = self.pick(BRANCHING_FNS[k], lambda f: split_shapes(f, shape))
        if k == 2:
            first, out_a, grid_a = self.module(branch, grid, depth + 1)
            for _ in range(3):  # a second branch whose output some aggregation can merge with the first
                spent = self.nodes
                second, out_b, grid_b = self.module(branch, grid, depth + 1)
                try:
                    merge, out = self.pick(AGGREGATION_FNS[2], lambda f: merge_shapes(f, [out_a, out_b]))  # noqa: B023 (called at once)
                except _Dead:
                    self.nodes = spent
                    continue
                grid_out = grid_a if grid_a == grid_b else None
                return EinNode(op, (EinNode(split), first, second, EinNode(merge))), out, grid_out
            raise _Dead
        inner, out_a, grid_a = self.module(branch, grid, depth + 1)
        merge, out = self.pick(AGGREGATION_FNS[k], lambda f: merge_shapes(f, [out_a] * k))
        return EinNode(op, (EinNode(split), inner, EinNode(merge))), out, grid_a


# --- the space -----------------------------------------------------------------------------------------
class EinSpace(SearchSpace[EinNode]):
    """einspace derivation trees, validated by shape inference from a fixed input shape.

    Limits (constructor arguments): `max_depth` module levels (the root module is depth 1, a
    computation module one level below its parent), `max_nodes` tree nodes (modules and terminal
    functions), `max_elements` per feature map (batch excluded) and `max_params` in total (a
    branching(4)/(8) inner module counts once per branch). They bound sampling and what `parse`
    accepts; the registered instance uses the defaults.
    """

    name = "einspace"
    renderer_version = RENDERER_VERSION
    encodings = ("ops",)
    default_encodings = ()
    render_choices = {"primitives": PRIMITIVES, "context": ("none",)}
    description = (
        "einspace derivation trees: 'sequential{M, M}', 'branching(2){clone(2), M, M, add(2)}', "
        "'routing{im2col(3,1,1), M, col2im}', 'computation{linear(64)}' (or JSON {\"op\", \"children\"}); "
        "shapes inferred from a (16, 16, 16) input"
    )

    def __init__(
        self,
        input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
        *,
        max_depth: int = 12,
        max_nodes: int = 200,
        max_elements: int = 1 << 20,
        max_params: int = 1 << 23,
        computation_prob: float = 0.32,
    ):
        shape = tuple(int(d) for d in input_shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"input_shape must be an image (C, H, W) or tokens (N, D), got {input_shape}")
        if max_depth < 2 or max_nodes < 5:
            raise ValueError("max_depth must be >= 2 and max_nodes >= 5")
        self.input_shape: Shape = shape
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.max_elements = max_elements
        self.max_params = max_params
        self.computation_prob = computation_prob

    # --- parse / print ---------------------------------------------------------------------------------
    def parse(self, value: Any) -> EinNode:
        """A validated tree from a string, JSON object / list, or EinNode; SpecError names the node path."""
        if isinstance(value, EinNode):
            self.analyse(value)
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("{", "[")):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise SpecError(f"einspace JSON: {exc}") from None
                except RecursionError:
                    raise SpecError(f"einspace JSON: nested more than {self._max_nesting} levels deep") from None
            else:
                return self._parse_string(text)
        if isinstance(value, (dict, list, tuple)):
            raw = _from_json(value, (), self._max_nesting)
            node = _normalise(raw, "network", 0)
            self.analyse(node)
            return node
        raise SpecError(f"expected an einspace string, JSON object or list, got {type(value).__name__}")

    @property
    def _max_nesting(self) -> int:
        return 2 * self.max_depth + 2

    def _parse_string(self, text: str) -> EinNode:
        return _parse_string_cached(self._key, text)

    @property
    def _key(self) -> tuple:
        return (self.input_shape, self.max_depth, self.max_nodes, self.max_elements, self.max_params)

    def to_string(self, arch: EinNode) -> str:
        return spell(arch)

    def to_json(self, arch: EinNode) -> Any:
        return to_json(arch)

    # --- shapes ----------------------------------------------------------------------------------------
    def analyse(self, arch: EinNode, *, record_inputs: bool = False) -> Analysis:
        """Shape inference over the whole tree: output shape, parameters, node count, module depth.

        Raises SpecError naming the node path on an unknown name, a wrong number of children, a
        shape rule broken (e.g. 'node 1.3: add(2) needs equal shapes, got (16, 8, 8) and (32, 8, 8)')
        or a limit exceeded.
        """
        return _Checker(self, record_inputs).run(arch)

    def output_shape(self, arch: EinNode) -> Shape:
        """Per-sample output shape, e.g. (64, 16, 16) or (256, 32); the batch dim is left out."""
        return self.analyse(arch).output_shape

    def is_valid(self, arch: EinNode) -> bool:
        try:
            self.analyse(arch)
        except SpecError:
            return False
        return True

    # --- identity --------------------------------------------------------------------------------------
    def canonical(self, arch: EinNode) -> str:
        return spell(self.canonical_arch(arch))

    def canonical_arch(self, arch: EinNode) -> EinNode:
        """The representative computing the same function, up to the order of commutative pieces.

        Two rewrites, applied bottom-up. (1) Chains of `sequential` modules are associative: a
        chain is flattened and re-nested as shallow as possible (nearest-the-middle splits on
        ties), which never deepens the tree. (2) In `branching(2)` with `clone(2)` and `add(2)`
        or `cat(2,d)`, the two inner modules are ordered by their canonical spelling (exact for
        add; for cat, the same function up to the order of the concatenated slices). Branches of
        `group` splits are not swapped (each sees a different slice), nor those of dot products.
        The representative keeps the shapes, parameters and node count, so it is valid too.
        """
        return _canonical(arch)

    # --- search moves ----------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> EinNode:
        """A derivation of einspace's PCFG that passes every shape rule and limit."""
        for _ in range(1000):
            sampler = _Sampler(self, rng, self.max_nodes)
            try:
                node, _, _ = sampler.module(self.input_shape, None, 1, network=True)
            except (_Restart, _Dead):
                continue
            if self.is_valid(node):  # the parameter limit is only checked on the whole tree
                return node
        raise RuntimeError("einspace: no valid architecture in 1000 draws; are the limits too tight?")

    def mutate(self, arch: EinNode, rng: random.Random, edits: int = 1) -> EinNode:
        """`edits` times, regenerate the subtree under a random module from that module's input shape."""
        if edits < 1:
            raise ValueError(f"edits must be >= 1, got {edits}")
        current = arch
        for _ in range(edits):
            current = self._regenerate(current, rng, avoid={arch, current})
        return current

    def _regenerate(self, arch: EinNode, rng: random.Random, avoid: set[EinNode]) -> EinNode:
        info = self.analyse(arch, record_inputs=True)
        paths = list(info.inputs)
        for _ in range(500):
            path = rng.choice(paths)
            shape, grid, depth = info.inputs[path]
            budget = self.max_nodes - (info.nodes - count_nodes(get_node(arch, path)))
            try:
                new, _, _ = _Sampler(self, rng, budget).module(shape, grid, depth, network=not path)
            except (_Restart, _Dead):
                continue
            candidate = replace_node(arch, path, new)
            if candidate not in avoid and self.is_valid(candidate):
                return candidate
        raise RuntimeError(f"einspace: no valid mutation of {spell(arch)} in 500 tries")

    def neighbours(self, arch: EinNode) -> list[EinNode]:
        """Valid trees one edit away, in pre-order of the edited node (at most MAX_NEIGHBOURS).

        Edits: swap a terminal function (computation op, pre/post-routing, branching or aggregation
        function) for another of the same slot; replace a non-root module by `computation{identity}`.
        """
        out: list[EinNode] = []
        seen = {arch}
        alternatives = {"computation": {0: COMPUTATION_FNS}, "routing": {0: PREROUTING_FNS, 2: POSTROUTING_FNS}}
        for k in ARITIES:
            alternatives[f"branching({k})"] = {0: BRANCHING_FNS[k], 3 if k == 2 else 2: AGGREGATION_FNS[k]}
        identity = EinNode("computation", (EinNode("identity"),))

        def consider(candidate: EinNode) -> bool:
            if candidate not in seen:
                seen.add(candidate)
                if self.is_valid(candidate):
                    out.append(candidate)
            return len(out) >= MAX_NEIGHBOURS

        for path, node in iter_nodes(arch):
            if node.op not in LAYOUT:
                continue
            for index, names in alternatives.get(node.op, {}).items():
                for name in names:
                    if name != node.children[index].op and consider(replace_node(arch, (*path, index), EinNode(name))):
                        return out
            if path and node != identity and consider(replace_node(arch, path, identity)):
                return out
        return out

    # --- features --------------------------------------------------------------------------------------
    def encode(self, arch: EinNode, kind: str) -> list[float]:
        """`ops`: counts of each module kind and each terminal function per slot, then depth and node count.

        69 features, named by ENCODING_NAMES (e.g. 'module:routing', 'aggregation_fn:add(2)',
        'computation_fn:identity'; `identity` is counted per slot). A branching(4)/(8) inner module
        counts once, as it is written.
        """
        if kind != "ops":
            raise ValueError(f"unknown encoding {kind!r} for einspace (expected one of {', '.join(self.encodings)})")
        out = [0.0] * len(ENCODING_NAMES)
        nodes = 0
        for _, node in iter_nodes(arch):
            nodes += 1
            if node.op not in LAYOUT:
                continue
            out[_ENCODING_INDEX[f"module:{node.op}"]] += 1
            for role, child in zip(LAYOUT[node.op], node.children):
                if role != "module":
                    out[_ENCODING_INDEX[f"{role}:{child.op}"]] += 1
        out[-2] = float(_module_depth(arch))
        out[-1] = float(nodes)
        return out

    def op_graph(self, arch: EinNode) -> OpGraph:
        """The derivation tree, parent -> child: modules labelled `module:<op>`, terminal functions
        `<role>:<fn>` (e.g. `computation_fn:linear(64)`, `aggregation_fn:add(2)`), in pre-order."""
        ops: list[str] = []
        edges: list[tuple[int, int]] = []

        def walk(node: EinNode, role: str, parent: int | None) -> None:
            index = len(ops)
            ops.append(f"module:{node.op}" if node.op in LAYOUT else f"{role}:{node.op}")
            if parent is not None:
                edges.append((parent, index))
            for child_role, child in zip(LAYOUT.get(node.op, ()), node.children):
                walk(child, child_role, index)

        walk(arch, "module", None)
        return OpGraph(tuple(ops), tuple(edges))

    # --- code ------------------------------------------------------------------------------------------
    def render(
        self, arch: EinNode, *, primitives: str = "exclude_helper", context: str = "none", dataset: str = "cifar10"
    ) -> str:
        """`class Network(nn.Module)` mapping a `(B, *input_shape)` batch to the inferred output.

        `forward` spells the tree out: sequential modules as consecutive statements, branches as
        separate variables merged by the aggregation, routing as the reshape before and after. A
        branching(4)/(8) inner module becomes a `BlockN` class instantiated once per branch.
        Primitives: `exclude_helper` references einspace's blocks (Im2Col, Col2Im, Permute,
        CloneTensor, GroupDim, AddTensors, CatTensors, DotProduct, LearnablePositionalEncoding)
        that `helper_source()` defines, `helper` defines them first, `inline` writes torch ops.
        """
        self.check_render_options(primitives=primitives, context=context)
        self.analyse(arch)
        writer = _Writer(primitives)
        writer.write_class("Network", arch, self.input_shape, None)
        parts = ([_HELPERS] if primitives == "helper" else []) + writer.classes
        return "\n\n\n".join(parts) + "\n"

    def helper_source(self) -> str:
        return _HELPERS + "\n"

    def example_call(self, arch: EinNode, context: str = "none") -> tuple[str, tuple]:
        return "Network()", (2, *self.input_shape)


@lru_cache(maxsize=4096)
def _parse_string_cached(key: tuple, text: str) -> EinNode:
    # Memoised per limits: search loops send the same strings again and again (errors are not cached).
    input_shape, max_depth, max_nodes, max_elements, max_params = key
    space = EinSpace(
        input_shape, max_depth=max_depth, max_nodes=max_nodes, max_elements=max_elements, max_params=max_params
    )
    raw = _parse_text(text, space._max_nesting, 10 * max_nodes)
    node = _normalise(raw, "network", 0)
    space.analyse(node)
    return node


def _module_depth(node: EinNode) -> int:
    """Module nesting depth: 1 for a module whose children are all terminals."""
    inner = [_module_depth(c) for c in node.children if c.op in LAYOUT and c.children]
    return 1 + max(inner, default=0)


def _canonical(node: EinNode) -> EinNode:
    if node.op not in LAYOUT or len(node.children) != len(LAYOUT[node.op]):
        return node
    if node.op == "sequential":
        return _balanced([_canonical(item) for item in _chain(node)])
    kids = tuple(c if role != "module" else _canonical(c) for c, role in zip(node.children, LAYOUT[node.op]))
    if node.op == "branching(2)" and kids[0].op == "clone(2)" and kids[3].op.startswith(("add(", "cat(")):
        if spell(kids[2]) < spell(kids[1]):
            kids = (kids[0], kids[2], kids[1], kids[3])
    return EinNode(node.op, kids)


def _chain(node: EinNode) -> list[EinNode]:
    """The modules a nest of `sequential` applies, in order."""
    if node.op == "sequential" and len(node.children) == 2:
        return _chain(node.children[0]) + _chain(node.children[1])
    return [node]


def _balanced(items: list[EinNode]) -> EinNode:
    """Re-nest a chain of modules as shallow as possible (ties: the split nearest the middle).

    Dynamic programming over contiguous ranges: the shallowest binary nesting of items i..j splits
    at some k into i..k and k+1..j. Never deeper than the nesting the chain came in, so the
    representative stays within max_depth. O(n^3) in the chain length (at most ~70 under max_nodes).
    """
    n = len(items)
    heights = [_module_depth(item) for item in items]
    best: dict[tuple[int, int], tuple[int, int]] = {}  # (i, j) -> (height, split k)
    for length in range(1, n + 1):
        for i in range(n - length + 1):
            j = i + length - 1
            if i == j:
                best[i, j] = (heights[i], -1)
                continue
            choice = min(
                (1 + max(best[i, k][0], best[k + 1, j][0]), abs((k + 1 - i) - (j - k)), k) for k in range(i, j)
            )
            best[i, j] = (choice[0], choice[2])

    def build(i: int, j: int) -> EinNode:
        if i == j:
            return items[i]
        k = best[i, j][1]
        return EinNode("sequential", (build(i, k), build(k + 1, j)))

    return build(0, n - 1)


# --- rendering ------------------------------------------------------------------------------------------
_HELPERS = '''\
class CloneTensor(nn.Module):
    """Copies the input into `num_clones` branches."""

    def __init__(self, num_clones):
        super().__init__()
        self.num_clones = num_clones

    def forward(self, x):
        return [x] * self.num_clones


class GroupDim(nn.Module):
    """Splits the input into `splits` equal chunks along `dim`, one per branch."""

    def __init__(self, splits, dim):
        super().__init__()
        self.splits = splits
        self.dim = dim

    def forward(self, x):
        return list(torch.chunk(x, self.splits, dim=self.dim))


class AddTensors(nn.Module):
    """Sums the branch outputs."""

    def forward(self, tensors):
        return torch.stack(tensors, dim=0).sum(dim=0)


class CatTensors(nn.Module):
    """Concatenates the branch outputs along `dim`."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, tensors):
        return torch.cat(tensors, dim=self.dim)


class DotProduct(nn.Module):
    """Batched matrix product of two branch outputs, optionally scaled by 1/sqrt(inner dim)."""

    def __init__(self, scaled=False):
        super().__init__()
        self.scaled = scaled

    def forward(self, tensors):
        a, b = tensors
        out = torch.matmul(a, b)
        return out / a.size(-1) ** 0.5 if self.scaled else out


class Permute(nn.Module):
    """Permutes the tensor dims (batch included)."""

    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class Im2Col(nn.Module):
    """Unfolds an image (B, C, H, W) into tokens (B, patches, C * kernel * kernel)."""

    def __init__(self, kernel_size, stride=1, padding=0):
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x):
        return self.unfold(x).transpose(1, 2)


class Col2Im(nn.Module):
    """Folds tokens (B, height * width, D) back into an image (B, D, height, width)."""

    def __init__(self, height, width):
        super().__init__()
        self.height = height
        self.width = width

    def forward(self, x):
        return x.transpose(1, 2).reshape(x.shape[0], -1, self.height, self.width)


class LearnablePositionalEncoding(nn.Module):
    """Adds a learned tensor of the feature's shape."""

    def __init__(self, shape):
        super().__init__()
        self.encoding = nn.Parameter(torch.randn(1, *shape))

    def forward(self, x):
        return x + self.encoding'''


class _ClassText:
    """The `__init__` and `forward` lines of one rendered class."""

    def __init__(self, name: str):
        self.name = name
        self.init: list[str] = []
        self.forward: list[str] = []
        self.attrs: dict[str, int] = {}
        self.vars = 0

    def attr(self, base: str, expr: str) -> str:
        self.attrs[base] = self.attrs.get(base, 0) + 1
        name = f"self.{base}{self.attrs[base]}"
        self.init.append(f"{name} = {expr}")
        return name

    def var(self, expr: str, prefix: str = "x") -> str:
        self.vars += 1
        name = f"{prefix}{self.vars}"
        self.forward.append(f"{name} = {expr}")
        return name

    def unpack(self, count: int, expr: str) -> list[str]:
        names = [f"x{self.vars + i + 1}" for i in range(count)]
        self.vars += count
        self.forward.append(f"{', '.join(names)} = {expr}")
        return names

    def text(self, result: str) -> str:
        lines = [f"class {self.name}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
        lines += [f"        {line}" for line in self.init]
        lines += ["", "    def forward(self, x):"]
        lines += [f"        {line}" for line in self.forward]
        lines.append(f"        return {result}")
        return "\n".join(lines)


class _Writer:
    """Renders a tree as straight-line PyTorch, reusing the shape rules for layer sizes."""

    def __init__(self, primitives: str):
        self.inline = primitives == "inline"
        self.classes: list[str] = []
        self.blocks = 0

    def write_class(self, name: str, node: EinNode, shape: Shape, grid: Grid) -> None:
        cls = _ClassText(name)
        result, _, _ = self.module(cls, node, "x", shape, grid)
        self.classes.append(cls.text(result))

    def module(self, cls: _ClassText, node: EinNode, x: str, shape: Shape, grid: Grid) -> tuple[str, Shape, Grid]:
        op, kids = node.op, node.children
        if op == "sequential":
            x, shape, grid = self.module(cls, kids[0], x, shape, grid)
            return self.module(cls, kids[1], x, shape, grid)
        if op == "computation":
            return self.compute(cls, kids[0].op, x, shape), compute_shape(kids[0].op, shape)[0], grid
        if op == "routing":
            x, shape, grid = self.route(cls, kids[0].op, x, shape, grid)
            x, shape, grid = self.module(cls, kids[1], x, shape, grid)
            return self.route(cls, kids[2].op, x, shape, grid)
        k = int(op[10:-1])
        split, merge = kids[0].op, kids[-1].op
        branch = split_shapes(split, shape)
        if k == 2:
            a, b = self.split(cls, split, x, 2)
            a, out_a, grid_a = self.module(cls, kids[1], a, branch, grid)
            b, out_b, grid_b = self.module(cls, kids[2], b, branch, grid)
            out = self.merge(cls, merge, [a, b], out_a)
            return out, merge_shapes(merge, [out_a, out_b]), grid_a if grid_a == grid_b else None
        cloned = self.inline and split.startswith("clone(")  # every copy reads x itself
        parts = None if cloned else self.split(cls, split, x, k)[0]
        self.blocks += 1
        block = f"Block{self.blocks}"
        inner = _ClassText(block)
        result, out_a, grid_a = self.module(inner, kids[1], "x", branch, grid)
        self.classes.append(inner.text(result))
        copies = cls.attr("block", f"nn.ModuleList([{block}() for _ in range({k})])")
        if parts is None:
            outs = cls.var(f"[block({x}) for block in {copies}]", "xs")
        else:
            outs = cls.var(f"[block(part) for block, part in zip({copies}, {parts})]", "xs")
        return self.merge(cls, merge, outs, out_a), merge_shapes(merge, [out_a] * k), grid_a

    def compute(self, cls: _ClassText, fn: str, x: str, shape: Shape) -> str:
        base, args = _spec(fn)
        if base == "identity":
            return x
        if base == "linear":
            return cls.var(f"{cls.attr('linear', f'nn.Linear({shape[-1]}, {args[0]})')}({x})")
        if base == "norm":
            layer = f"nn.BatchNorm2d({shape[0]})" if len(shape) == 3 else f"nn.LayerNorm({shape[-1]})"
            return cls.var(f"{cls.attr('norm', layer)}({x})")
        if base == "relu":
            return cls.var(f"F.relu({x})")
        if base == "softmax":
            return cls.var(f"F.softmax({x}, dim=-1)")
        if self.inline:  # pos_enc
            dims = ", ".join(map(str, shape))
            return cls.var(f"{x} + {cls.attr('pos', f'nn.Parameter(torch.randn(1, {dims}))')}")
        return cls.var(f"{cls.attr('pos', f'LearnablePositionalEncoding({shape})')}({x})")

    def route(self, cls: _ClassText, fn: str, x: str, shape: Shape, grid: Grid) -> tuple[str, Shape, Grid]:
        out_shape, out_grid = route_shape(fn, shape, grid)
        base, args = _spec(fn)
        if base == "identity":
            return x, out_shape, out_grid
        if base == "perm":
            dims = ", ".join(map(str, args))
            if self.inline:
                return cls.var(f"{x}.permute({dims})"), out_shape, out_grid
            return cls.var(f"{cls.attr('perm', f'Permute(({dims}))')}({x})"), out_shape, out_grid
        if base == "im2col":
            kernel, stride, padding = args
            if self.inline:
                expr = f"F.unfold({x}, kernel_size={kernel}, stride={stride}, padding={padding}).transpose(1, 2)"
                return cls.var(expr), out_shape, out_grid
            layer = cls.attr("im2col", f"Im2Col(kernel_size={kernel}, stride={stride}, padding={padding})")
            return cls.var(f"{layer}({x})"), out_shape, out_grid
        height, width = out_grid
        if self.inline:
            return cls.var(f"{x}.transpose(1, 2).reshape({x}.shape[0], -1, {height}, {width})"), out_shape, out_grid
        return cls.var(f"{cls.attr('col2im', f'Col2Im({height}, {width})')}({x})"), out_shape, out_grid

    def split(self, cls: _ClassText, fn: str, x: str, k: int) -> list[str]:
        """Branch variables (k == 2) or a one-element list naming the list of branches (k > 2)."""
        base, args = _spec(fn)
        if self.inline:
            if base == "clone":
                return [x, x]  # k == 2: both branches read the same tensor (nothing is modified in place)
            expr = f"torch.chunk({x}, {k}, dim={args[1]})"
        else:
            layer = cls.attr(base, f"CloneTensor({k})" if base == "clone" else f"GroupDim({k}, dim={args[1]})")
            expr = f"{layer}({x})"
        return cls.unpack(2, expr) if k == 2 else [cls.var(expr, "xs")]

    def merge(self, cls: _ClassText, fn: str, xs: Any, first_shape: Shape) -> str:
        """Aggregate `xs` (two variable names, or the name of a list)."""
        base, args = _spec(fn)
        listed = f"[{', '.join(xs)}]" if isinstance(xs, list) else xs
        if not self.inline:
            layer = {
                "add": "AddTensors()",
                "cat": f"CatTensors(dim={args[-1]})" if args else "",
                "dot_product": f"DotProduct(scaled={bool(args)})",
            }[base]
            return cls.var(f"{cls.attr('dot' if base == 'dot_product' else base, layer)}({listed})")
        if base == "add":
            return cls.var(" + ".join(xs) if isinstance(xs, list) else f"torch.stack({xs}, dim=0).sum(dim=0)")
        if base == "cat":
            return cls.var(f"torch.cat({listed}, dim={args[1]})")
        product = f"torch.matmul({xs[0]}, {xs[1]})"
        return cls.var(f"{product} / {first_shape[-1]} ** 0.5" if args else product)
