"""What a new study uses unless it says otherwise: the configuration chosen by the offline evaluation
(benchmarks/results/surrogate_eval.md). The head and features default to `SurrogateConfig()`."""

from __future__ import annotations

from ..embedding.options import EmbedOptions
from ..render.options import RenderOptions

STUDY_RENDER = RenderOptions(primitives="exclude_helper", context="none", canonical=True)
STUDY_EMBEDDER = EmbedOptions(pooling="mean", layer=5)
