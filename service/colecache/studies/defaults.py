"""What a new study uses unless it says otherwise: the configuration chosen by the offline evaluation
(benchmarks/results/surrogate_eval.md). The head and features default to `SurrogateConfig()`."""

from __future__ import annotations

from colecache_client.spaces import SearchSpace, SpecError

from ..embedding.options import EmbedOptions
from ..render.options import RenderOptions
from ..surrogate import SurrogateConfig

STUDY_RENDER = RenderOptions(primitives="exclude_helper", context="none", canonical=True)
STUDY_EMBEDDER = EmbedOptions(pooling="mean", layer=5)


def study_surrogate(config: SurrogateConfig, space: SearchSpace) -> SurrogateConfig:
    """`config` made concrete for `space`: unset structural encodings become the space's defaults.

    Raises SpecError naming any encoding the space does not have (-> 422, nothing stored)."""
    features = config.features
    if "structural" not in features.model_fields_set:
        features = features.model_copy(update={"structural": tuple(space.default_encodings)})
    unknown = [kind for kind in features.structural if kind not in space.encodings]
    if unknown:
        known = ", ".join(space.encodings) or "none"
        raise SpecError(
            f"search space {space.name!r} has no encoding(s) {', '.join(map(repr, unknown))} (known: {known})"
        )
    if features.proxies and space.proxy_network() is None:
        raise SpecError(f"search space {space.name!r} defines no network to score, so it has no zero-cost proxies")
    return config.model_copy(update={"features": features})
