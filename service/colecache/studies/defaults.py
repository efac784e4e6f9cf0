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
GRAPH_HEAD_OPTIONS: dict[str, dict] = {
    space: {"graph_messages": "directed", "bootstrap": "bayesian"} for space in ("nb201", "nb101", "darts")
}
"""Head fields a GRAPH_HEAD study of the space takes when it leaves them unset, where they measured better than
the head's own field defaults: directed messages and Bayesian-bootstrap members (every member on every
observation under its own Dirichlet(1) weights), in every graph-head space (since 2026-12-08).
NB201, with the proxies, smoothed, n = 128 / 256 (issue-10 protocol, surrogate_targets_bayesian.md): CIFAR-10
0.807 / 0.835, CIFAR-100 0.790 / 0.813, ImageNet16-120 0.777 / 0.802 against 0.798 / 0.829, 0.783 / 0.806,
0.766 / 0.795 with bootstrap resamples (`gindir`; paired gains +0.006 to +0.011, every 95% interval above zero);
it searched as well: BANANAS needed 29.1 [22.9, 35.8] evaluations to the CIFAR-100 optimum against 25.7
[20.3, 30.9] (not paired, inside both intervals; benchmarks/results/search/nb201_c100_bayesian,
nb201_c100_gindir). NB101 / DARTS pools (search/nb101_bayesian, darts_bayesian): 25.1 against 26.8 evaluations
(paired -1.7 [-3.6, +0.2]) and 30.6 against 35.1 (paired -4.6 [-8.5, -0.9]). Directed messages against
undirected: +0.009 to +0.013 Kendall tau on NB201 at n = 128, NB101 0.739 against 0.717 and DARTS 0.718 against
0.685 at n = 128 (surrogate_eval_pools_gindir.md). The second form (`bootstrap: false`) ranks about as high but
searched worse on NB201 (38.9, search/nb201_c100_gin2): its members agree away from the data."""
GRAPH_HEAD_SPACES: dict[str, dict] = {
    "nb201": {"cole": False, "structural": (), "proxy_weight": 3.0},
    "nb101": {"cole": False, "structural": ()},
    "darts": {"cole": False, "structural": ()},
}
"""Spaces whose default study head reads op graphs (GRAPH_HEAD), with the feature blocks it then defaults to:
where that ranked best measured. NB201: benchmarks/results/surrogate_targets.md (issue-10 protocol, 20 draws;
proxy weight 3 on tuning draws). NB101 / DARTS: benchmarks/results/surrogate_eval_pools_gin.md (NASLib's
subsets, 20 folds; Kendall tau at n = 128 with undirected messages: 0.717 / 0.685 (directed, the default above:
0.739 / 0.718) against 0.665 / 0.515 for the MLP on COLE + path, whose blocks joined to the graph head pulled it
back to 0.677 / 0.513)."""


def study_surrogate(config: SurrogateConfig, space: SearchSpace, proxies_cached: bool = False) -> SurrogateConfig:
    """`config` made concrete for `space`: what the study leaves unset becomes the best measured default.

    - unset structural encodings become the space's `default_encodings`;
    - unset proxies become all of `PROXIES` when `proxies_cached` (every network of the space is scored
      already: `colecache proxies --space ...`) and the study has structural encodings (one without is
      a study for code specs, which have no network to score). Measured on NB201 (issue-10 protocol, 20
      draws, n = 128): Kendall tau 0.798 / 0.783 / 0.766 against 0.758 / 0.747 / 0.724 without, for NB201's
      graph head (the latter: surrogate_targets_gindir.md; the MLP on COLE + path: 0.766 / 0.754 / 0.733
      against 0.720 / 0.711 / 0.668; benchmarks/results/surrogate_targets.md). Never when anything would
      have to be scored: a cold server would spend ~0.5 s of CPU per network it is asked to predict;
    - with proxies in (resolved or asked for), an unset structural weight is `PROXY_STRUCTURAL_WEIGHT`;
    - in GRAPH_HEAD_SPACES, an unset `head.kind` is GRAPH_HEAD, and a GRAPH_HEAD study (defaulted or asked
      for) takes that space's entry for its unset feature fields (and GRAPH_HEAD_OPTIONS' for its unset head
      fields), unless it is a study for code specs: one that set `structural: []` without turning COLE off
      (code has no op graph, so it keeps the MLP head on COLE).

    Raises SpecError naming the field and any encoding the space does not have, or a graph head on a space
    without op graphs (-> 422, nothing stored)."""
    features = config.features
    given = features.model_fields_set
    code_study = "structural" in given and not features.structural and features.cole
    if space.name in GRAPH_HEAD_SPACES and not code_study:
        if "kind" not in config.head.model_fields_set:
            config = config.model_copy(update={"head": config.head.model_copy(update={"kind": GRAPH_HEAD})})
        if config.head.kind == GRAPH_HEAD:
            head = config.head
            options = GRAPH_HEAD_OPTIONS.get(space.name, {})
            options = {k: v for k, v in options.items() if k not in head.model_fields_set}
            config = config.model_copy(update={"head": head.model_copy(update=options)})
            unset = {k: v for k, v in GRAPH_HEAD_SPACES[space.name].items() if k not in given}
            features = features.model_copy(update=unset)
            given = given | set(unset)
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
