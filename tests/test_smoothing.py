"""Neighbourhood smoothing (surrogate/smoothing.py): the one-edit class graph and the blend.

The service-level check (a study on a precomputed toy space answers exactly the blend of the raw fit) is in
tests/test_cold_predict.py::test_default_precompute_gives_default_studies_their_whole_space_reference."""

from __future__ import annotations

import numpy as np
import pytest
from colecache.surrogate.smoothing import NeighbourGraph, smooth
from colecache_client.spaces import get_space


def _line(n: int) -> NeighbourGraph:
    """Cells 0..n-1 on a line (one edit = +-1), cell i in class i // 2."""
    return NeighbourGraph.build(
        list(range(n)), lambda c: [x for x in (c - 1, c + 1) if 0 <= x < n], lambda c: f"class-{c // 2}"
    )


def test_classes_merge_their_members_edges_and_drop_self_loops():
    graph = _line(6)  # classes {0,1} {2,3} {4,5}: 0 - 1 - 2 through the edges 1-2 and 3-4
    assert graph.keys == ["class-0", "class-1", "class-2"]
    assert graph.members.tolist() == [0, 2, 4]
    dense = graph.adjacency.toarray()
    assert dense.tolist() == [[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]]
    assert graph.neighbour_mean(np.array([1.0, 2.0, 4.0])).tolist() == [2.0, 2.5, 2.0]


def test_a_class_without_neighbours_keeps_its_own_value():
    graph = NeighbourGraph.build(["a", "b"], lambda c: [], lambda c: c)
    assert graph.neighbour_mean(np.array([3.0, 5.0])).tolist() == [3.0, 5.0]
    assert smooth(np.array([3.0]), graph.neighbour_mean(np.array([3.0, 5.0]))[:1], 0.8).tolist() == [3.0]


def test_smooth_is_the_convex_blend():
    assert smooth(np.array([1.0, 2.0]), np.array([3.0, 0.0]), 0.75).tolist() == pytest.approx([2.5, 0.5])
    assert smooth(np.array([1.0]), np.array([9.0]), 0.0).tolist() == [1.0]


def test_nb201_graph_has_one_node_per_isomorphism_class_and_symmetric_edges():
    space = get_space("nb201")
    cells = list(space.all_cells())
    graph = NeighbourGraph.build(cells, space.neighbours, space.canonical)
    assert len(graph) == 6466  # NATS-Bench's number of unique cells
    support = graph.adjacency.toarray() > 0
    assert (support == support.T).all()  # one edit is reversible
    assert np.allclose(graph.adjacency.sum(axis=1), 1.0)  # every NB201 class has a neighbour class
    # The class of a plain cell: each of its 24 one-edit variants lands in some other class.
    cell = space.parse(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    node = graph.index[space.canonical(cell)]
    expected = {space.canonical(n) for n in space.neighbours(cell)} - {space.canonical(cell)}
    got = {graph.keys[j] for j in graph.adjacency[node].indices}
    assert expected <= got
