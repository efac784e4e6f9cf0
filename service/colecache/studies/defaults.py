"""What a new study uses unless it says otherwise: the configuration chosen by the offline evaluation
(benchmarks/results/surrogate_eval.md). The head and features default to `SurrogateConfig()`."""

from __future__ import annotations

from colecache_client.spaces import SearchSpace, SpecError

from ..embedding.options import EmbedOptions
from ..proxies import PROXIES
from ..render.options import RenderOptions
from ..surrogate import SurrogateConfig

STUDY_RENDER = RenderOptions(primitives="exclude_helper", context="none", canonical=True)
STUDY_EMBEDDER = EmbedOptions(pooling="mean", layer=5)
# With the zero-cost proxy block in, the structural block's best weight drops from 2 to 1
# (benchmarks/results/proxies.md, tuning draws; benchmarks/results/surrogate_targets.md, 20 draws).
PROXY_STRUCTURAL_WEIGHT = 1.0


def study_surrogate(config: SurrogateConfig, space: SearchSpace, proxies_cached: bool = False) -> SurrogateConfig:
    """`config` made concrete for `space`: what the study leaves unset becomes the best measured default.

    - unset structural encodings become the space's `default_encodings`;
    - unset proxies become all of `PROXIES` when `proxies_cached` (every network of the space is scored
      already: `colecache proxies --space ...`), with the structural weight then at
      `PROXY_STRUCTURAL_WEIGHT` unless the study set it. Measured on NB201 (issue-10 protocol, 20 draws,
      n = 128): Kendall tau 0.761 / 0.749 / 0.727 against 0.720 / 0.711 / 0.668 without
      (benchmarks/results/surrogate_targets.md). Never when anything would have to be scored: a cold
      server would spend ~0.5 s of CPU per network it is asked to predict.

    Raises SpecError naming any encoding the space does not have (-> 422, nothing stored)."""
    features = config.features
    if "structural" not in features.model_fields_set:
        features = features.model_copy(update={"structural": tuple(space.default_encodings)})
    if "proxies" not in features.model_fields_set and proxies_cached:
        update: dict = {"proxies": tuple(PROXIES)}
        if "structural_weight" not in features.model_fields_set:
            update["structural_weight"] = PROXY_STRUCTURAL_WEIGHT
        features = features.model_copy(update=update)
    unknown = [kind for kind in features.structural if kind not in space.encodings]
    if unknown:
        known = ", ".join(space.encodings) or "none"
        raise SpecError(
            f"search space {space.name!r} has no encoding(s) {', '.join(map(repr, unknown))} (known: {known})"
        )
    if features.proxies and space.proxy_network() is None:
        raise SpecError(f"search space {space.name!r} defines no network to score, so it has no zero-cost proxies")
    return config.model_copy(update={"features": features})
