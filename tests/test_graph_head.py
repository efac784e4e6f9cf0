"""Graph heads: every space's op graph, the packing for message passing, and the GIN ensemble as a study head.

The GIN is checked on what only a graph reader can see: a target defined by the cell's wiring (whether a
3x3 convolution lies on a live input->output route), which NB201's per-edge one-hot tells it nothing about.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from colecache.studies.defaults import study_surrogate
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache.surrogate.graphs import UNSEEN, GraphBatch, vocabulary_of
from colecache.surrogate.heads import GINEnsemble, GraphInputs
from colecache_client.spaces import OpGraph, SearchSpace, SpecError, get_space
from colecache_client.spaces import einspace as ein
from scipy import stats

NB201 = get_space("nb201")
FAST_GIN = HeadConfig(kind="gin_ensemble", epochs=150)
GRAPH_ONLY = FeatureConfig(cole=False, structural=(), proxies=())


def test_nb201_op_graph_puts_each_edge_op_on_a_node_wired_as_the_cell():
    cell = NB201.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    graph = NB201.op_graph(cell)
    assert graph.ops == ("input", *cell.ops, "output")
    # Edge ops in EDGES order (0,1),(0,2),(1,2),(0,3),(1,3),(2,3) are nodes 1..6: an op feeds the ops leaving its
    # target node, and the three ops into node 3 feed the output.
    assert set(graph.edges) == {(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)}
    other = NB201.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|")
    assert NB201.op_graph(other) != graph


def test_every_builtin_space_has_an_op_graph_and_says_so():
    rng = random.Random(3)
    for name in ("nb201", "nb101", "darts", "einspace", "graph"):
        space = get_space(name)
        assert space.describe()["op_graph"] is True
        arch = space.sample(rng)
        graph = space.op_graph(arch)
        assert isinstance(graph, OpGraph) and len(graph.ops) >= 2 and graph.edges


def test_nb101_op_graph_is_the_pruned_cell():
    spec = {"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"]}
    cell = get_space("nb101").parse(spec)
    assert get_space("nb101").op_graph(cell) == OpGraph(("input", "maxpool3x3", "output"), ((0, 1), (0, 2), (1, 2)))


def test_darts_op_graph_joins_both_cells():
    space = get_space("darts")
    graph = space.op_graph(space.sample(random.Random(0)))
    per_cell = 2 + 8 + 4 + 1  # two inputs, eight op nodes, four sums, the concat
    assert len(graph.ops) == 2 * per_cell
    assert sum(op.startswith("normal:") for op in graph.ops) == per_cell
    concat = graph.ops.index("normal:concat")
    reduce_inputs = [i for i, op in enumerate(graph.ops) if op == "reduce:input"]
    assert {(concat, i) for i in reduce_inputs} <= set(graph.edges)
    assert sum(op == "normal:add" for op in graph.ops) == 4


def test_generic_graph_labels_carry_params_and_einspace_graph_is_the_derivation_tree():
    space = get_space("graph")
    spec = {
        "nodes": [
            {"id": "in", "op": "input"},
            {"id": "a", "op": "Conv2d", "params": {"kernel_size": 3}},
            {"id": "b", "op": "Conv2d", "params": {"kernel_size": 5}},
            {"id": "out", "op": "output", "merge": "concat"},
        ],
        "edges": [["in", "a"], ["in", "b"], ["a", "out"], ["b", "out"]],
    }
    graph = space.op_graph(space.parse(spec))
    assert graph.ops == ("input", "Conv2d(kernel_size=3)", "Conv2d(kernel_size=5)", "output(merge=concat)")
    assert set(graph.edges) == {(0, 1), (0, 2), (1, 3), (2, 3)}
    einspace = get_space("einspace")
    tree = einspace.parse("sequential{routing{im2col(3,1,1), computation{linear(32)}, col2im}, computation{relu}}")
    graph = einspace.op_graph(tree)
    assert len(graph.ops) == ein.count_nodes(tree) and len(graph.edges) == len(graph.ops) - 1
    assert graph.ops[:2] == ("module:sequential", "module:routing") and "computation_fn:linear(32)" in graph.ops


def test_op_graph_refuses_edges_to_nodes_that_do_not_exist():
    with pytest.raises(SpecError, match=r"edge \(0, 2\)"):
        OpGraph(("input", "output"), ((0, 2),))
    with pytest.raises(SpecError, match="at least one node"):
        OpGraph((), ())


def test_packing_is_symmetric_pools_means_and_sends_unseen_labels_to_one_slot():
    a = OpGraph(("input", "conv", "output"), ((0, 1), (1, 2), (0, 2), (2, 0)))  # (0,2) and (2,0): one edge
    b = OpGraph(("input", "pool", "output"), ((0, 1), (1, 2)))
    vocabulary = vocabulary_of([a])
    assert vocabulary == {"conv": 1, "input": 2, "output": 3}
    batch = GraphBatch.pack([a, b], vocabulary)
    dense = batch.adjacency.to_dense()
    assert torch.equal(dense, dense.T) and dense.sum() == 2 * 3 + 2 * 2 and dense.max() == 1
    assert batch.labels.tolist() == [2, 1, 3, 2, UNSEEN, 3]
    # By direction: predecessors[target, source] = 1 per distinct directed edge; successors is its transpose.
    feeds = {tuple(p) for p in batch.predecessors.coalesce().indices().T.tolist()}
    assert feeds == {(1, 0), (2, 1), (2, 0), (0, 2), (4, 3), (5, 4)}
    assert torch.equal(batch.successors.to_dense(), batch.predecessors.to_dense().T)
    assert torch.allclose(batch.readout.to_dense().sum(dim=1), torch.ones(2))
    assert batch.onehot().shape == (6, 4)


def _wired(cell) -> float:
    """1 when a 3x3 convolution lies on an input->output route whose every edge passes a signal: a property
    of the wiring, not of which ops occur (the per-edge one-hot and op counts cannot express it)."""
    routes = ((3,), (0, 4), (1, 5), (0, 2, 5))
    live = [r for r in routes if all(cell.ops[e] != "none" for e in r)]
    return float(any(cell.ops[e] == "nor_conv_3x3" for r in live for e in r))


def _nb201(n: int, seed: int):
    rng = random.Random(seed)
    cells = NB201.dedupe([NB201.sample(rng) for _ in range(3 * n)])[:n]
    return cells, [NB201.op_graph(c) for c in cells]


def test_gin_learns_what_only_the_wiring_tells():
    cells, graphs = _nb201(400, seed=0)
    y = np.array([_wired(c) + 0.2 * c.ops.count("skip_connect") for c in cells])
    train, test = slice(0, 200), slice(200, 400)
    model = Surrogate(SurrogateConfig(features=GRAPH_ONLY, head=FAST_GIN, smoothing=0)).fit(
        None, None, y[train], graphs=graphs[train]
    )
    mean, std = model.predict(None, None, None, graphs[test])
    assert stats.kendalltau(mean, y[test]).statistic > 0.6
    assert np.all(np.isfinite(std)) and std.min() > 0


def test_directed_messages_tell_which_way_an_edge_runs():
    """`a -> b` and `b -> a` are one graph to undirected messages (identical predictions, whatever the labels);
    directed messages read predecessors and successors apart and learn the difference."""
    forward = OpGraph(("conv", "pool"), ((0, 1),))
    backward = OpGraph(("conv", "pool"), ((1, 0),))
    graphs = [forward, backward] * 10
    y = np.array([1.0, -1.0] * 10)
    inputs = GraphInputs(graphs, np.zeros((20, 0)))
    for messages, apart in (("undirected", False), ("directed", True)):
        config = FAST_GIN.model_copy(update={"graph_messages": messages, "bootstrap": False})
        mean, _ = GINEnsemble(config, seed=0).fit(inputs, y).predict(GraphInputs([forward, backward], np.zeros((2, 0))))
        if apart:
            assert mean[0] > 0.5 and mean[1] < -0.5
        else:
            assert mean[0] == pytest.approx(mean[1], abs=1e-6)


def test_gin_is_seeded_joins_side_features_and_predicts_unseen_labels():
    cells, graphs = _nb201(60, seed=1)
    side = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    y = np.array([_wired(c) for c in cells]) + side[:, 0]
    first = GINEnsemble(FAST_GIN, seed=4).fit(GraphInputs(graphs, side), y)
    again = GINEnsemble(FAST_GIN, seed=4).fit(GraphInputs(graphs, side), y)
    other = GINEnsemble(FAST_GIN, seed=5).fit(GraphInputs(graphs, side), y)
    inputs = GraphInputs(graphs, side)
    assert np.array_equal(first.predict(inputs)[0], again.predict(inputs)[0])
    assert not np.allclose(first.predict(inputs)[0], other.predict(inputs)[0])
    members = first.member_predictions(inputs)
    assert members.shape == (FAST_GIN.members, 60) and members.std(axis=0).mean() > 0  # members differ
    # The side block is read: the target's side component is learnt (training cells, in-sample).
    assert stats.kendalltau(first.predict(inputs)[0], side[:, 0]).statistic > 0.3
    strange = [OpGraph(("input", "never_seen_op", "output"), ((0, 1), (1, 2)))]
    mean, std = first.predict(GraphInputs(strange, side[:1]))
    assert np.isfinite(mean).all() and np.isfinite(std).all() and std[0] > 0
    with pytest.raises(ValueError, match="2 graphs but 1 rows"):
        GraphInputs(graphs[:2], side[:1])


def test_graph_head_config_validation():
    with pytest.raises(ValueError, match="needs an input"):
        SurrogateConfig(features=GRAPH_ONLY, head=HeadConfig(kind="mlp_ensemble"))  # nothing to read
    unresolved = SurrogateConfig(features=GRAPH_ONLY)  # the head kind is unset: the study's space decides
    assert study_surrogate(unresolved, NB201).head.kind == "gin_ensemble"
    with pytest.raises(SpecError, match=r"^surrogate: the surrogate needs an input.*'einspace' has no default graph"):
        study_surrogate(unresolved, get_space("einspace"))
    with pytest.raises(ValueError, match="needs an input"):
        Surrogate(unresolved)
    config = SurrogateConfig(features=GRAPH_ONLY, head=FAST_GIN)
    assert config.uses_graphs
    with pytest.raises(ValueError, match="op graph"):
        Surrogate(config).fit(None, None, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(SpecError, match=r"surrogate\.head\.kind"):

        class Flat(type(NB201)):
            name = "flat"
            op_graph = SearchSpace.op_graph  # the base class's: no graph form

        study_surrogate(config, Flat())
    assert study_surrogate(config, NB201).head.kind == "gin_ensemble"


async def test_a_graph_study_without_cole_smooths_on_the_enumerated_space(services):
    """No embeddings to cache, so the whole space is its reference at once: `reference: space`, smoothed, and
    each answered mean is the blend of the raw predictions (the same fit with smoothing off)."""
    from colecache.studies.service import ObservationIn

    surrogate = SurrogateConfig(features=GRAPH_ONLY, head=FAST_GIN.model_copy(update={"epochs": 60}))
    options = {
        "space": "nb201",
        "objective": "accuracy",
        "direction": "maximize",
        "render": {"primitives": "exclude_helper", "context": "none", "dataset": "cifar10", "canonical": True},
        "embedder": {"pooling": "mean"},
        "owner": None,
    }
    cells, _ = _nb201(30, seed=2)
    studies = services.studies
    smoothed = studies.repo.create(name="gin", surrogate=surrogate.model_dump(mode="json"), **options)
    raw = studies.repo.create(
        name="gin-raw", surrogate=surrogate.model_copy(update={"smoothing": 0}).model_dump(mode="json"), **options
    )
    rows = [ObservationIn(c.to_string(), 50 + 10 * _wired(c)) for c in cells]
    for study in (smoothed, raw):
        await studies.observe(study, rows, "reject")
    asked = [c.to_string() for c in _nb201(60, seed=9)[0][-5:]]
    got = await studies.predict(studies.repo.get(smoothed.id, None), asked)
    plain = await studies.predict(studies.repo.get(raw.id, None), asked)
    assert got.fitted.reference == "space" and got.fitted.smoothing is not None
    # Canonical rendering: each answer names its class representative, as a study with COLE does.
    assert got.archs == [NB201.to_string(NB201.canonical_arch(NB201.parse(a))) for a in asked]
    assert plain.fitted.reference == "space" and plain.fitted.smoothing is None
    graph, neighbour_mean = got.fitted.smoothing
    for spec, mean, own in zip(asked, got.mean, plain.mean):
        node = graph.index[NB201.canonical(NB201.parse(spec))]
        assert mean == pytest.approx(0.2 * own + 0.8 * neighbour_mean[node], abs=1e-6)
    with pytest.raises(Exception, match=r"reads op graphs, so code specs cannot be used \(a study for code specs"):
        studies.parse_study_specs(studies.repo.get(raw.id, None), [{"code": "class Net: pass"}])
