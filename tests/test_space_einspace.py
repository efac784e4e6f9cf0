"""The einspace search space: spellings, shape inference and its errors, canonical form, moves, code."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from colecache_client.spaces import SpecError, get_space
from colecache_client.spaces.einspace import (
    ENCODING_NAMES,
    MAX_NEIGHBOURS,
    EinNode,
    EinSpace,
    count_nodes,
    to_json,
)
from space_contract import build_rendered, check_space_contract, run_rendered

SPACE = EinSpace()

CONV = (
    "sequential{routing{im2col(3,1,1), computation{linear(32)}, col2im}, "
    "sequential{computation{norm}, computation{relu}}}"
)
RESIDUAL = (
    "branching(2){clone(2), routing{im2col(3,1,1), computation{linear(16)}, col2im}, computation{identity}, add(2)}"
)
ATTENTION = (  # einspace's scaled-dot-product attention seed, on 4x4 patches of the image
    "routing{im2col(4,4,0), branching(2){clone(2), sequential{branching(2){clone(2), computation{linear(64)}, "
    "routing{identity, computation{linear(64)}, perm(0,2,1)}, dot_product(scaled)}, computation{softmax}}, "
    "computation{linear(64)}, dot_product}, col2im}"
)
GROUPED = "branching(4){group(4,1), sequential{computation{norm}, computation{pos_enc}}, cat(4,1)}"
MLP_TOKENS = "routing{perm(0,2,3,1), sequential{computation{linear(64)}, computation{relu}}, perm(0,3,1,2)}"
EXAMPLES = {
    CONV: (32, 16, 16),
    RESIDUAL: (16, 16, 16),
    ATTENTION: (64, 4, 4),
    GROUPED: (16, 16, 16),
    MLP_TOKENS: (64, 16, 16),
}


def nested(items: list[str]) -> str:
    """Right-nested sequential chain of `items`."""
    return items[0] if len(items) == 1 else f"sequential{{{items[0]}, {nested(items[1:])}}}"


def balanced(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    half = len(items) // 2
    return f"sequential{{{balanced(items[:half])}, {balanced(items[half:])}}}"


def samples(n: int, seed: int = 0, space: EinSpace = SPACE) -> list[EinNode]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def test_registered_under_its_name():
    space = get_space("einspace")
    assert isinstance(space, EinSpace)
    assert space.renderer_version == "einspace-pytorch/1"
    assert space.encodings == ("ops",) and space.default_encodings == ()


@pytest.mark.parametrize(("spec", "shape"), list(EXAMPLES.items()))
def test_string_round_trip_and_inferred_shape(spec, shape):
    arch = SPACE.parse(spec)
    assert SPACE.to_string(arch) == spec
    assert str(arch) == spec
    assert SPACE.parse(arch) is arch
    assert SPACE.output_shape(arch) == shape


def test_json_forms_round_trip():
    for spec in EXAMPLES:
        arch = SPACE.parse(spec)
        payload = to_json(arch)
        assert SPACE.parse(payload) == arch
        assert SPACE.parse(json.dumps(payload)) == arch
    tree = {"op": "sequential", "children": [{"op": "computation", "children": ["relu"]}, "norm"]}
    listed = ["sequential", ["computation", "relu"], "norm"]
    short = "sequential{relu, norm}"
    assert SPACE.parse(tree) == SPACE.parse(listed) == SPACE.parse(short)
    assert SPACE.to_string(SPACE.parse(tree)) == "sequential{computation{relu}, computation{norm}}"
    assert SPACE.to_json(SPACE.parse(short)) == {
        "op": "sequential",
        "children": [{"op": "computation", "children": ["relu"]}, {"op": "computation", "children": ["norm"]}],
    }


def test_whitespace_and_old_einspace_names():
    spaced = SPACE.parse(" routing { perm(0, 2, 3, 1) , linear(64) , perm(0,3,1,2) } ")
    assert spaced == SPACE.parse("routing{perm(0,2,3,1), computation{linear(64)}, perm(0,3,1,2)}")
    old = SPACE.parse(
        "sequential_module{routing_module{im2col3k1s1p, computation_module{linear64}, col2im}, "
        "branching(2){clone_tensor2, learnable_positional_encoding, identity, add_tensors}}"
    )
    new = SPACE.parse(
        "sequential{routing{im2col(3,1,1), computation{linear(64)}, col2im}, "
        "branching(2){clone(2), computation{pos_enc}, computation{identity}, add(2)}}"
    )
    assert old == new
    assert SPACE.parse("branching(8){group_dim8s2d, relu, cat_tensors2d8t}") == SPACE.parse(
        "branching(8){group(8,2), computation{relu}, cat(8,2)}"
    )
    assert SPACE.parse("routing{permute231, relu, identity}") == SPACE.parse("routing{perm(0,2,3,1), relu, identity}")


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        # shape rules, named by node path
        (
            "branching(2){clone(2), linear(32), identity, add(2)}",
            ["node 3:", "add(2) needs equal shapes", "(16, 16, 32) and (16, 16, 16)"],
        ),
        ("sequential{relu, branching(2){clone(2), linear(32), identity, add(2)}}", ["node 1.3:", "add(2)"]),
        ("branching(2){group(2,2), relu, linear(32), cat(2,1)}", ["node 3:", "cat(2,1)", "except in dim 1"]),
        ("branching(2){clone(2), linear(32), linear(64), dot_product}", ["node 3:", "dot_product", "(..., n, m)"]),
        ("branching(8){group(8,3), relu, add(8)}", []),  # valid: 16 columns split in 8
        ("routing{identity, relu, col2im}", ["node 2:", "col2im needs tokens"]),
        (
            "routing{im2col(3,1,1), routing{identity, perm(0,2,3,1), identity}, col2im}",
            ["node 1.1:", "unknown module 'perm(0,2,3,1)'"],
        ),
        ("routing{perm(0,2,1), relu, identity}", ["node 0:", "perm(0,2,1) permutes tokens"]),
        (
            "routing{im2col(3,1,1), routing{im2col(3,1,1), identity, col2im}, col2im}",
            ["node 1.0:", "needs an image (C, H, W)", "(256, 144)"],
        ),
        ("routing{im2col(3,1,1), routing{perm(0,2,1), linear(256), perm(0,2,1)}, col2im}", []),  # 256 tokens
        (
            "routing{im2col(3,1,1), routing{perm(0,2,1), linear(32), perm(0,2,1)}, col2im}",
            ["node 2:", "col2im needs 16*16 = 256 tokens", "(32, 144)"],
        ),
        ("branching(2){group(2,3), relu, relu, cat(2,3)}", []),
        (
            "routing{im2col(3,1,1), branching(2){group(2,3), relu, relu, cat(2,3)}, col2im}",
            ["node 1.0:", "group(2,3) splits tensor dim 3", "(256, 144)"],
        ),
        # closed vocabulary and structure
        ("conv", ["node root:", "unknown module 'conv'", "sequential, branching(2)"]),
        ("sequential{conv3x3, relu}", ["node 0:", "unknown module 'conv3x3'"]),
        (
            "branching(2){clone(2), relu, relu, mul(2)}",
            ["node 3:", "unknown aggregation function 'mul(2)' for branching(2)", "add(2), cat(2,1)"],
        ),
        ("branching(4){clone(2), relu, add(4)}", ["node 0:", "unknown branching function 'clone(2)'", "clone(4)"]),
        ("branching(4){clone(4), relu, dot_product}", ["node 2:", "unknown aggregation function 'dot_product'"]),
        ("routing{col2im, relu, identity}", ["node 0:", "unknown pre-routing function 'col2im'"]),
        ("routing{identity, relu, im2col(3,1,1)}", ["node 2:", "unknown post-routing function"]),
        (
            "sequential{computation{linear(48)}, relu}",
            ["node 0.0:", "unknown computation function 'linear(48)'", "linear(16)"],
        ),
        ("routing{identity, relu}", ["node root:", "routing takes 3 children", "got 2"]),
        ("sequential{relu{identity}, relu}", ["node 0:", "computation function relu takes no children"]),
        ("routing{identity{relu}, relu, identity}", ["node 0:", "pre-routing function identity takes no children"]),
        ("relu", ["node root:", "root must be one of", "no bare computation module"]),
        ("computation{linear(64)}", ["node root:", "root must be one of"]),
        # malformed strings and JSON
        ("sequential{relu, relu", ["expected ',' or '}'", "end of the string"]),
        ("sequential{relu,, relu}", ["expected a module or function name", "character 16"]),
        ("sequential{relu, relu}}", ["unexpected '}' at character 22"]),
        ("sequential{relu; relu}", ["unexpected ';' at character 15"]),
        ("   ", ["empty"]),
        ('{"op": "sequential", ', ["einspace JSON"]),
        ({"op": 3}, ["node root:", "'op' must be a string"]),
        ({"op": "sequential", "children": ["relu", "relu"], "x": 1}, ["unknown key(s) ['x']"]),
        ({"op": "sequential", "children": "relu"}, ["'children' must be a list"]),
        ([], ["empty list"]),
        (["sequential", "relu", 5], ["node 1:", "got int"]),
        (3.5, ["got float"]),
        ("[" * 100_000 + "]" * 100_000, ["nested more than"]),
        ("sequential{" * 30 + "relu" + "}" * 30, ["nested more than 26 levels"]),
    ],
)
def test_bad_specs_name_the_node_and_the_rule(spec, fragments):
    if not fragments:
        SPACE.parse(spec)  # the valid neighbours of the error cases parse
        return
    with pytest.raises(SpecError) as info:
        SPACE.parse(spec)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_limits_depth_nodes_params_elements():
    deep = nested(["relu"] * 13)  # sequential modules at depths 1..12, a computation at depth 13
    with pytest.raises(SpecError, match=r"node 1(\.1){10}\.0: module depth 13 exceeds max_depth=12"):
        SPACE.parse(deep)
    assert count_nodes(SPACE.parse(nested(["relu"] * 12))) == 11 + 24
    with pytest.raises(SpecError, match="more than max_nodes=200"):
        SPACE.parse(balanced(["relu"] * 68))  # 67 sequential + 68 computation{relu} = 203 nodes
    assert count_nodes(SPACE.parse(balanced(["relu"] * 67))) == 66 + 134 == SPACE.max_nodes
    with pytest.raises(SpecError, match="8,390,656 parameters, more than max_params"):
        SPACE.parse("routing{im2col(16,16,0), linear(2048), identity}")
    SPACE.parse("routing{im2col(16,16,0), linear(1024), identity}")
    with pytest.raises(SpecError, match=r"node 1\.2: cat\(4,1\) output \(64, 16, 2048\) has 2,097,152 elements"):
        SPACE.parse(
            "sequential{routing{perm(0,2,3,1), linear(2048), identity}, branching(4){clone(4), identity, cat(4,1)}}"
        )
    small = EinSpace(max_depth=4, max_nodes=30)
    for arch in samples(150, seed=5, space=small):
        info = small.analyse(arch)
        assert info.depth <= 4 and info.nodes <= 30
    with pytest.raises(SpecError, match="max_depth=4"):
        small.parse(nested(["relu"] * 5))


def test_branching_copies_count_parameters_per_branch():
    one = SPACE.analyse(SPACE.parse("routing{identity, linear(32), identity}")).params
    eight = SPACE.analyse(SPACE.parse("branching(8){clone(8), linear(32), add(8)}")).params
    assert eight == 8 * one == 8 * (16 * 32 + 32)


def test_canonical_sorts_commutative_branches_only():
    a = "sequential{routing{im2col(3,1,1), linear(32), col2im}, relu}"  # both (32, 16, 16)
    b = "routing{perm(0,2,3,1), linear(32), perm(0,3,1,2)}"

    def pair(split: str, first: str, second: str, merge: str) -> EinNode:
        return SPACE.parse(f"branching(2){{{split}, {first}, {second}, {merge}}}")

    for merge in ("add(2)", "cat(2,1)", "cat(2,3)"):
        left, right = pair("clone(2)", a, b, merge), pair("clone(2)", b, a, merge)
        assert left != right
        assert SPACE.canonical(left) == SPACE.canonical(right)
        assert SPACE.canonical_arch(left) == SPACE.canonical_arch(right)
    # a group split feeds each branch a different slice; a dot product is not commutative
    left = SPACE.parse("branching(2){group(2,1), linear(16), relu, add(2)}")
    right = SPACE.parse("branching(2){group(2,1), relu, linear(16), add(2)}")
    assert SPACE.canonical(left) != SPACE.canonical(right)
    left = SPACE.parse("branching(2){clone(2), linear(16), routing{perm(0,1,3,2), relu, identity}, dot_product}")
    right = SPACE.parse("branching(2){clone(2), routing{perm(0,1,3,2), relu, identity}, linear(16), dot_product}")
    assert SPACE.canonical(left) != SPACE.canonical(right)
    # nested: swapping deep inside a sequential is found too
    outer = "sequential{{norm, {}}}"
    assert SPACE.canonical(
        SPACE.parse(outer.format(SPACE.to_string(pair("clone(2)", a, b, "add(2)"))))
    ) == SPACE.canonical(SPACE.parse(outer.format(SPACE.to_string(pair("clone(2)", b, a, "add(2)")))))


def test_canonical_sequential_chains_are_associative_and_never_deeper():
    items = ["linear(32)", "relu", "norm", "softmax", "pos_enc"]
    right, flat = SPACE.parse(nested(items)), SPACE.parse(balanced(items))
    assert right != flat
    assert SPACE.canonical(right) == SPACE.canonical(flat)
    assert SPACE.canonical_arch(right) == flat  # the shallowest nesting, split nearest the middle
    # a chain whose first item is deep: re-nesting by count alone would push it past max_depth
    deep = nested(["relu"] * 11)
    arch = SPACE.parse(f"sequential{{{deep}, sequential{{relu, sequential{{relu, relu}}}}}}")
    rep = SPACE.canonical_arch(arch)
    assert SPACE.analyse(rep).depth <= SPACE.analyse(arch).depth == 12
    for arch in samples(300, seed=11):
        rep = SPACE.canonical_arch(arch)
        info, rep_info = SPACE.analyse(arch), SPACE.analyse(rep)  # the representative is valid
        assert rep_info.output_shape == info.output_shape and rep_info.params == info.params
        assert rep_info.depth <= info.depth and rep_info.nodes == info.nodes
        assert SPACE.canonical_arch(rep) == rep
        assert SPACE.canonical(rep) == SPACE.canonical(arch) == SPACE.to_string(rep)


def test_samples_are_valid_diverse_and_within_limits():
    archs = samples(300, seed=3)
    assert len({SPACE.to_string(a) for a in archs}) > 250
    kinds = set()
    for arch in archs:
        info = SPACE.analyse(arch)
        assert info.depth <= SPACE.max_depth and info.nodes <= SPACE.max_nodes
        assert info.params <= SPACE.max_params
        assert arch.op != "computation"
        assert SPACE.parse(SPACE.to_string(arch)) == arch
        kinds.update(node.op for node in _walk(arch))
    assert {
        "sequential",
        "branching(2)",
        "branching(4)",
        "branching(8)",
        "routing",
        "computation",
        "im2col(3,1,1)",
        "col2im",
        "dot_product",
        "pos_enc",
    } <= kinds
    assert samples(5, seed=9) == samples(5, seed=9)


def _walk(node: EinNode):
    yield node
    for child in node.children:
        yield from _walk(child)


def test_mutations_are_valid_and_different():
    rng = random.Random(4)
    for arch in samples(60, seed=4):
        for edits in (1, 2, 3):
            child = SPACE.mutate(arch, rng, edits)
            assert child != arch
            assert SPACE.parse(SPACE.to_string(child)) == child
    arch = SPACE.parse(CONV)
    assert SPACE.mutate(arch, random.Random(1), 2) == SPACE.mutate(arch, random.Random(1), 2)
    with pytest.raises(ValueError):
        SPACE.mutate(arch, rng, 0)


def test_neighbours_are_one_edit_valid_unique_and_deterministic():
    arch = SPACE.parse(CONV)
    found = SPACE.neighbours(arch)
    assert found == SPACE.neighbours(arch)
    assert arch not in found and len(set(found)) == len(found)
    strings = {SPACE.to_string(n) for n in found}
    assert CONV.replace("computation{norm}", "computation{softmax}") in strings  # a leaf swap
    assert CONV.replace("im2col(3,1,1)", "im2col(1,1,0)") in strings  # a routing swap with the same grid
    assert CONV.replace("computation{relu}", "computation{identity}") in strings
    assert CONV.replace("im2col(3,1,1)", "im2col(3,2,1)") in strings  # col2im follows the new 8x8 grid
    assert not any("perm(0,2,1), computation" in s for s in strings)  # shape-invalid swaps are left out
    for arch in samples(30, seed=8):
        found = SPACE.neighbours(arch)
        assert len(found) <= MAX_NEIGHBOURS and arch not in found
        for neighbour in found[:20]:
            assert SPACE.parse(SPACE.to_string(neighbour)) == neighbour


def test_ops_encoding_counts_the_vocabulary():
    assert len(ENCODING_NAMES) == 69
    arch = SPACE.parse(ATTENTION)
    vector = SPACE.encode(arch, "ops")
    assert len(vector) == 69
    counts = dict(zip(ENCODING_NAMES, vector))
    assert counts["module:branching(2)"] == 2 and counts["module:routing"] == 2
    assert counts["module:computation"] == 4 and counts["module:sequential"] == 1
    assert counts["computation_fn:linear(64)"] == 3 and counts["computation_fn:softmax"] == 1
    assert counts["aggregation_fn:dot_product"] == 1 and counts["aggregation_fn:dot_product(scaled)"] == 1
    assert counts["prerouting_fn:im2col(4,4,0)"] == 1 and counts["postrouting_fn:col2im"] == 1
    assert counts["prerouting_fn:identity"] == 1 and counts["postrouting_fn:perm(0,2,1)"] == 1
    assert counts["depth"] == SPACE.analyse(arch).depth == 6
    assert counts["nodes"] == count_nodes(arch) == SPACE.analyse(arch).nodes
    for arch in samples(30, seed=2):
        vector = SPACE.encode(arch, "ops")
        assert len(vector) == 69 and vector[-2] == SPACE.analyse(arch).depth
    with pytest.raises(ValueError, match="unknown encoding"):
        SPACE.encode(arch, "path")


def test_space_contract():
    check_space_contract(SPACE, n=40, seed=0, forward=10)


def test_forward_output_matches_inferred_shape():
    archs = [SPACE.parse(spec) for spec in EXAMPLES] + samples(6, seed=21)
    for arch in archs:
        expected = SPACE.output_shape(arch)
        for primitives in ("exclude_helper", "helper", "inline"):
            out = run_rendered(SPACE, arch, primitives=primitives)
            assert tuple(out.shape) == (2, *expected), (SPACE.to_string(arch), primitives)


def test_render_variants_spell_primitives_differently():
    arch = SPACE.parse(f"sequential{{{ATTENTION}, {GROUPED}}}")
    referenced = SPACE.render(arch, primitives="exclude_helper")
    defined = SPACE.render(arch, primitives="helper")
    inline = SPACE.render(arch, primitives="inline")
    assert "Im2Col(kernel_size=4, stride=4, padding=0)" in referenced and "class Im2Col" not in referenced
    assert "DotProduct(scaled=True)" in referenced and "GroupDim(4, dim=1)" in referenced
    assert defined.startswith("class CloneTensor") and defined.endswith(referenced)
    for helper in ("Im2Col", "Col2Im", "DotProduct", "GroupDim", "CatTensors", "LearnablePositionalEncoding"):
        assert helper not in inline
    assert "F.unfold(x, kernel_size=4, stride=4, padding=0).transpose(1, 2)" in inline
    assert "torch.matmul" in inline and "class Block1(nn.Module)" in inline
    assert "nn.ModuleList([Block1() for _ in range(4)])" in inline
    assert "import" not in referenced + inline
    assert SPACE.render(arch, primitives="inline") == inline  # a pure function of its arguments
    module, _ = build_rendered(SPACE, arch, primitives="inline")
    assert sum(p.numel() for p in module.parameters()) == SPACE.analyse(arch).params
    assert SPACE.example_call(arch) == ("Network()", (2, 16, 16, 16))
    with pytest.raises(SpecError, match="primitives"):
        SPACE.render(arch, primitives="fancy")
    with pytest.raises(SpecError, match="context"):
        SPACE.render(arch, context="backbone")


def test_other_input_shapes():
    tokens = EinSpace(input_shape=(8, 32))
    arch = tokens.parse("routing{perm(0,2,1), linear(16), perm(0,2,1)}")
    assert tokens.output_shape(arch) == (16, 32)
    assert tuple(run_rendered(tokens, arch, primitives="inline").shape) == (2, 16, 32)
    with pytest.raises(SpecError, match="im2col"):
        tokens.parse("routing{im2col(3,1,1), relu, col2im}")
    for arch in samples(20, seed=1, space=tokens):
        assert tokens.parse(tokens.to_string(arch)) == arch
    with pytest.raises(ValueError):
        EinSpace(input_shape=(3,))


def test_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import colecache_client.spaces.einspace as m; m.EinSpace()"
    subprocess.run([sys.executable, "-c", code], check=True)
