"""The DARTS / NAS-Bench-301 space: spellings, errors, canonical form, search moves, encodings, rendered code."""

from __future__ import annotations

import ast
import itertools
import json
import random
from collections import namedtuple
from pathlib import Path

import pytest
from colecache_client.spaces import darts as darts_module
from colecache_client.spaces.base import SpecError
from colecache_client.spaces.darts import (
    ADJACENCY_DIM,
    EDGES,
    LIVE_OPS,
    PATH_DIM,
    DartsGenotype,
    DartsSpace,
    to_naslib,
)
from space_contract import RENDER_NAMESPACE_IMPORTS, check_space_contract, naslib_subset, one_torch_thread

SPACE = DartsSpace()

# DARTS (second order) as DARTS' genotypes.py spells it, concats as range(2, 6).
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=range(2, 6))"
)
NASLIB_KEY = (
    "[[(0, 0), (1, 5), (1, 1), (0, 1), (1, 3), (0, 3), (1, 3), (3, 2)], "
    "[(1, 0), (0, 2), (1, 3), (0, 3), (3, 0), (0, 1), (2, 0), (3, 6)]]"
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def _samples(n: int, seed: int = 0) -> list[DartsGenotype]:
    rng = random.Random(seed)
    return [SPACE.sample(rng) for _ in range(n)]


def _is_valid(arch: DartsGenotype) -> bool:
    for cell in (arch.normal, arch.reduce):
        for k in range(4):
            (_, a), (_, b) = cell[2 * k : 2 * k + 2]
            if a == b or not (0 <= a < k + 2 and 0 <= b < k + 2):
                return False
    return True


# --- spellings ---------------------------------------------------------------------------------------------
def test_module_does_not_import_torch():
    source = Path(darts_module.__file__).read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert "torch" not in imported


def test_darts_genotype_string_round_trips():
    arch = SPACE.parse(DARTS_V2)
    assert arch.normal[7] == ("dil_conv_3x3", 2)
    assert arch.reduce[0] == ("max_pool_3x3", 0)
    text = SPACE.to_string(arch)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1),")
    assert "normal_concat=[2, 3, 4, 5]" in text and text.endswith("reduce_concat=[2, 3, 4, 5])")
    assert SPACE.parse(text) == arch
    assert SPACE.parse(DARTS_V2.replace("range(2, 6)", "[2, 3, 4, 5]")) == arch
    assert SPACE.parse("  genotypes." + text + "\n") == arch  # a module-qualified Genotype
    assert SPACE.parse(arch) is arch


def test_positional_genotype_and_namedtuple():
    arch = SPACE.parse(DARTS_V2)
    positional = f"Genotype({list(arch.normal)!r}, [2, 3, 4, 5], {list(arch.reduce)!r}, range(2, 6))"
    assert SPACE.parse(positional) == arch
    Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    assert SPACE.parse(Genotype(list(arch.normal), range(2, 6), list(arch.reduce), range(2, 6))) == arch


def test_dict_spellings():
    arch = SPACE.parse(DARTS_V2)
    plain = {"normal": [list(p) for p in arch.normal], "reduce": [list(p) for p in arch.reduce]}
    assert SPACE.parse(plain) == arch
    assert SPACE.parse({**plain, "normal_concat": [2, 3, 4, 5], "reduce_concat": (2, 3, 4, 5)}) == arch
    assert SPACE.parse(json.dumps(plain)) == arch


def test_naslib_compact_spellings():
    arch = SPACE.parse(NASLIB_KEY)
    assert arch.normal[:2] == (("max_pool_3x3", 0), ("dil_conv_3x3", 1))
    assert arch.reduce[7] == ("dil_conv_5x5", 3)
    compact = ast.literal_eval(NASLIB_KEY)
    assert SPACE.parse(compact) == arch
    assert SPACE.parse(tuple(tuple(cell) for cell in compact)) == arch
    assert SPACE.parse([[list(p) for p in cell] for cell in compact]) == arch
    assert to_naslib(arch) == compact
    assert SPACE.parse([list(arch.normal), list(arch.reduce)]) == arch  # [normal, reduce] of (op, source) pairs


def test_all_naslib_nb301_keys_parse():
    path = naslib_subset("zc_nasbench301.json")
    if path is None:
        pytest.skip("zc_nasbench301.json not found (set COLECACHE_NB201_DATA)")
    entries = json.loads(path.read_text())["cifar10"]
    assert len(entries) == 725
    archs = []
    for key, entry in entries.items():
        arch = SPACE.parse(key)
        assert to_naslib(arch) == ast.literal_eval(key)
        assert SPACE.parse(entry["arch"]) == arch
        assert SPACE.parse(SPACE.to_string(arch)) == arch
        archs.append(arch)
    assert len(set(archs)) == 725
    assert len({SPACE.canonical(a) for a in archs}) == 725  # random samples: no two are isomorphic


def test_none_op_parses_but_is_never_sampled():
    text = DARTS_V2.replace("('dil_conv_3x3', 2)", "('none', 2)")
    arch = SPACE.parse(text)
    assert arch.normal[7] == ("none", 2)
    with pytest.raises(SpecError, match="none"):
        to_naslib(arch)
    rng = random.Random(3)
    for a in _samples(200):
        assert all(op != "none" for op, _ in a.normal + a.reduce)
        assert all(op != "none" for op, _ in SPACE.mutate(a, rng, 3).normal)
    nones = [sum(op == "none" for op, _ in n.normal + n.reduce) for n in SPACE.neighbours(arch)]
    assert max(nones) == 1 and nones.count(0) == len(LIVE_OPS)  # moves never introduce `none`


# --- errors ------------------------------------------------------------------------------------------------
def _with(cell: str, index: int, pair) -> str:
    arch = SPACE.parse(DARTS_V2)
    pairs = {"normal": list(arch.normal), "reduce": list(arch.reduce)}
    pairs[cell][index] = pair
    return f"Genotype(normal={pairs['normal']!r}, reduce={pairs['reduce']!r})"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (_with("reduce", 3, ("max_pool_3x3", 6)), "reduce cell node 3 reads state 6, which does not exist yet"),
        (_with("normal", 0, ("sep_conv_3x3", 2)), "normal cell node 2 reads state 2, which does not exist yet"),
        (_with("normal", 1, ("sep_conv_3x3", -1)), "normal cell node 2 reads state -1"),
        (_with("normal", 4, ("conv_7x7", 0)), "unknown op 'conv_7x7' (expected one of none, max_pool_3x3"),
        (_with("reduce", 7, ("skip_connect", 2)), "reduce cell node 5 reads state 2 twice"),
        (_with("normal", 2, ("sep_conv_3x3", "a")), "normal cell node 3: source of pair 2"),
        (_with("normal", 2, ("sep_conv_3x3", True)), "source of pair 2"),
        (_with("normal", 2, ("sep_conv_3x3",)), "pair 2 must be (op, source)"),
        (_with("normal", 2, (3, "sep_conv_3x3")), "op of pair 2 must be an op name"),
        (DARTS_V2.replace("('sep_conv_3x3', 0), ", "", 1), "normal cell has 7 pairs, expected 8"),
        (DARTS_V2.replace("reduce_concat=range(2, 6)", "reduce_concat=range(2, 7)"), "reduce_concat must be [2, 3"),
        (DARTS_V2.replace("normal_concat=range(2, 6)", "normal_concat=[2, 3, 5]"), "normal_concat must be"),
        (DARTS_V2.replace("Genotype(", "Genotype(extra=1, "), "unknown field 'extra'"),
        (DARTS_V2.replace("normal_concat=range(2, 6)", "normal_concat=__import__('os')"), "not a literal"),
        (DARTS_V2[:-10], "malformed genotype"),
        ("Genome(normal=[], reduce=[])", "expected Genotype(...)"),
        ("Genotype(normal=[('sep_conv_3x3', 0)] * 8)", "malformed genotype"),
        ("", "malformed genotype: empty"),
        ("42", "malformed genotype"),
        ("[[(0, 0)] * 8]", "malformed genotype"),
        ({"normal": []}, "missing reduce cell"),
        ({"normal": [], "reduce": [], "cells": 2}, "unknown key(s) 'cells'"),
        ([[(0, 0)] * 8], "expected [normal, reduce] (2 cells), got 1"),
        (NASLIB_KEY.replace("(3, 6)", "(3, 7)"), "reduce cell node 5: op index 7 is out of range 0..6"),
        (NASLIB_KEY.replace("(3, 2)]", "(5, 2)]"), "normal cell node 5 reads state 5, which does not exist yet"),
        (NASLIB_KEY.replace("(1, 5)", "(0, 5)"), "normal cell node 2 reads state 0 twice"),
        (NASLIB_KEY.replace("(1, 5)", "(1, 'sep_conv_3x3')"), "mixes spellings"),
        (3.5, "got float"),
        ("[" * 300, "malformed genotype"),
        ("-" * 5000 + "1", "malformed genotype"),
        ("[" + "0, " * 10000 + "]", "at most 20000 accepted"),
    ],
)
def test_bad_specs_raise_spec_errors_naming_the_problem(spec, named):
    with pytest.raises(SpecError) as info:
        SPACE.parse(spec)
    assert named in str(info.value)


def test_dataclass_validates_and_coerces():
    arch = SPACE.parse(DARTS_V2)
    assert DartsGenotype([list(p) for p in arch.normal], list(arch.reduce)) == arch
    assert hash(DartsGenotype(list(arch.normal), list(arch.reduce))) == hash(arch)
    with pytest.raises(SpecError, match="reduce cell has 2 pairs"):
        DartsGenotype(arch.normal, arch.reduce[:2])


def test_parse_many_prefixes_item_index():
    with pytest.raises(SpecError, match="item 1:"):
        SPACE.parse_many([DARTS_V2, "Genotype("])


# --- identity ----------------------------------------------------------------------------------------------
def _relabel(cell, perm) -> tuple | None:
    """Renumber intermediate nodes (old 2+k -> perm[k]) and reorder pairs; None when a node would read ahead."""
    label = (0, 1, *perm)
    if any(label[s] >= label[2 + idx // 2] for idx, (_, s) in enumerate(cell)):
        return None
    nodes = [None] * 4
    for k in range(4):
        nodes[label[2 + k] - 2] = [(op, label[s]) for op, s in cell[2 * k : 2 * k + 2]]
    return tuple(pair for node in nodes for pair in node)


def test_canonical_ignores_input_order_and_node_labels():
    rng = random.Random(5)
    relabelled_some = 0
    for arch in _samples(60, seed=1):
        cells = []
        for cell in (arch.normal, arch.reduce):
            options = [c for p in itertools.permutations(range(2, 6)) if (c := _relabel(cell, p)) is not None]
            relabelled_some += len(options) > 1
            new = list(rng.choice(options))
            for k in range(4):
                if rng.random() < 0.5:
                    new[2 * k], new[2 * k + 1] = new[2 * k + 1], new[2 * k]
            cells.append(tuple(new))
        variant = DartsGenotype(*cells)
        assert SPACE.canonical(variant) == SPACE.canonical(arch)
        assert SPACE.canonical_arch(variant) == SPACE.canonical_arch(arch)
    assert relabelled_some > 10


def test_canonical_relabels_independent_nodes():
    # Nodes 2 and 3 both read only the inputs, so they can trade labels (node 4 follows).
    a = SPACE.parse(
        {
            "normal": [
                ("sep_conv_5x5", 0),
                ("skip_connect", 1),
                ("avg_pool_3x3", 0),
                ("max_pool_3x3", 1),
                ("sep_conv_3x3", 2),
                ("dil_conv_3x3", 3),
                ("skip_connect", 4),
                ("sep_conv_3x3", 0),
            ],
            "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4,
        }
    )
    b = SPACE.parse(
        {
            "normal": [
                ("max_pool_3x3", 1),
                ("avg_pool_3x3", 0),
                ("skip_connect", 1),
                ("sep_conv_5x5", 0),
                ("dil_conv_3x3", 2),
                ("sep_conv_3x3", 3),
                ("sep_conv_3x3", 0),
                ("skip_connect", 4),
            ],
            "reduce": [("max_pool_3x3", 1), ("max_pool_3x3", 0)] * 4,
        }
    )
    assert a != b
    assert SPACE.canonical_arch(a) == SPACE.canonical_arch(b)
    rep = SPACE.canonical_arch(a).normal
    assert all(rep[2 * k] <= rep[2 * k + 1] for k in range(4))


def test_canonical_separates_different_cells():
    archs = _samples(300, seed=2)
    assert len({SPACE.canonical(a) for a in archs}) == len(set(archs))
    arch = archs[0]
    rep = SPACE.canonical_arch(arch)
    assert _is_valid(rep) and SPACE.canonical_arch(rep) == rep

    def ops(a):
        return sorted(op for op, _ in a.normal), sorted(op for op, _ in a.reduce)

    changed_op = [n for n in SPACE.neighbours(arch) if ops(n) != ops(arch)]
    assert len(changed_op) == 2 * 8 * 6
    assert all(SPACE.canonical(n) != SPACE.canonical(arch) for n in changed_op)
    # The normal and reduction cells are not interchangeable.
    swapped = DartsGenotype(arch.reduce, arch.normal)
    assert SPACE.canonical(swapped) != SPACE.canonical(arch)


# --- search moves ------------------------------------------------------------------------------------------
def test_sampling_matches_the_nb301_sampler():
    archs = _samples(400, seed=3)
    assert all(_is_valid(a) for a in archs)
    ops = [op for a in archs for op, _ in a.normal + a.reduce]
    assert set(ops) == set(LIVE_OPS)
    node5_sources = {s for a in archs for _, s in a.normal[6:]}
    assert node5_sources == {0, 1, 2, 3, 4}
    assert _samples(5, seed=9) == _samples(5, seed=9)


def _slot_changes(a: DartsGenotype, b: DartsGenotype) -> int:
    return sum(x != y for x, y in zip(a.normal + a.reduce, b.normal + b.reduce))


def test_mutation_is_valid_and_changes_k_edges():
    rng = random.Random(4)
    for arch in _samples(50, seed=4):
        for edits in (1, 2, 5, 16):
            child = SPACE.mutate(arch, rng, edits)
            assert child != arch and _is_valid(child)
            assert _slot_changes(arch, child) == edits
    with pytest.raises(ValueError):
        SPACE.mutate(arch, rng, 0)
    with pytest.raises(ValueError):
        SPACE.mutate(arch, rng, 17)


def test_neighbours_are_every_single_edit():
    arch = SPACE.parse(DARTS_V2)
    neighbours = SPACE.neighbours(arch)
    assert neighbours == SPACE.neighbours(arch)
    assert len(neighbours) == len(set(neighbours))
    assert all(_is_valid(n) and _slot_changes(arch, n) == 1 for n in neighbours)
    # Each pair: 6 other ops; sources other than its own and its sibling's: node 2: 0, node 3: 1, 4: 2, 5: 3.
    per_cell = 8 * 6 + 2 * (0 + 1 + 2 + 3)
    assert len(neighbours) == 2 * per_cell
    rng = random.Random(6)
    for _ in range(30):
        assert SPACE.mutate(arch, rng, 1) in set(neighbours)


# --- encodings ---------------------------------------------------------------------------------------------
def test_encodings_have_fixed_lengths():
    assert SPACE.encodings == ("adjacency", "path") and SPACE.default_encodings == ("path",)
    for arch in [*_samples(20), SPACE.parse(DARTS_V2)]:
        adjacency = SPACE.encode(arch, "adjacency")
        assert len(adjacency) == ADJACENCY_DIM == 2 * len(EDGES) * 9 == 252
        assert sum(adjacency) == 2 * len(EDGES)  # one slot per edge, present or absent
        assert len(SPACE.encode(arch, "path")) == PATH_DIM == 1596
    with pytest.raises(ValueError):
        SPACE.encode(arch, "onehot")


def _brute_force_paths(cell) -> dict[tuple[int, tuple[str, ...]], int]:
    counts: dict = {}
    edges = [(s, 2 + i // 2, op) for i, (op, s) in enumerate(cell) if op != "none"]

    def walk(start, state, ops):
        for s, t, op in edges:
            if s == state and len(ops) < 3:
                key = (start, (*ops, op))
                counts[key] = counts.get(key, 0) + 1
                walk(start, t, (*ops, op))

    walk(0, 0, ())
    walk(1, 1, ())
    return counts


def test_path_encoding_counts_paths():
    arch = SPACE.parse(DARTS_V2.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('skip_connect', 0), ('none', 2)"))
    vector = SPACE.encode(arch, "path")
    for c, cell in enumerate((arch.normal, arch.reduce)):
        expected = _brute_force_paths(cell)
        block = vector[c * 798 : (c + 1) * 798]
        assert sum(block) == sum(expected.values())
        for (start, ops), count in expected.items():
            offset = {1: 0, 2: 7, 3: 56}[len(ops)]
            index = 0
            for op in ops:
                index = index * 7 + LIVE_OPS.index(op)
            assert block[start * 399 + offset + index] == count
    # DARTS_V2 normal cell: state 0 reaches nodes 2 and 3 by sep_conv_3x3 (node 4 reads it by skip_connect).
    assert vector[LIVE_OPS.index("sep_conv_3x3")] == 2


# --- rendered code -----------------------------------------------------------------------------------------
def test_space_contract():
    check_space_contract(SPACE)


def _namespace(arch, primitives, context="none", dataset="cifar10"):
    namespace: dict = {}
    exec(RENDER_NAMESPACE_IMPORTS, namespace)
    if primitives == "exclude_helper":
        exec(SPACE.helper_source(), namespace)
    exec(SPACE.render(arch, primitives=primitives, context=context, dataset=dataset), namespace)
    return namespace


def _with_none_and_skip() -> DartsGenotype:
    """Every op kind, including `none` and skip_connect on stride-2 reduction edges."""
    return SPACE.parse(
        {
            "normal": [
                ("none", 0),
                ("skip_connect", 1),
                ("sep_conv_5x5", 0),
                ("dil_conv_5x5", 2),
                ("avg_pool_3x3", 3),
                ("max_pool_3x3", 1),
                ("none", 4),
                ("dil_conv_3x3", 0),
            ],
            "reduce": [
                ("skip_connect", 0),
                ("none", 1),
                ("none", 0),
                ("sep_conv_3x3", 2),
                ("avg_pool_3x3", 1),
                ("skip_connect", 3),
                ("dil_conv_5x5", 0),
                ("max_pool_3x3", 4),
            ],
        }
    )


@pytest.mark.parametrize("primitives", ["exclude_helper", "helper", "inline"])
def test_both_cells_run_with_darts_shapes(primitives):
    import torch

    torch.manual_seed(0)
    for arch in [*_samples(3, seed=7), _with_none_and_skip()]:
        namespace = _namespace(arch, primitives)
        for reduction_prev in (False, True):
            size0 = 16 if reduction_prev else 8
            s0, s1 = torch.randn(2, 6, size0, size0), torch.randn(2, 10, 8, 8)
            for name, out_size in (("NormalCell", 8), ("ReductionCell", 4)):
                cell = namespace[name](6, 10, 8, reduction_prev).eval()
                with torch.no_grad():
                    out = cell(s0, s1)
                assert out.shape == (2, 4 * 8, out_size, out_size), (name, primitives, reduction_prev)
                assert torch.isfinite(out).all()


def test_text_shape():
    arch = _with_none_and_skip()
    helper = SPACE.render(arch, primitives="helper")
    excluded = SPACE.render(arch)
    inline = SPACE.render(arch, primitives="inline")
    assert "class SepConv" in helper and "class SepConv" not in excluded and "SepConv(C, C, 5, 1, 2)" in excluded
    assert "FactorizedReduce(C, C)" in excluded and "Zero(2)" in excluded
    assert "class " not in inline.replace("class NormalCell", "").replace("class ReductionCell", "")
    assert "Network" not in excluded and "num_classes=100" in SPACE.render(arch, context="backbone", dataset="cifar100")
    assert SPACE.render(arch) == excluded  # a pure function
    with pytest.raises(SpecError, match="accepted"):
        SPACE.render(arch, context="comment")
    with pytest.raises(SpecError, match="accepted"):
        SPACE.render(arch, dataset="imagenet")


def test_inline_normal_cell_equals_helper_normal_cell():
    """Same layers in the same order, so with shared weights the two spellings compute the same thing."""
    import torch

    arch = _with_none_and_skip()
    cells = [_namespace(arch, p)["NormalCell"](6, 10, 8, False) for p in ("helper", "inline")]
    states = [list(c.state_dict().values()) for c in cells]
    assert [t.shape for t in states[0]] == [t.shape for t in states[1]]
    torch.manual_seed(1)
    for a, b in zip(*states):
        if a.is_floating_point():
            a.copy_(torch.rand_like(a) + 0.5)
            b.copy_(a)
    s0, s1 = torch.randn(2, 6, 8, 8), torch.randn(2, 10, 8, 8)
    with torch.no_grad():
        outs = [c.eval()(s0, s1) for c in cells]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_inline_factorized_reduce_equals_helper():
    import torch

    namespace = _namespace(_with_none_and_skip(), "helper")
    helper = namespace["FactorizedReduce"](6, 8).eval()
    inline = eval(
        "nn.ModuleList([nn.Sequential(nn.ReLU(), nn.Conv2d(6, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4)),"
        " nn.Sequential(nn.ReLU(), nn.ZeroPad2d((-1, 1, -1, 1)), nn.Conv2d(6, 4, 1, stride=2, bias=False),"
        " nn.BatchNorm2d(4))])",
        namespace,
    ).eval()
    assert "nn.ZeroPad2d((-1, 1, -1, 1))" in SPACE.render(_with_none_and_skip(), primitives="inline")
    torch.manual_seed(2)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(helper.bn, name).copy_(torch.rand(8) + 0.5)
            getattr(inline[0][2], name).copy_(getattr(helper.bn, name)[:4])
            getattr(inline[1][3], name).copy_(getattr(helper.bn, name)[4:])
        inline[0][1].weight.copy_(helper.conv_1.weight)
        inline[1][2].weight.copy_(helper.conv_2.weight)
        x = torch.randn(2, 6, 8, 8)
        assert torch.allclose(helper(x), torch.cat([branch(x) for branch in inline], dim=1), atol=1e-5)


@pytest.mark.parametrize(("dataset", "classes"), [("cifar10", 10), ("cifar100", 100), ("imagenet16-120", 120)])
def test_backbone_network(dataset, classes):
    import torch

    namespace = _namespace(_with_none_and_skip(), "inline", "backbone", dataset)
    network = namespace["Network"](C=4, layers=5).eval()
    assert sum(1 for c in network.cells if type(c).__name__ == "ReductionCell") == 2
    with torch.no_grad():
        assert network(torch.randn(2, 3, 16, 16)).shape == (2, classes)


def test_example_calls():
    arch = SPACE.parse(DARTS_V2)
    expression, shapes = SPACE.example_call(arch, "none")
    assert expression.startswith("ReductionCell(") and len(shapes) == 2
    assert SPACE.example_call(arch, "backbone")[0] == "Network(C=8, layers=5)"
    info = SPACE.describe()
    assert info["name"] == "darts" and info["renderer_version"] == "darts-pytorch/1" and not info["enumerable"]
