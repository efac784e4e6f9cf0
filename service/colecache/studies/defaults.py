"""What a new study uses unless it says otherwise: the configuration chosen by the offline evaluation
(benchmarks/results/surrogate_eval.md, surrogate_targets.md, surrogate_eval_pools_gin.md). The head and features
default to `SurrogateConfig()`, except in GRAPH_HEAD_SPACES (NB201, NB101, DARTS: a GIN on the op graph)."""

from __future__ import annotations

from colecache_client.spaces import SearchSpace, SpecError

from ..embedding.options import EmbedOptions
from ..proxies import PROXIES
from ..render.options import RenderOptions
from ..surrogate import SurrogateConfig
from ..surrogate.config import NO_INPUT

STUDY_RENDER = RenderOptions(primitives="exclude_helper", context="none", canonical=True)
STUDY_EMBEDDER = EmbedOptions(pooling="mean", layer=5)
# With the zero-cost proxy block in, the structural block's best weight drops from 2 to 1
# (benchmarks/results/proxies.md, tuning draws; benchmarks/results/surrogate_targets.md, 20 draws).
PROXY_STRUCTURAL_WEIGHT = 1.0
GRAPH_HEAD = "gin_ensemble"
GRAPH_HEAD_OPTIONS: dict[str, object] = {"bootstrap": False, "graph_messages": "directed"}
"""What a new study's graph head (defaulted or asked for, any space) takes for these head fields when unset.
Every member sees every observation (a deep ensemble: members differ by their initialisation, Lakshminarayanan
et al., NeurIPS 2017, as BANANAS' own ensemble does) and the GIN reads predecessors and successors apart.
NB201 tuning draws (seed 7, CIFAR-100, 5 draws, smoothed Kendall tau at n = 128 / 256): graph alone 0.749 /
0.772 as before, 0.754 / 0.789 without bootstrap, 0.754 / 0.796 directed too; with the proxies 0.772 / 0.802
-> 0.793 / 0.820 (undirected 0.786 / 0.816). 20 draws (benchmarks/results/surrogate_targets.md): +0.014 to
+0.025 on all three datasets at n = 128 / 256; NB101 / DARTS +0.03 / +0.04 at n = 128
(surrogate_eval_pools_gin.md). In search it did worse than the first form: 38.9 evaluations to the CIFAR-100
optimum on average against 24.4 (medians 23.5 / 21; search/nb201_c100_gin/search.md), still under issue 10's
55. The fields' own defaults stay the earlier behaviour, so a study stored before keeps fitting as it did."""
GRAPH_HEAD_SPACES: dict[str, dict] = {
    "nb201": {"cole": False, "structural": (), "proxy_weight": 3.0},
    "nb101": {"cole": False, "structural": ()},
    "darts": {"cole": False, "structural": ()},
}
"""Spaces whose default study head reads op graphs (GRAPH_HEAD), with the feature blocks it then defaults to:
where that ranked best measured. NB201: benchmarks/results/surrogate_targets.md (issue-10 protocol, 20 draws;
proxy weight 3 on tuning draws). NB101 / DARTS: benchmarks/results/surrogate_eval_pools_gin.md (NASLib's
subsets, 20 folds; Kendall tau at n = 128: 0.747 / 0.728, first graph form 0.717 / 0.685, against 0.665 /
0.515 for the MLP on COLE + path, whose blocks joined to the graph head pulled it back to 0.677 / 0.513)."""


def study_surrogate(config: SurrogateConfig, space: SearchSpace, proxies_cached: bool = False) -> SurrogateConfig:
    """`config` made concrete for `space`: what the study leaves unset becomes the best measured default.

    - unset structural encodings become the space's `default_encodings`;
    - unset proxies become all of `PROXIES` when `proxies_cached` (every network of the space is scored
      already: `colecache proxies --space ...`) and the study has structural encodings (one without is
      a study for code specs, which have no network to score). Measured on NB201 (issue-10 protocol, 20
      draws, n = 128): Kendall tau 0.808 / 0.791 / 0.778 against 0.771 / 0.759 / 0.741 without, for the
      graph head (the MLP on COLE + path: 0.766 / 0.754 / 0.733 against 0.720 / 0.711 / 0.668;
      benchmarks/results/surrogate_targets.md). Never when anything would have to be scored: a cold
      server would spend ~0.5 s of CPU per network it is asked to predict;
    - with proxies in (resolved or asked for), an unset structural weight is `PROXY_STRUCTURAL_WEIGHT`;
    - in GRAPH_HEAD_SPACES, an unset `head.kind` is GRAPH_HEAD, and a GRAPH_HEAD study (defaulted or asked
      for) takes that space's entry for its unset feature fields, unless it is a study for code specs: one
      that set `structural: []` without turning COLE off (code has no op graph, so it keeps the MLP head on
      COLE);
    - a GRAPH_HEAD study, in any space, takes GRAPH_HEAD_OPTIONS for its unset head fields.

    Raises SpecError naming the field and any encoding the space does not have, or a graph head on a space
    without op graphs (-> 422, nothing stored)."""
    features = config.features
    given = features.model_fields_set
    code_study = "structural" in given and not features.structural and features.cole
    if space.name in GRAPH_HEAD_SPACES and not code_study:
        if "kind" not in config.head.model_fields_set:
            config = config.model_copy(update={"head": config.head.model_copy(update={"kind": GRAPH_HEAD})})
        if config.head.kind == GRAPH_HEAD:
            unset = {k: v for k, v in GRAPH_HEAD_SPACES[space.name].items() if k not in given}
            features = features.model_copy(update=unset)
            given = given | set(unset)
    if config.head.kind == GRAPH_HEAD:
        head_given = config.head.model_fields_set
        options = {k: v for k, v in GRAPH_HEAD_OPTIONS.items() if k not in head_given}
        config = config.model_copy(update={"head": config.head.model_copy(update=options)})
    if "structural" not in given:
        features = features.model_copy(update={"structural": tuple(space.default_encodings)})
    unknown = [kind for kind in features.structural if kind not in space.encodings]
    if unknown:
        known = ", ".join(space.encodings) or "none"
        raise SpecError(
            f"surrogate.features.structural: search space {space.name!r} has no encoding(s) "
            f"{', '.join(map(repr, unknown))} (known: {known})"
        )
    if "proxies" not in given and proxies_cached and (features.structural or config.uses_graphs):
        features = features.model_copy(update={"proxies": tuple(PROXIES)})
    if features.proxies and space.proxy_network() is None:
        raise SpecError(
            f"surrogate.features.proxies: search space {space.name!r} defines no network to score, so it has no "
            "zero-cost proxies"
        )
    if config.uses_graphs and not space.has_op_graph():
        raise SpecError(
            f"surrogate.head.kind: {config.head.kind!r} reads op graphs and search space {space.name!r} has no "
            "op graph form (`op_graph: false` in /info); use 'mlp_ensemble'"
        )
    if features.proxies and "structural_weight" not in given:
        features = features.model_copy(update={"structural_weight": PROXY_STRUCTURAL_WEIGHT})
    resolved = config.model_copy(update={"features": features})
    if not resolved.has_input:
        raise SpecError(f"surrogate: {NO_INPUT} (search space {space.name!r} has no default graph head)")
    return resolved
