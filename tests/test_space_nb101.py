"""The NAS-Bench-101 space: spellings, pruning, errors, identity, search moves, encodings, rendered code."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest
from colecache_client.spaces.base import SpecError
from colecache_client.spaces.nb101 import (
    ADJACENCY_DIM,
    OPS,
    PATH_DIM,
    NB101Cell,
    NB101Space,
    build_cell,
    paths,
    to_naslib,
    vertex_widths,
)
from space_contract import RENDER_NAMESPACE_IMPORTS, check_space_contract, naslib_subset, one_torch_thread

SPACE = NB101Space()
C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"

# A cell as the NB101 dataset's fixed statistics spell it (the one nasbench's examples print), with the
# trainable-parameter count the dataset records for it (stem 128, 3 stacks of 3 cells, CIFAR-10 head).
GOLDEN = {
    "module_adjacency": [
        [0, 1, 0, 0, 1, 1, 0],
        [0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    "module_operations": ["input", C3, MP, C3, C3, C1, "output"],
}
GOLDEN_PARAMETERS = 8_555_530
GOLDEN_STRING = (
    "0100110/0010000/0001001/0000010/0000010/0000001/0000000;"
    "input,conv3x3-bn-relu,maxpool3x3,conv3x3-bn-relu,conv3x3-bn-relu,conv1x1-bn-relu,output"
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def _samples(n: int, seed: int = 0) -> list[NB101Cell]:
    rng = random.Random(seed)
    return [SPACE.sample(rng) for _ in range(n)]


def _relabel(cell: NB101Cell, rng: random.Random) -> NB101Cell:
    """The same graph with its interior vertices in a random topological order."""
    n, m = cell.n, cell.matrix
    placed: list[int] = [0]
    remaining = set(range(1, n - 1))
    while remaining:
        ready = sorted(v for v in remaining if all(u in placed for u in range(n) if m[u][v]))
        v = rng.choice(ready)
        placed.append(v)
        remaining.remove(v)
    order = [*placed, n - 1]
    return NB101Cell(tuple(tuple(m[a][b] for b in order) for a in order), tuple(cell.ops[a] for a in order))


def _build(code: str, primitives: str):
    namespace: dict = {}
    exec(RENDER_NAMESPACE_IMPORTS, namespace)
    if primitives == "exclude_helper":
        exec(SPACE.helper_source(), namespace)
    exec(code, namespace)
    return namespace


# --- spellings ---------------------------------------------------------------------------------------------
def test_module_does_not_import_torch():
    source = Path(__import__("colecache_client.spaces.nb101", fromlist=["x"]).__file__).read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not imported & {"torch", "numpy"}


def test_all_spellings_round_trip():
    cell = SPACE.parse(GOLDEN)
    assert cell.n == 7 and cell.ops[2] == MP and cell.matrix[2] == (0, 0, 0, 1, 0, 0, 1)
    assert SPACE.to_string(cell) == GOLDEN_STRING
    spec = {"matrix": GOLDEN["module_adjacency"], "ops": GOLDEN["module_operations"]}
    assert SPACE.parse(spec) == cell
    assert SPACE.parse(json.dumps(spec)) == cell
    assert SPACE.parse([spec["matrix"], spec["ops"]]) == cell
    assert SPACE.parse(repr((spec["matrix"], spec["ops"]))) == cell
    naslib = to_naslib(cell)
    assert len(naslib) == 56 and naslib[49:] == (0, 4, 2, 4, 4, 3, 1)
    assert SPACE.parse(naslib) == cell
    assert SPACE.parse(list(naslib)) == cell
    assert SPACE.parse(str(naslib)) == cell
    assert SPACE.parse(str(list(naslib))) == cell
    assert SPACE.parse(GOLDEN_STRING) == cell
    assert SPACE.parse("  " + GOLDEN_STRING.replace("/", " / ").replace(",", ", ").replace(";", " ; ") + "\n") == cell
    assert SPACE.parse(cell) is cell
    assert str(cell) == GOLDEN_STRING


def test_numpy_arrays_are_read():
    np = pytest.importorskip("numpy")
    cell = SPACE.parse(GOLDEN)
    assert (
        SPACE.parse({"matrix": np.array(GOLDEN["module_adjacency"], dtype=np.int8), "ops": GOLDEN["module_operations"]})
        == cell
    )
    assert SPACE.parse(np.array(to_naslib(cell))) == cell


def test_every_sampled_cell_round_trips_through_every_spelling():
    for cell in _samples(300, seed=5):
        assert SPACE.parse(SPACE.to_string(cell)) == cell
        assert SPACE.parse(to_naslib(cell)) == cell
        assert SPACE.parse(str(to_naslib(cell))) == cell
        assert SPACE.parse({"matrix": [list(r) for r in cell.matrix], "ops": list(cell.ops)}) == cell


def test_all_naslib_nb101_keys_parse():
    path = naslib_subset("zc_nasbench101.json")
    if path is None:
        pytest.skip("zc_nasbench101.json not found (set COLECACHE_NB201_DATA)")
    keys = list(json.loads(path.read_text())["nasbench101"]["cifar10"])
    assert len(keys) == 500
    cells = SPACE.parse_many(keys)
    raw_edges = []
    for key, cell in zip(keys, cells):
        raw = ast.literal_eval(key)
        raw_edges.append(sum(raw[:49]))
        assert SPACE.parse(raw) == cell
        assert SPACE.parse(SPACE.to_string(cell)) == cell
        assert SPACE.parse(to_naslib(cell)) == cell
        assert len(cell.edges()) <= 9 and 2 <= cell.n <= 7
    # NASLib keeps its raw 7-vertex samples: dead vertices are pruned here, and the 9-edge limit holds
    # only after pruning (as in nasbench), so keys with up to 16 raw edges are valid cells.
    sizes = {cell.n for cell in cells}
    assert sizes == {2, 3, 4, 5, 6, 7}
    assert max(raw_edges) > 9
    assert len(set(cells)) == 301  # raw samples often prune to the same cell (55 to the bare input->output)
    assert len({SPACE.canonical(c) for c in cells}) == 292
    assert sum(cell.n == 2 for cell in cells) == 55
    assert len({SPACE.canonical(c) for c in cells}) == len({SPACE.canonical_arch(c) for c in cells})


def test_naslib_tuple_padded_at_the_end():
    small = SPACE.parse("011/001/000;input,conv1x1-bn-relu,output")
    matrix = [[0] * 7 for _ in range(7)]
    matrix[0][1] = matrix[0][2] = matrix[1][2] = 1
    padded = [bit for row in matrix for bit in row] + [0, 3, 1, 0, 0, 0, 0]
    assert SPACE.parse(padded) == small
    assert SPACE.parse(str(tuple(padded))) == small


# --- pruning -----------------------------------------------------------------------------------------------
def test_dead_vertices_are_pruned():
    # vertex 2 has no way out (dangling), vertex 3 is not reachable from the input
    spec = {
        "matrix": [
            [0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0],
        ],
        "ops": ["input", C3, MP, C1, "output"],
    }
    cell = SPACE.parse(spec)
    assert cell.matrix == ((0, 1, 0), (0, 0, 1), (0, 0, 0))
    assert cell.ops == ("input", C3, "output")
    assert SPACE.to_string(cell) == "010/001/000;input,conv3x3-bn-relu,output"
    with pytest.raises(SpecError, match="node 2 is not on any input->output path"):
        NB101Cell(tuple(map(tuple, spec["matrix"])), tuple(spec["ops"]))


def test_edge_limit_counts_the_pruned_cell():
    # 12 raw edges, but the chain through vertices 4 and 5 is dead: 3 edges remain
    matrix = [[0] * 7 for _ in range(7)]
    for i, j in [(0, 1), (1, 6), (0, 2), (2, 6), (0, 4), (1, 4), (2, 4), (3, 4), (3, 5), (1, 5), (2, 5), (0, 5)]:
        matrix[i][j] = 1
    cell = SPACE.parse({"matrix": matrix, "ops": ["input", C3, C3, C3, C1, MP, "output"]})
    assert cell.ops == ("input", C3, C3, "output") and len(cell.edges()) == 4


# --- errors ------------------------------------------------------------------------------------------------
def _spec(matrix, ops):
    return {"matrix": matrix, "ops": ops}


_CHAIN = [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
_FULL7 = [[1 if j > i else 0 for j in range(7)] for i in range(7)]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (_spec([[0, 1, 0], [0, 0, 1], [1, 0, 0]], ["input", C3, "output"]), "not upper triangular: entry (2, 0)"),
        (_spec([[0, 1, 0], [0, 1, 1], [0, 0, 0]], ["input", C3, "output"]), "entry (1, 1) is 1 (a self-loop"),
        (_spec([[0] * 8 for _ in range(8)], ["input"] + [C3] * 6 + ["output"]), "8 nodes, at most 7"),
        (_spec(_FULL7, ["input"] + [C3] * 5 + ["output"]), "21 edges, at most 9"),
        (_spec(_CHAIN, ["input", "conv5x5", "output"]), "unknown op 'conv5x5' at node 1 (expected one of conv3x3"),
        (_spec([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"]), "output not reachable from input"),
        (_spec(_CHAIN, [C3, C3, "output"]), "node 0 must be 'input', got 'conv3x3-bn-relu'"),
        (_spec(_CHAIN, ["input", C3, C1]), "the last node (2) must be 'output', got 'conv1x1-bn-relu'"),
        (_spec(_CHAIN, ["input", "output", "output"]), "node 1 is 'output': only node 0 is the input"),
        (_spec([[0, 1, 0], [0, 0, 1]], ["input", C3, "output"]), "matrix row 0 has 3 entries, expected 2"),
        (_spec(_CHAIN, ["input", "output"]), "the matrix has 3 nodes but there are 2 ops"),
        (_spec([[0]], ["input"]), "1 nodes, at least 2"),
        (_spec([[0, 2, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"]), "entry (0, 1) is 2, expected 0 or 1"),
        (_spec([[0, 0.5, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"]), "matrix entry (0, 1) is 0.5"),
        (_spec([[0, "1", 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"]), "matrix entry (0, 1) is '1'"),
        (_spec("0110", ["input", "output"]), "matrix must be a list of rows, got str"),
        (_spec([[0, 1], 5], ["input", "output"]), "matrix row 1 must be a list of 0/1 entries"),
        (_spec(_CHAIN, "input"), "ops must be a list of op names"),
        ({"matrix": _CHAIN}, "missing 'ops'"),
        ({"matrix": _CHAIN, "ops": ["input", C3, "output"], "hash": "x"}, "unknown key(s) 'hash'"),
        ({"adjacency": _CHAIN}, "needs keys 'matrix' and 'ops'"),
        (tuple([0] * 55), "NASLib's 56-tuple (49 matrix entries then 7 op codes), got 55 entries"),
        (tuple([0] * 49 + [0, 4, 4, 4, 4, 4, 7]), "op code 7 at node 6 is out of range (0 input, 1 output"),
        (tuple([0] * 49 + [0, 4, 4, 4, 4, 4, 1]), "output not reachable from input"),
        (tuple([0] * 6 + [1] + [0] * 42 + [0, 4, 4, 1, 4, 4, 1]), "node 3 is 'output'"),  # not end padding
        (tuple([0] * 49 + [0, 4, 4, 1, 4, 4, 1]), "output not reachable from input"),  # padded, but no edges
        ([[0, 1], [0, 0]], "a list spec must be NASLib's 56-tuple"),
        ("010/001/000;input,conv3x3-bn-relu", "the matrix has 3 nodes but there are 2 ops"),
        ("01a/001/000;input,conv3x3-bn-relu,output", "matrix row 0 '01a' must be a string of 0s and 1s"),
        ("010/001/000", "expected 'ROWS;OPS'"),
        ("", "empty cell spec"),
        ("{not json", "malformed JSON"),
        ("[1, 2", "malformed cell spec"),
        ("(0, 1) + (1,)", "malformed cell spec"),
        (42, "expected an NB101 cell spec"),
    ],
)
def test_bad_specs_name_the_problem(spec, named):
    with pytest.raises(SpecError) as info:
        SPACE.parse(spec)
    assert named in str(info.value), str(info.value)


def test_ten_live_edges_are_refused():
    # 6 vertices, all live, 10 edges
    matrix = [[0] * 6 for _ in range(6)]
    for i, j in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 5), (2, 3), (2, 5), (3, 4), (4, 5)]:
        matrix[i][j] = 1
    with pytest.raises(SpecError, match=r"^10 edges, at most 9$"):
        SPACE.parse({"matrix": matrix, "ops": ["input", C3, C3, C1, MP, "output"]})


# --- identity ----------------------------------------------------------------------------------------------
def test_isomorphic_relabellings_share_hash_representative_and_code():
    rng = random.Random(11)
    moved = 0
    for cell in _samples(300, seed=2):
        rep = SPACE.canonical_arch(cell)
        key = SPACE.canonical(cell)
        assert SPACE.canonical_arch(rep) == rep and SPACE.canonical(rep) == key
        for _ in range(3):
            twin = _relabel(cell, rng)
            moved += twin != cell
            assert SPACE.canonical(twin) == key
            assert SPACE.canonical_arch(twin) == rep
            assert SPACE.render(SPACE.canonical_arch(twin)) == SPACE.render(rep)
    assert moved > 100  # the relabellings really moved vertices (small cells have nothing to move)


def test_hash_classes_match_exact_classes_on_a_sample():
    cells = set(_samples(1000, seed=3))
    for cell in list(cells)[:150]:
        cells.update(SPACE.neighbours(cell))  # near neighbours: the hardest cells to tell apart
    by_hash: dict[str, NB101Cell] = {}
    by_rep: dict[NB101Cell, str] = {}
    for cell in cells:
        key, rep = SPACE.canonical(cell), SPACE.canonical_arch(cell)
        assert by_hash.setdefault(key, rep) == rep, f"hash collision: {cell}"
        assert by_rep.setdefault(rep, key) == key
    assert len(by_hash) > 1000


def test_non_isomorphic_cells_differ():
    a = SPACE.parse("0100/0010/0001/0000;input,conv3x3-bn-relu,conv1x1-bn-relu,output")
    b = SPACE.parse("0100/0010/0001/0000;input,conv1x1-bn-relu,conv3x3-bn-relu,output")  # order of the chain
    c = SPACE.parse("0110/0001/0001/0000;input,conv3x3-bn-relu,conv1x1-bn-relu,output")  # in parallel
    assert len({SPACE.canonical(x) for x in (a, b, c)}) == 3
    assert len({SPACE.canonical_arch(x) for x in (a, b, c)}) == 3
    # the parallel cell with its branches swapped is the same cell
    d = SPACE.parse("0110/0001/0001/0000;input,conv1x1-bn-relu,conv3x3-bn-relu,output")
    assert d != c and SPACE.canonical(d) == SPACE.canonical(c) and SPACE.canonical_arch(d) == SPACE.canonical_arch(c)
    assert len(SPACE.canonical(a)) == 32


# --- search moves ------------------------------------------------------------------------------------------
def _assert_valid(cell: NB101Cell) -> None:
    assert 2 <= cell.n <= 7 and len(cell.edges()) <= 9
    assert build_cell(cell.matrix, cell.ops) == cell  # already pruned, already valid


def test_samples_are_valid_and_reproducible():
    cells = _samples(300, seed=4)
    for cell in cells:
        _assert_valid(cell)
    assert cells == _samples(300, seed=4)
    assert {c.n for c in cells} == {2, 3, 4, 5, 6, 7}
    assert {op for c in cells for op in c.ops[1:-1]} == set(OPS)


def test_mutations_are_valid_and_different():
    rng = random.Random(6)
    for cell in _samples(150, seed=6):
        one = SPACE.mutate(cell, rng, 1)
        assert one != cell and one in SPACE.neighbours(cell)
        for edits in (2, 3):
            child = SPACE.mutate(cell, rng, edits)
            assert child != cell
            _assert_valid(child)
    with pytest.raises(ValueError):
        SPACE.mutate(cell, rng, 0)


def test_smallest_cell_can_grow():
    trivial = SPACE.parse("01/00;input,output")
    assert trivial.n == 2
    grown = SPACE.neighbours(trivial)
    assert len(grown) == 3 and all(c.n == 3 for c in grown)
    assert SPACE.mutate(trivial, random.Random(0), 1) in grown


def test_neighbours_by_hand():
    cell = SPACE.parse("011/001/000;input,conv3x3-bn-relu,output")
    out = SPACE.neighbours(cell)
    assert out == SPACE.neighbours(cell)
    assert len(out) == len(set(out)) and cell not in out
    strings = [SPACE.to_string(c) for c in out]
    # 2 op changes; toggles: drop 0->1 or 1->2 (both leave input->output), drop 0->2 (a chain);
    # 9 added vertices: after the input, between input and output, between vertex 1 and output, x 3 ops
    assert strings[:4] == [
        "011/001/000;input,conv1x1-bn-relu,output",
        "011/001/000;input,maxpool3x3,output",
        "01/00;input,output",
        "010/001/000;input,conv3x3-bn-relu,output",
    ]
    assert len(out) == 13 and all(c.n == 4 for c in out[4:])
    assert "0111/0010/0001/0000;input,conv1x1-bn-relu,conv3x3-bn-relu,output" in strings  # a vertex before 1


def test_neighbours_are_one_edit_away():
    for cell in _samples(40, seed=8):
        out = SPACE.neighbours(cell)
        assert len(out) == len(set(out)) and cell not in out
        for child in out:
            _assert_valid(child)
            assert child.n <= cell.n + 1  # toggles may prune several vertices, an added vertex is one more


# --- encodings ---------------------------------------------------------------------------------------------
def test_encoding_lengths():
    assert (ADJACENCY_DIM, PATH_DIM) == (36, 364)
    for cell in _samples(100, seed=9):
        assert len(SPACE.encode(cell, "adjacency")) == ADJACENCY_DIM
        path = SPACE.encode(cell, "path")
        assert len(path) == PATH_DIM and sum(path) == len(paths(cell))
    with pytest.raises(ValueError, match="unknown encoding"):
        SPACE.encode(cell, "onehot")


def test_path_encoding_by_hand():
    cell = SPACE.parse(GOLDEN)
    # paths: 0-5-6 (c1), 0-1-2-6 (c3 mp), 0-4-5-6 (c3 c1), 0-1-2-3-5-6 (c3 mp c3 c1)
    assert sorted(paths(cell)) == sorted([(C1,), (C3, MP), (C3, C1), (C3, MP, C3, C1)])
    vector = SPACE.encode(cell, "path")
    # offsets 0, 1, 4, 13, 40, 121; ops c3=0, c1=1, mp=2, first op most significant
    expected = {1 + 1: 1.0, 4 + 0 * 3 + 2: 1.0, 4 + 0 * 3 + 1: 1.0, 40 + (0 * 27 + 2 * 9 + 0 * 3 + 1): 1.0}
    assert {i: v for i, v in enumerate(vector) if v} == expected
    twins = SPACE.parse("0111/0001/0001/0000;input,conv3x3-bn-relu,conv3x3-bn-relu,output")
    assert {i: v for i, v in enumerate(SPACE.encode(twins, "path")) if v} == {0: 1.0, 1: 2.0}


def test_adjacency_encoding_by_hand():
    cell = SPACE.parse("011/001/000;input,conv1x1-bn-relu,output")
    vector = SPACE.encode(cell, "adjacency")
    # padded: vertex 1 stays, output moves to 6; bits (0,1), (0,6), (1,6) in row-major upper-triangle order
    upper = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    assert [upper[i] for i in range(21) if vector[i]] == [(0, 1), (0, 6), (1, 6)]
    assert vector[21:24] == [0.0, 1.0, 0.0] and sum(vector[24:]) == 0.0


# --- rendered code -----------------------------------------------------------------------------------------
def test_contract():
    check_space_contract(SPACE)


def test_golden_cell_has_the_dataset_parameter_count():
    torch = pytest.importorskip("torch")
    cell = SPACE.parse(GOLDEN)
    for primitives in ("exclude_helper", "helper", "inline"):
        namespace = _build(SPACE.render(cell, primitives=primitives, context="backbone"), primitives)
        with torch.device("meta"):  # shapes only: no memory for 8.5M weights, no init time
            net = namespace["Network"]()
        assert sum(p.numel() for p in net.parameters()) == GOLDEN_PARAMETERS


def test_channel_split_and_truncation():
    torch = pytest.importorskip("torch")
    cell = SPACE.parse(GOLDEN)
    feeders, rank = vertex_widths(cell)
    assert feeders == [2, 5] and rank == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    code = SPACE.render(cell)
    assert "c1 = (out_channels + 1) // 2\n        c2 = out_channels // 2\n" in code
    assert "x3 = self.node3(x2[:, :self.c2])" in code
    assert "return torch.cat([x2, x5], dim=1)\n" in code
    module = _build(code, "exclude_helper")["Cell"](8, 9)
    assert module.node1.conv.weight.shape == (5, 5, 3, 3)  # c1 = 5: the first output vertex takes the odd channel
    assert module.node3.conv.weight.shape == (4, 4, 3, 3)  # c2 = 4, fed by x2 truncated from 5 channels
    assert module.proj4.conv.weight.shape == (4, 8, 1, 1)
    assert module(torch.randn(2, 8, 6, 6)).shape == (2, 9, 6, 6)


def test_three_way_split_with_input_to_output_edge():
    torch = pytest.importorskip("torch")
    cell = SPACE.parse("01111/00001/00001/00001/00000;input,conv3x3-bn-relu,conv1x1-bn-relu,maxpool3x3,output")
    code = SPACE.render(cell, primitives="inline")
    widths = ["c1 = (out_channels + 2) // 3", "c2 = (out_channels + 1) // 3", "c3 = out_channels // 3"]
    assert "\n".join(" " * 8 + line for line in widths) in code
    assert "return torch.cat([x1, x2, x3], dim=1) + self.proj_out(x)" in code
    assert "ConvBnRelu" not in code and "Projection" not in code
    module = _build(code, "inline")["Cell"](3, 10)
    assert [module.node1[0].weight.shape[0], module.node2[0].weight.shape[0]] == [4, 3]
    assert module(torch.randn(1, 3, 5, 5)).shape == (1, 10, 5, 5)


def test_trivial_cell_is_a_projection():
    cell = SPACE.parse("01/00;input,output")
    code = SPACE.render(cell)
    assert code == (
        "class Cell(nn.Module):\n"
        "    def __init__(self, in_channels, out_channels):\n"
        "        super().__init__()\n"
        "        self.proj_out = Projection(in_channels, out_channels)\n"
        "\n"
        "    def forward(self, x):\n"
        "        return self.proj_out(x)\n"
    )


def test_render_variants():
    cell = SPACE.parse(GOLDEN)
    excluded = SPACE.render(cell)
    assert "class ConvBnRelu" not in excluded and "ConvBnRelu(c1, c1, kernel_size=3)" in excluded
    assert "self.proj1 = Projection(in_channels, c1)" in excluded
    helper = SPACE.render(cell, primitives="helper")
    assert helper.startswith("class ConvBnRelu(nn.Module):") and helper.endswith(excluded)
    assert SPACE.helper_source().strip() in helper
    backbone = SPACE.render(cell, context="backbone", dataset="cifar100")
    assert backbone.startswith(excluded) and "num_classes=100" in backbone and "class Network(nn.Module)" in backbone
    assert "num_classes=120" in SPACE.render(cell, context="backbone", dataset="imagenet16-120")
    assert SPACE.render(cell) == excluded  # pure
    for option in ({"context": "comment"}, {"primitives": "bare"}, {"dataset": "mnist"}):
        with pytest.raises(SpecError, match="cannot render"):
            SPACE.render(cell, **option)


def test_describe_and_registry():
    info = SPACE.describe()
    assert info["name"] == "nb101" and info["renderer_version"] == "nb101-pytorch/1"
    assert info["encodings"] == ["adjacency", "path"] and info["default_encodings"] == ["path"]
    assert info["enumerable"] is False
    with pytest.raises(NotImplementedError):
        next(SPACE.all_cells())
