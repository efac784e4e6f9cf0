"""The generic graph space: spec validation, canonical form (exact beyond 1-WL), search moves and rendering."""

from __future__ import annotations

import ast
import copy
import itertools
import json
import random
from pathlib import Path

import networkx as nx
import pytest
from colecache_client.spaces import SpecError
from colecache_client.spaces.graph import (
    MAX_NEIGHBOURS,
    OPS_DIM,
    SEARCH_CAP,
    TORCH_NN_LAYERS,
    VOCABULARY,
    Graph,
    GraphSpace,
    canonical_order,
)
from space_contract import RENDER_NAMESPACE_IMPORTS, check_space_contract, run_rendered

SPACE = GraphSpace()

EXAMPLE = {
    "nodes": [
        {"id": "in", "op": "input"},
        {"id": "c1", "op": "Conv2d", "params": {"kernel_size": 3, "padding": 1}},
        {"id": "r", "op": "ReLU"},
        {"id": "m", "op": "MyFancyBlock", "params": {"width": 2}},
        {"id": "out", "op": "output"},
    ],
    "edges": [["in", "c1"], ["c1", "r"], ["in", "m"], ["r", "out"], ["m", "out"]],
}

STUB = (
    "class MyFancyBlock(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n"
    "        self.scale = width\n\n    def forward(self, x):\n        return x * self.scale\n"
)


def spec(nodes, edges):
    """A spec from (id, op[, params[, merge]]) tuples and (source, target) pairs."""
    out = []
    for node in nodes:
        item = {"id": node[0], "op": node[1]}
        if len(node) > 2 and node[2]:
            item["params"] = node[2]
        if len(node) > 3:
            item["merge"] = node[3]
        out.append(item)
    return {"nodes": out, "edges": [list(e) for e in edges]}


def relabelled(graph: Graph, rng: random.Random) -> Graph:
    """The same graph with shuffled nodes and edges and fresh ids (strings or ints)."""
    d = graph.to_dict()
    ids = [n["id"] for n in d["nodes"]]
    fresh = rng.sample(range(1000), len(ids))
    new = {old: (f"v{f}" if rng.random() < 0.5 else f) for old, f in zip(ids, fresh)}
    nodes = [dict(n, id=new[n["id"]]) for n in d["nodes"]]
    rng.shuffle(nodes)
    edges = [[new[s], new[t]] for s, t in d["edges"]]
    rng.shuffle(edges)
    return SPACE.parse({"nodes": nodes, "edges": edges})


def to_nx(graph: Graph) -> nx.DiGraph:
    g = nx.DiGraph()
    for i, node in enumerate(graph.nodes):
        g.add_node(i, label=json.dumps([node.op, node.params, node.merge]))
    g.add_edges_from(graph.edges)
    return g


def isomorphic(a: Graph, b: Graph) -> bool:
    return nx.is_isomorphic(to_nx(a), to_nx(b), node_match=lambda x, y: x["label"] == y["label"])


# --- contract, round trips -------------------------------------------------------------------------
def test_contract():
    check_space_contract(SPACE, n=25, seed=0, forward=6)


def test_module_is_torch_free():
    source = Path(SPACE.parse.__code__.co_filename).read_text()
    assert "import torch" not in source and "import networkx" not in source


def test_round_trip_dict_text_and_arch():
    graph = SPACE.parse(EXAMPLE)
    text = SPACE.to_string(graph)
    assert text == json.dumps(json.loads(text), separators=(",", ":"))  # compact
    assert SPACE.parse(text) == graph == SPACE.parse(graph) == SPACE.parse(json.dumps(EXAMPLE, indent=2))
    assert [n.id for n in graph.nodes] == ["in", "c1", "r", "m", "out"]
    assert graph.nodes[1].kwargs() == {"kernel_size": 3, "padding": 1}
    assert hash(graph) == hash(SPACE.parse(text))


def test_params_keep_json_types_apart():
    """1, 1.0 and true are equal in Python but not as layer arguments."""
    specs = [
        spec([("i", "input"), ("a", "Dropout", {"p": v}), ("o", "output")], [("i", "a"), ("a", "o")])
        for v in (1, 1.0, True)
    ]
    graphs = [SPACE.parse(s) for s in specs]
    assert len(set(graphs)) == 3 and len({SPACE.canonical(g) for g in graphs}) == 3
    for graph in graphs:
        assert SPACE.parse(SPACE.to_string(graph)) == graph


def test_int_ids_and_params_order_and_single_input_concat():
    a = SPACE.parse(
        spec([(0, "input"), (1, "Conv2d", {"padding": 1, "kernel_size": 3}, "concat"), (2, "output")], [(0, 1), (1, 2)])
    )
    assert a.nodes[1].merge == "sum"  # concat of one input is dropped
    assert '"params":{"kernel_size":3,"padding":1}' in SPACE.to_string(a)
    assert SPACE.parse(SPACE.to_string(a)) == a and a.nodes[0].id == 0


def test_dead_branches_are_pruned():
    s = spec(
        [("in", "input"), ("a", "ReLU"), ("dead_end", "ReLU"), ("orphan", "Tanh"), ("out", "output")],
        [("in", "a"), ("a", "out"), ("a", "dead_end"), ("orphan", "out")],
    )
    graph = SPACE.parse(s)
    assert [n.id for n in graph.nodes] == ["in", "a", "out"]
    assert graph.edges == ((0, 1), (1, 2))


# --- validation ------------------------------------------------------------------------------------
OK_NODES = [("in", "input"), ("a", "ReLU"), ("out", "output")]
OK_EDGES = [("in", "a"), ("a", "out")]


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("{not json", "not valid JSON"),
        ('{"nodes": [{"id": "a", "op": "Dropout", "params": {"p": NaN}}], "edges": []}', "NaN"),
        ([1, 2], "got list"),
        ({"nodes": []}, "missing 'edges'"),
        ({"nodes": [], "edges": [], "extra": 1}, "unknown field 'extra'"),
        ({"nodes": {}, "edges": []}, "'nodes' must be a list"),
        (spec(OK_NODES + [("in", "ReLU")], OK_EDGES), "node 3 ('in'): duplicate id (first used by node 0)"),
        (spec(OK_NODES, [*OK_EDGES, ("a", "zz")]), "edge 2: unknown node id 'zz'"),
        (spec(OK_NODES, [*OK_EDGES, ("a", "a")]), "edge 2: self-loop on node 1 ('a')"),
        (spec(OK_NODES, [*OK_EDGES, ("in", "a")]), "edge 2: duplicates edge 0"),
        (spec(OK_NODES, [*OK_EDGES, ("a", "in")]), "edge 2: enters the input node 'in'"),
        (spec(OK_NODES, [*OK_EDGES, ("out", "a")]), "edge 2: leaves the output node 'out'"),
        (
            spec(OK_NODES + [("b", "ReLU"), ("c", "ReLU")], [*OK_EDGES, ("a", "b"), ("b", "c"), ("c", "a")]),
            "cycle through node",
        ),
        (spec(OK_NODES + [("b", "ReLU")], [("in", "a"), ("b", "out")]), "output node 'out' is not reachable"),
        (spec(OK_NODES[:2], OK_EDGES[:1]), "exactly one 'output' node, got 0"),
        (spec([*OK_NODES, ("in2", "input")], OK_EDGES), "exactly one 'input' node, got 2 (nodes 0, 3)"),
        (spec([("in", "input"), *[(f"r{i}", "ReLU") for i in range(63)], ("out", "output")], []), "65 nodes"),
        ({"nodes": [], "edges": [["a", "b"]] * 257}, "257 edges"),
        ({"nodes": [{"op": "ReLU"}], "edges": []}, "node 0: missing field 'id'"),
        ({"nodes": [{"id": "x"}], "edges": []}, "node 0: missing field 'op'"),
        ({"nodes": [{"id": "x", "op": "ReLU", "kind": 1}], "edges": []}, "node 0: unknown field 'kind'"),
        ({"nodes": ["x"], "edges": []}, "node 0: expected an object"),
        ({"nodes": [{"id": True, "op": "ReLU"}], "edges": []}, "node 0: an id is a string or an integer"),
        ({"nodes": [{"id": 1.5, "op": "ReLU"}], "edges": []}, "node 0: an id is a string or an integer"),
        ({"nodes": [{"id": "", "op": "ReLU"}], "edges": []}, "node 0: id '' must be"),
        (spec(OK_NODES, [*OK_EDGES, ("in",)]), "edge 2: expected [source_id, target_id]"),
        (spec(OK_NODES, [*OK_EDGES, (1.0, "a")]), "edge 2: an id is a string or an integer"),
        (spec([*OK_NODES[:1], ("a", "relu"), OK_NODES[2]], OK_EDGES), "node 1 ('a'): op 'relu' is not a class name"),
        (spec([*OK_NODES[:1], ("a", "nn.ReLU"), OK_NODES[2]], OK_EDGES), "op 'nn.ReLU' is not a class name"),
        (spec([*OK_NODES[:1], ("a", "Net"), OK_NODES[2]], OK_EDGES), "op 'Net' is a Python builtin or reserved"),
        (spec([*OK_NODES[:1], ("a", "Exception"), OK_NODES[2]], OK_EDGES), "builtin"),
        (spec([*OK_NODES[:1], ("a", 3), OK_NODES[2]], OK_EDGES), "node 1 ('a'): op must be a string"),
        (spec([("in", "input", {"x": 1}), *OK_NODES[1:]], OK_EDGES), "node 0 ('in'): the input node takes no params"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {}, "max"), OK_NODES[2]], OK_EDGES), "merge 'max' must be"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {"in": 1}), OK_NODES[2]], OK_EDGES), "param name 'in' is not"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {"1x": 1}), OK_NODES[2]], OK_EDGES), "param name '1x' is not"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {"p": {"a": 1}}), OK_NODES[2]], OK_EDGES), "param 'p': a value is"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {"p": float("inf")}), OK_NODES[2]], OK_EDGES), "not a finite number"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {"p": [[[1]]]}), OK_NODES[2]], OK_EDGES), "two levels deep"),
        (spec([*OK_NODES[:1], ("a", "ReLU", {"p": "a b"}), OK_NODES[2]], OK_EDGES), "string 'a b' may only hold"),
    ],
)
def test_bad_specs_name_the_item(bad, named):
    with pytest.raises(SpecError) as info:
        SPACE.parse(bad)
    assert named in str(info.value)


def test_cycle_error_names_the_cycle():
    s = spec(OK_NODES + [("b", "ReLU"), ("c", "ReLU")], [*OK_EDGES, ("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(SpecError, match=r"cycle through node 1 \('a'\): 'a' -> 'b' -> 'c' -> 'a'"):
        SPACE.parse(s)


def test_parse_many_prefixes_item_index():
    with pytest.raises(SpecError, match="item 1: edge 0"):
        SPACE.parse_many([EXAMPLE, spec(OK_NODES, [("in", "zz")])])


def test_malformed_graph_instance_is_a_spec_error():
    with pytest.raises(SpecError):
        SPACE.parse(Graph((), ((0, 1),)))


# --- injection -------------------------------------------------------------------------------------
HOSTILE = [
    ("op", "__import__"),
    ("op", "eval"),
    ("op", "Conv2d(1)\nimport os\nX"),
    ("name", "x=__import__('os').system('id')#"),
    ("name", "__class__)\n#"),
    ("name", "\ufb01le"),  # NFKC-normalises to 'file': only ASCII names
    ("value", "'); __import__('os').system('id'); ('"),
    ("value", "a\nimport os"),
    ("value", ["ok", "x) or __import__('os')"]),
]


@pytest.mark.parametrize(("where", "payload"), HOSTILE)
def test_hostile_specs_are_refused(where, payload):
    node = {"id": "a", "op": "ReLU"}
    if where == "op":
        node["op"] = payload
    elif where == "name":
        node["params"] = {payload: 1}
    else:
        node["params"] = {"mode": payload}
    with pytest.raises(SpecError):
        SPACE.parse(
            {
                "nodes": [{"id": "i", "op": "input"}, node, {"id": "o", "op": "output"}],
                "edges": [["i", "a"], ["a", "o"]],
            }
        )


def test_accepted_params_render_as_literals_only():
    """Every constructor argument is a literal and every name is the renderer's own: nothing from a spec runs."""
    params = {"mode": "nearest", "scale_factor": [1.0, 1.0], "align_corners": None, "flag": False, "x_1": -3}
    graph = SPACE.parse(
        spec(
            [("i", "input"), ("u", "Upsample", params), ("h", "Helper_1", {"s": "a.b-c"}), ("o", "output")],
            [("i", "u"), ("u", "h"), ("h", "o")],
        )
    )
    for primitives in ("exclude_helper", "helper", "inline"):
        tree = ast.parse(SPACE.render(graph, primitives=primitives))
        constructors = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and (
                (
                    isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "nn"
                )
                or (isinstance(node.func, ast.Name) and node.func.id != "super")
            )
        ]
        assert len(constructors) >= 1
        for call in constructors:
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                ast.literal_eval(arg)
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert names <= {"nn", "torch", "self", "super", "x", "x1", "x2", "Helper_1", "kwargs"}, names


def test_empty_params_and_list_params():
    ok = {
        "nodes": [{"id": "i", "op": "input"}, {"id": "a", "op": "ReLU", "params": {}}, {"id": "o", "op": "output"}],
        "edges": [["i", "a"], ["a", "o"]],
    }
    assert SPACE.parse(ok).nodes[1].params == ()
    ok["nodes"][1]["params"] = []
    with pytest.raises(SpecError, match="node 1 \\('a'\\): params must be an object"):
        SPACE.parse(ok)


# --- canonical form --------------------------------------------------------------------------------
def test_canonical_is_invariant_under_relabelling():
    rng = random.Random(1)
    for _ in range(60):
        graph = SPACE.sample(rng)
        rep = SPACE.canonical_arch(graph)
        assert next(n.op for n in rep.nodes) == "input" and rep.nodes[-1].op == "output"
        assert all(s < t for s, t in rep.edges)  # topological
        assert [n.id for n in rep.nodes] == [f"n{i}" for i in range(len(rep.nodes))]
        for _ in range(3):
            other = relabelled(graph, rng)
            assert SPACE.canonical(other) == SPACE.canonical(graph)
            assert SPACE.canonical_arch(other) == rep
            assert SPACE.render(SPACE.canonical_arch(other)) == SPACE.render(rep)
    run_rendered(SPACE, other)  # list order need not be topological


def _small_dag(rng: random.Random) -> Graph:
    """Few nodes, two ops: isomorphic pairs are common, so the check below means something."""
    n = rng.randint(4, 7)
    nodes = [(0, "input"), *[(i, rng.choice(["ReLU", "Tanh"])) for i in range(1, n - 1)], (n - 1, "output")]
    edges = {(s, t) for t in range(1, n) for s in range(t) if rng.random() < 0.45}
    edges |= {(rng.randrange(t), t) for t in range(1, n)}
    return SPACE.parse(spec(nodes, sorted(edges)))


def test_canonical_agrees_with_networkx_isomorphism():
    rng = random.Random(7)
    graphs = [_small_dag(rng) for _ in range(120)]
    graphs += [relabelled(g, rng) for g in graphs[:40]]
    classes: dict[str, list[Graph]] = {}
    for graph in graphs:
        classes.setdefault(SPACE.canonical(graph), []).append(graph)
    assert len(classes) < len(graphs) - 40  # some non-trivial classes beyond the relabelled copies
    for members in classes.values():
        assert all(isomorphic(members[0], g) for g in members[1:])
    reps = [members[0] for members in classes.values()]
    by_shape: dict[tuple, list[Graph]] = {}
    for g in reps:
        by_shape.setdefault((len(g.nodes), len(g.edges), tuple(sorted(n.op for n in g.nodes))), []).append(g)
    for group in by_shape.values():
        for a, b in itertools.combinations(group, 2):
            assert not isomorphic(a, b)


def _layers(*twisted: bool, n: int = 3) -> Graph:
    """Blocks of in -> a_i -> b_i -> c_i -> out plus a_i -> c_j: with j = i a block is n triangles, with
    j = i + 1 (mod n) one 3n-cycle. Every a, every b and every c sees the same neighbourhood colours, so
    1-WL cannot tell the blocks apart."""
    conv = {"in_channels": 16, "out_channels": 16, "kernel_size": 1}
    nodes = [("in", "input"), ("out", "output")]
    edges = []
    for k, twist in enumerate(twisted):
        for i in range(n):
            a, b, c = f"a{k}_{i}", f"b{k}_{i}", f"c{k}_{i}"
            nodes += [(a, "Conv2d", conv), (b, "ReLU"), (c, "BatchNorm2d", {"num_features": 16})]
            j = (i + 1) % n if twist else i
            edges += [("in", a), (a, b), (b, c), (a, f"c{k}_{j}"), (c, "out")]
    return SPACE.parse(spec(nodes, edges))


@pytest.mark.filterwarnings("ignore:The hashes produced for directed graphs")
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (_layers(False), _layers(True)),  # three triangles vs a 9-cycle
        (_layers(False, True), _layers(True, n=6)),  # triangles + 9-cycle vs an 18-cycle
    ],
)
def test_exact_tie_break_where_wl_collides(first, second):
    wl = [nx.weisfeiler_lehman_graph_hash(to_nx(g), node_attr="label", iterations=8) for g in (first, second)]
    assert wl[0] == wl[1] and not isomorphic(first, second)
    assert SPACE.canonical(first) != SPACE.canonical(second)
    rng = random.Random(3)
    for graph in (first, second):
        for _ in range(20):
            assert SPACE.canonical(relabelled(graph, rng)) == SPACE.canonical(graph)
    run_rendered(SPACE, SPACE.canonical_arch(first))


def test_tie_break_needs_the_search(monkeypatch):
    """Ties inside one WL class that are not symmetries: following a single path splits relabellings."""
    import colecache_client.spaces.graph as module

    mixed = _layers(False, True)
    rng = random.Random(3)
    copies = [relabelled(mixed, rng) for _ in range(20)]
    assert len({SPACE.canonical(g) for g in copies}) == 1
    monkeypatch.setattr(module, "SEARCH_CAP", 1)
    module.canonical_order.cache_clear()
    assert len({SPACE.canonical(g) for g in copies}) > 1
    module.canonical_order.cache_clear()


def test_twins_stay_exact_past_the_search_cap():
    """Nine identical parallel convs would make a search tree of 9! leaves, but twins are searched once."""
    nodes = [("in", "input"), ("out", "output"), *[(f"c{i}", "Conv2d", {"kernel_size": 1}) for i in range(9)]]
    edges = [("in", f"c{i}") for i in range(9)] + [(f"c{i}", "out") for i in range(9)]
    graph = SPACE.parse(spec(nodes, edges))
    rng = random.Random(0)
    assert len({SPACE.canonical(relabelled(graph, rng)) for _ in range(10)}) == 1


def test_past_the_cap_canonical_is_exact_and_a_fixed_point():
    """Eight identical parallel two-op chains exceed the cap: one deterministic path, still never merging."""

    def chains(second_ops):
        nodes = [("in", "input"), ("out", "output")]
        edges = []
        for i, op in enumerate(second_ops):
            nodes += [(f"a{i}", "Conv2d", {"kernel_size": 1}), (f"b{i}", op)]
            edges += [("in", f"a{i}"), (f"a{i}", f"b{i}"), (f"b{i}", "out")]
        return SPACE.parse(spec(nodes, edges))

    graph = chains(["ReLU"] * 8)
    assert len(set(canonical_order(graph))) == len(graph.nodes)
    rep = SPACE.canonical_arch(graph)
    assert SPACE.canonical_arch(rep) == rep and SPACE.canonical(rep) == SPACE.canonical(graph)
    assert SPACE.canonical(chains(["ReLU"] * 7 + ["Tanh"])) != SPACE.canonical(graph)
    assert SEARCH_CAP == 2_000


def test_concat_and_merge_are_part_of_identity():
    def g(merge):
        return SPACE.parse(
            spec(
                [("i", "input"), ("a", "ReLU"), ("b", "Tanh"), ("o", "output", {}, merge)],
                [("i", "a"), ("i", "b"), ("a", "o"), ("b", "o")],
            )
        )

    assert SPACE.canonical(g("sum")) != SPACE.canonical(g("concat"))


# --- search moves ----------------------------------------------------------------------------------
def test_mutations_stay_valid_and_change_the_class():
    rng = random.Random(11)
    for seed in range(150):
        graph = SPACE.sample(random.Random(seed))
        for edits in (1, 2, 3):
            child = SPACE.mutate(graph, rng, edits)
            assert child != graph
            assert SPACE.parse(child.to_dict()) == child  # nothing left to prune, acyclic, output reachable
            if edits == 1:
                assert SPACE.canonical(child) != SPACE.canonical(graph)
        if seed < 3:
            run_rendered(SPACE, SPACE.mutate(graph, rng, 3))


def test_mutate_walks_keep_sizes_bounded():
    rng = random.Random(5)
    graph = SPACE.sample(rng)
    for _ in range(300):
        graph = SPACE.mutate(graph, rng)
        assert 2 <= len(graph.nodes) <= 64 and len(graph.edges) <= 256
    run_rendered(SPACE, graph)


def test_mutate_from_the_smallest_graph():
    tiny = SPACE.parse(spec([("i", "input"), ("o", "output")], [("i", "o")]))
    assert SPACE.mutate(tiny, random.Random(0)) != tiny
    assert SPACE.neighbours(tiny)  # node insertions on the one edge
    run_rendered(SPACE, tiny)


def test_neighbours_are_deterministic_valid_and_bounded():
    graph = SPACE.sample(random.Random(2))
    first, second = SPACE.neighbours(graph), SPACE.neighbours(graph)
    assert first == second and first
    kinds = {len(n.nodes) - len(graph.nodes) for n in first}
    assert kinds == {-1, 0, 1}  # node removals, op/edge edits, node insertions
    for neighbour in first:
        assert neighbour != graph and SPACE.parse(neighbour.to_dict()) == neighbour
    big = SPACE.parse(
        spec(
            [("i", "input"), ("o", "output"), *[(f"r{k}", "ReLU") for k in range(40)]],
            [("i", "r0"), *[(f"r{k}", f"r{k + 1}") for k in range(39)], ("r39", "o")],
        )
    )
    assert len(SPACE.neighbours(big)) == MAX_NEIGHBOURS


def test_mutate_rejects_zero_edits():
    with pytest.raises(ValueError):
        SPACE.mutate(SPACE.sample(random.Random(0)), random.Random(0), 0)


# --- encodings -------------------------------------------------------------------------------------
def test_ops_encoding():
    graph = SPACE.parse(EXAMPLE)
    vector = SPACE.encode(graph, "ops")
    assert len(vector) == OPS_DIM == 10
    assert vector == [1, 0, 1, 0, 0, 0, 1, 3, 5, 3]  # Conv2d, ReLU, other; 3 op nodes, 5 edges, depth 3
    with pytest.raises(ValueError):
        SPACE.encode(graph, "path")


# --- rendering -------------------------------------------------------------------------------------
def test_layer_names_exist_in_torch():
    nn = pytest.importorskip("torch.nn")
    assert [name for name in TORCH_NN_LAYERS if not hasattr(nn, name)] == []
    from colecache_client.spaces.graph import _CHANNEL_ARGS

    assert all(hasattr(nn, "Lazy" + name) for name in _CHANNEL_ARGS)
    assert {op for op, _ in VOCABULARY} <= set(TORCH_NN_LAYERS)


def _exec(code: str, prelude: str = ""):
    torch = pytest.importorskip("torch")
    namespace: dict = {}
    exec(RENDER_NAMESPACE_IMPORTS + prelude, namespace)
    exec(code, namespace)
    module = namespace["Net"]()
    module.eval()
    with torch.no_grad():
        return module(torch.randn(2, 16, 8, 8))


def test_unknown_op_in_every_primitive_mode():
    graph = SPACE.parse(EXAMPLE)
    referenced = SPACE.render(graph, primitives="exclude_helper")
    assert "self.n3 = MyFancyBlock(width=2)" in referenced and "class MyFancyBlock" not in referenced
    assert "self.n1 = nn.LazyConv2d(16, kernel_size=3, padding=1)" in referenced
    assert _exec(referenced, STUB).shape == (2, 16, 8, 8)
    helper = SPACE.render(graph, primitives="helper")
    assert "class MyFancyBlock(nn.Module):" in helper
    assert _exec(helper).shape == (2, 16, 8, 8)
    inline = SPACE.render(graph, primitives="inline")
    assert "self.n3 = nn.Identity()  # placeholder for MyFancyBlock(width=2)" in inline
    assert _exec(inline).shape == (2, 16, 8, 8)


def test_explicit_lazy_and_concat_layers_run():
    torch = pytest.importorskip("torch")
    s = spec(
        [
            ("in", "input"),
            ("a", "Conv2d", {"kernel_size": 3, "padding": 1, "out_channels": 8}),
            ("b", "Conv2d", {"in_channels": 16, "out_channels": 24, "kernel_size": 1, "bias": False}),
            ("cat", "BatchNorm2d", {}, "concat"),
            ("act", "GELU", {"approximate": "tanh"}),
            ("pool", "AdaptiveAvgPool2d", {"output_size": 1}),
            ("flat", "Flatten"),
            ("fc", "Linear", {"in_features": 32, "out_features": 10}),
            ("out", "output"),
        ],
        [
            ("in", "a"),
            ("in", "b"),
            ("a", "cat"),
            ("b", "cat"),
            ("cat", "act"),
            ("act", "pool"),
            ("pool", "flat"),
            ("flat", "fc"),
            ("fc", "out"),
        ],
    )
    graph = SPACE.parse(s)
    code = SPACE.render(graph)
    for line in (
        "nn.LazyConv2d(8, kernel_size=3, padding=1)",
        "nn.Conv2d(16, 24, bias=False, kernel_size=1)",
        "nn.LazyBatchNorm2d()",
        "nn.GELU(approximate='tanh')",
        "nn.Linear(32, 10)",
        "x3 = self.n3(torch.cat([x1, x2], dim=1))",
    ):
        assert line in code, code
    assert _exec(code).shape == (2, 10)
    assert run_rendered(SPACE, SPACE.canonical_arch(graph)).shape == (2, 10)
    assert torch is not None


def test_render_is_pure_and_checks_options():
    graph = SPACE.sample(random.Random(4))
    assert SPACE.render(graph) == SPACE.render(copy.deepcopy(graph))
    assert SPACE.helper_source() == ""
    assert SPACE.example_call(graph) == ("Net()", (2, 16, 8, 8))
    with pytest.raises(SpecError, match="context"):
        SPACE.render(graph, context="backbone")
    with pytest.raises(SpecError, match="primitives"):
        SPACE.render(graph, primitives="fancy")


def test_identity_graph_renders():
    graph = SPACE.parse(spec([("i", "input"), ("o", "output")], [("i", "o")]))
    code = SPACE.render(graph)
    assert "        pass" in code and "return x" in code
    assert SPACE.encode(graph, "ops") == [0.0] * 7 + [0.0, 1.0, 1.0]
