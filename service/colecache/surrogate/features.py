"""COLE vectors (and optional structural encodings and zero-cost proxies) -> the head's input matrix."""

from __future__ import annotations

import numpy as np

from .config import FeatureConfig


class FeatureMap:
    """Standardise / project / whiten the COLE block; standardise and append structural blocks.

    The reduction is fitted on a reference set that needs no labels: the observed cells, or
    the whole search space when its embeddings are cached (more data, better directions).
    """

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.basis: np.ndarray | None = None
        self.struct_mean: np.ndarray | None = None
        self.struct_scale: float = 1.0
        self.proxy_mean: np.ndarray | None = None
        self.proxy_scale: np.ndarray | None = None

    def fit(self, cole: np.ndarray | None, struct: np.ndarray | None, proxies: np.ndarray | None = None) -> FeatureMap:
        cfg = self.config
        if cfg.cole:
            if cole is None:
                raise ValueError("COLE features requested but no embeddings given")
            cole = np.asarray(cole, dtype=np.float64)
            self.mean = cole.mean(axis=0)
            centred = cole - self.mean
            if cfg.reduce in ("pca", "whiten"):
                # A quarter of the rows at most: directions estimated from a handful of observed cells are
                # noise, and whitening them would make every unseen cell look equally far away.
                k = max(min(cfg.components, centred.shape[0] // 4, centred.shape[1]), 1)
                self.basis, variance = _principal_axes(centred, k)
                if cfg.reduce == "whiten":
                    self.scale = np.sqrt(np.maximum(variance, 1e-12))
                else:
                    self.scale = np.full(self.basis.shape[1], np.sqrt(max(variance.sum(), 1e-12) / len(variance)))
            elif cfg.reduce == "standardize":
                self.scale = np.maximum(centred.std(axis=0), 1e-8)
            else:
                self.scale = np.ones(cole.shape[1])
        if cfg.structural:
            if struct is None:
                raise ValueError("structural features requested but none given")
            struct = np.asarray(struct, dtype=np.float64)
            self.struct_mean = struct.mean(axis=0)
            # One scale for the whole block: a column that never varies among the observed cells
            # must not blow up when a candidate finally has it.
            self.struct_scale = max(float(np.sqrt(struct.var(axis=0).mean())), 1e-8)
        if cfg.proxies:
            if proxies is None:
                raise ValueError("proxy features requested but none given")
            proxies = np.asarray(proxies, dtype=np.float64)
            # Per column (each proxy has its own scale), ignoring undefined (NaN) scores.
            with np.errstate(all="ignore"):
                finite = np.where(np.isfinite(proxies), proxies, np.nan)
                self.proxy_mean = np.nan_to_num(np.nanmean(finite, axis=0))
                self.proxy_scale = np.maximum(np.nan_to_num(np.nanstd(finite, axis=0)), 1e-8)
        return self

    def transform(
        self, cole: np.ndarray | None, struct: np.ndarray | None, proxies: np.ndarray | None = None
    ) -> np.ndarray:
        blocks = []
        if self.config.cole:
            centred = np.asarray(cole, dtype=np.float64) - self.mean
            projected = centred @ self.basis if self.basis is not None else centred
            blocks.append(projected / self.scale)
        if self.config.structural:
            z = (np.asarray(struct, dtype=np.float64) - self.struct_mean) / self.struct_scale
            blocks.append(z * self.config.structural_weight)
        if self.config.proxies:
            z = (np.asarray(proxies, dtype=np.float64) - self.proxy_mean) / self.proxy_scale
            # An undefined score sits at the mean; z is clipped so one extreme network cannot dominate.
            z = np.clip(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0), -6.0, 6.0)
            blocks.append(z * self.config.proxy_weight)
        return np.concatenate(blocks, axis=1).astype(np.float32)


def _principal_axes(centred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal directions (d, k) and their variances: eigh of the covariance when the
    reference is tall (the whole space: 15,625 x 384 costs ~0.1 s), an SVD otherwise."""
    n, d = centred.shape
    if n > d:
        variance, vectors = np.linalg.eigh(centred.T @ centred / (n - 1))
        order = np.argsort(variance)[::-1][:k]
        return vectors[:, order], np.maximum(variance[order], 0.0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k].T, singular[:k] ** 2 / max(n - 1, 1)
