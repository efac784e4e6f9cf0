"""A fitted surrogate: feature map + head + target scaling. Pure computation, no I/O."""

from __future__ import annotations

import numpy as np

from .config import SurrogateConfig
from .features import FeatureMap
from .heads import Head, make_head


class Surrogate:
    def __init__(self, config: SurrogateConfig):
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
    ) -> Surrogate:
        """Fit on observed cells; `reference_*` (unlabelled, e.g. the whole space) fits the reduction.

        Shapes: cole (n, d), struct (n, s), proxies (n, len(features.proxies)), y (n,)."""
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
        self.head.fit(self.features.transform(cole, struct, proxies), (y - self.y_mean) / self.y_scale)
        self.n_fitted = len(y)
        return self

    def predict(
        self, cole: np.ndarray | None, struct: np.ndarray | None, proxies: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std in the objective's units."""
        mean, std = self.head.predict(self.features.transform(cole, struct, proxies))
        return mean * self.y_scale + self.y_mean, std * self.y_scale
