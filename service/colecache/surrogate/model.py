"""A fitted surrogate: feature map + head + target scaling. Pure computation, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from colecache_client.spaces import OpGraph

from .config import NO_INPUT, SurrogateConfig
from .features import FeatureMap
from .heads import GraphInputs, Head, make_head


class Surrogate:
    def __init__(self, config: SurrogateConfig):
        """ValueError when the config gives the head nothing to read (no feature block, no graph head)."""
        if not config.has_input:
            raise ValueError(NO_INPUT)
        self.config = config
        self.features = FeatureMap(config.features)
        self.head: Head = make_head(config.head, config.seed)
        self.y_mean = 0.0
        self.y_scale = 1.0
        self.n_fitted = 0

    def fit(
        self,
        cole: np.ndarray | None,
        struct: np.ndarray | None,
        y: np.ndarray,
        reference_cole: np.ndarray | None = None,
        reference_struct: np.ndarray | None = None,
        proxies: np.ndarray | None = None,
        graphs: Sequence[OpGraph] | None = None,
    ) -> Surrogate:
        """Fit on observed cells; `reference_*` (unlabelled, e.g. the whole space) fits the reduction.

        Shapes: cole (n, d), struct (n, s), proxies (n, len(features.proxies)), y (n,); `graphs` (n op graphs)
        for a graph head. ValueError on fewer than 2 observations or a block the config needs but lacks."""
        y = np.asarray(y, dtype=np.float64)
        if len(y) < 2:
            raise ValueError("a surrogate needs at least 2 observations")
        self.y_mean = float(y.mean())
        self.y_scale = float(y.std()) or 1.0
        self.features.fit(
            reference_cole if reference_cole is not None else cole,
            reference_struct if reference_struct is not None else struct,
            proxies,
        )
        self.head.fit(self._inputs(len(y), cole, struct, proxies, graphs), (y - self.y_mean) / self.y_scale)
        self.n_fitted = len(y)
        return self

    def predict(
        self,
        cole: np.ndarray | None,
        struct: np.ndarray | None,
        proxies: np.ndarray | None = None,
        graphs: Sequence[OpGraph] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (n,) in the objective's units; the same blocks (and graphs) as `fit` took."""
        rows = next(len(b) for b in (cole, struct, proxies, graphs) if b is not None)
        mean, std = self.head.predict(self._inputs(rows, cole, struct, proxies, graphs))
        return mean * self.y_scale + self.y_mean, std * self.y_scale

    def _inputs(self, rows: int, cole, struct, proxies, graphs) -> np.ndarray | GraphInputs:
        """The head's input: the feature matrix, or (graphs, feature matrix) for a graph head."""
        side = self.features.transform(cole, struct, proxies) if self.config.features.blocks else np.zeros((rows, 0))
        if not self.config.uses_graphs:
            return side
        if graphs is None:
            raise ValueError(f"head {self.config.head.kind!r} needs the op graph of every architecture")
        return GraphInputs(graphs, side)
