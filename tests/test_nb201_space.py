"""The NB201 search space: parsing, validation errors, canonical form, mutation and encodings."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from colecache_client.spaces import SpecError, get_space
from colecache_client.spaces.nb201 import EDGES, OPS, PATH_DIM, NB201Cell, path_encoding

SPACE = get_space("nb201")
BEST_C100 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_round_trip_string_and_indices():
    cell = SPACE.parse(BEST_C100)
    assert cell.to_string() == BEST_C100
    assert cell.indices == (3, 3, 3, 1, 3, 3)
    assert SPACE.parse(list(cell.indices)) == cell
    assert SPACE.parse(list(cell.ops)) == cell


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'conv_3x3'"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "'none~2'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2"),
        ("|none~0|+|none~0|none~1|", "3 '+'-separated"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "'none0'"),
        ([0, 1, 2, 3, 4], "got 5"),
        ([0, 1, 2, 3, 4, 5], "op index 5 at position 5"),
        ([0, 1, 2, 3, 4, "conv"], "'conv' at position 5"),
        ([0, 1, 2, 3, 4, True], "boolean"),
        (3.5, "float"),
    ],
)
def test_parse_errors_name_the_bad_token(spec, named):
    with pytest.raises(SpecError) as info:
        SPACE.parse(spec)
    assert named in str(info.value)


def test_parse_many_prefixes_item_index():
    with pytest.raises(SpecError, match="item 1:"):
        SPACE.parse_many([BEST_C100, "nope"])


# Node 1 is a skip of the input, so node 2 = skip(x0) + conv1x1(x1) = conv1x1(x0) + skip(x1).
EQUIVALENT = (
    "|skip_connect~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|",
    "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|",
)


def test_canonical_merges_equivalent_cells():
    a, b = (SPACE.parse(s) for s in EQUIVALENT)
    assert a != b
    assert a.canonical() == b.canonical()
    assert a.canonical() != NB201Cell(("nor_conv_3x3",) * 6).canonical()


def test_canonical_reproduces_nats_unique_strings(nb201_table):
    mine = [SPACE.parse(s).canonical() for s in nb201_table.arch]
    assert mine == nb201_table.unique
    assert len(set(mine)) == 6466


def test_whole_space_enumeration():
    cells = list(SPACE.all_cells())
    assert len(cells) == 15625 == len(set(cells))
    assert len({c.canonical() for c in cells}) == 6466


def test_mutation_changes_exactly_k_edges():
    rng = random.Random(0)
    for edits in range(1, len(EDGES) + 1):
        for _ in range(50):
            cell = SPACE.sample(rng)
            child = SPACE.mutate(cell, rng, edits)
            assert sum(a != b for a, b in zip(cell.ops, child.ops)) == edits
    with pytest.raises(ValueError):
        SPACE.mutate(cell, rng, 0)


def test_neighbours_are_all_single_edits():
    cell = SPACE.parse(BEST_C100)
    neighbours = SPACE.neighbours(cell)
    assert len(neighbours) == len(EDGES) * (len(OPS) - 1) == len(set(neighbours))
    assert all(sum(a != b for a, b in zip(cell.ops, n.ops)) == 1 for n in neighbours)


def test_dedupe_by_canonical_form():
    a, b = (SPACE.parse(s) for s in EQUIVALENT)
    c = SPACE.parse(BEST_C100)
    assert SPACE.dedupe([a, b, c, a]) == [a, c]
    assert SPACE.dedupe([a, b, c], seen=[c.canonical()]) == [a]


def test_onehot_encoding():
    vec = SPACE.encode(SPACE.parse(BEST_C100), "onehot")
    assert len(vec) == 30 and sum(vec) == 6
    assert vec[0 * 5 + OPS.index("nor_conv_3x3")] == 1 and vec[3 * 5 + OPS.index("skip_connect")] == 1


def test_path_encoding_reads_routes_over_actual_edges():
    # Only the 0->1->3 route is open: edge 0->1 conv1x1 then edge 1->3 avg pool.
    ops = ["none"] * 6
    ops[0], ops[4] = "nor_conv_1x1", "avg_pool_3x3"
    vec = path_encoding(NB201Cell(tuple(ops)))
    assert len(vec) == PATH_DIM == 84 and sum(vec) == 1
    live = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert vec[4 + live.index("nor_conv_1x1") * 4 + live.index("avg_pool_3x3")] == 1
    # A reversed route (pool then conv) is a different path feature.
    ops[0], ops[4] = "avg_pool_3x3", "nor_conv_1x1"
    assert path_encoding(NB201Cell(tuple(ops))) != vec


def test_path_encoding_counts_and_drops_dead_routes():
    all_conv = path_encoding(NB201Cell(("nor_conv_3x3",) * 6))
    assert sum(all_conv) == 4  # four open routes
    assert all_conv[4 + 2 * 4 + 2] == 2  # 0->1->3 and 0->2->3 share the op sequence (conv3, conv3)
    disconnected = NB201Cell(("none", "none", "nor_conv_3x3", "none", "skip_connect", "skip_connect"))
    assert not disconnected.is_connected() and sum(path_encoding(disconnected)) == 0


def test_disconnected_cells_count(nb201_table):
    assert Counter(SPACE.parse(s).is_connected() for s in nb201_table.arch)[False] == 341
