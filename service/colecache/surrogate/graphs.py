"""Op graphs (`SearchSpace.op_graph`) packed for message passing: what a graph head reads.

A batch of G graphs becomes one disjoint union: every node's label index, the edges as sparse matrices
(symmetric, and by direction), and which graph each node belongs to. No dense (G, N, N) tensor, so graph
size is bounded by the space (the generic `graph` space allows 64 nodes), not by memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from colecache_client.spaces import OpGraph

UNSEEN = 0
"""Vocabulary slot of every label a head did not see when it was fitted."""


def vocabulary_of(graphs: Sequence[OpGraph]) -> dict[str, int]:
    """Label -> one-hot slot (sorted labels from 1; slot 0 is UNSEEN), so the order never depends on arrival."""
    labels = sorted({op for graph in graphs for op in graph.ops})
    return {label: i for i, label in enumerate(labels, start=1)}


@dataclass(frozen=True)
class GraphBatch:
    """G graphs as one disjoint union of T nodes.

    labels (T,) int64 vocabulary slots; adjacency (T, T) sparse, symmetric, 1 per edge (messages flow
    both ways: a node learns from what feeds it and what it feeds); predecessors (T, T) sparse, 1 at
    (target, source) per directed edge, so `predecessors @ h` sums what feeds each node and
    `successors @ h` (its transpose) what each node feeds; readout (G, T) sparse, 1/size of its graph at
    each of its nodes, so `readout @ h` is the mean node state per graph. Self-loops are dropped; an edge
    written twice counts once."""

    labels: torch.Tensor
    adjacency: torch.Tensor
    predecessors: torch.Tensor
    successors: torch.Tensor
    readout: torch.Tensor
    width: int

    @classmethod
    def pack(cls, graphs: Sequence[OpGraph], vocabulary: dict[str, int]) -> GraphBatch:
        """Raises ValueError on an empty batch."""
        if not graphs:
            raise ValueError("no graphs to pack")
        sizes = np.fromiter((len(graph.ops) for graph in graphs), dtype=np.int64, count=len(graphs))
        total = int(sizes.sum())
        offsets = np.cumsum(sizes) - sizes
        labels = np.fromiter((vocabulary.get(op, UNSEEN) for graph in graphs for op in graph.ops), np.int64, total)
        counts = [len(graph.edges) for graph in graphs]
        edges = np.array([edge for graph in graphs for edge in graph.edges], dtype=np.int64).reshape(-1, 2)
        edges = edges + np.repeat(offsets, counts)[:, None]
        edges = edges[edges[:, 0] != edges[:, 1]]
        # Both directions; a pair written both ways (or twice) is one undirected edge.
        adjacency = _indicator(np.concatenate([edges, edges[:, ::-1]]), total)
        predecessors = _indicator(edges[:, ::-1], total)
        owner = np.repeat(np.arange(len(graphs)), sizes)
        readout = torch.sparse_coo_tensor(
            torch.as_tensor(np.stack([owner, np.arange(total)])),
            torch.as_tensor((1.0 / sizes[owner]).astype(np.float32)),
            (len(graphs), total),
            check_invariants=True,
        ).coalesce()
        return cls(
            torch.as_tensor(labels),
            adjacency,
            predecessors,
            predecessors.t().coalesce(),
            readout,
            len(vocabulary) + 1,
        )

    def __len__(self) -> int:
        return self.readout.shape[0]

    def onehot(self) -> torch.Tensor:
        """(T, width) float32 node features."""
        return torch.nn.functional.one_hot(self.labels, self.width).to(torch.float32)


def _indicator(pairs: np.ndarray, size: int) -> torch.Tensor:
    """(size, size) sparse float32 with 1 at each distinct (row, column) of `pairs` (k, 2)."""
    index = torch.as_tensor(np.unique(pairs.reshape(-1, 2), axis=0).T.copy())
    return torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), (size, size), check_invariants=True).coalesce()
