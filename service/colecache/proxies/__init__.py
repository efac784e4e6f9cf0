"""Executable features: the rendered code is real PyTorch, so the server builds each network and
scores it untrained (zero-cost proxies), with no training data.

spec -> the space's proxy network code -> key -> cache tiers -> measured in a worker process ->
values. This module is torch-free (names, scale, key); `zero_cost` computes, `measure` serves.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

# Bump when a formula, an input or the stored scale changes: it is part of every cached value's key.
# zc/2: the input batch is a setting (power-law noise by default) and enters the key. zc/1 scored white
# Gaussian inputs with the same formulas; a plan with Gaussian inputs keeps zc/1's keys (measure.ProxyPlan).
PROXY_VERSION = "zc/2"
GAUSSIAN_VERSION = "zc/1"
# What the proxies' input batch is (zero_cost.ProxyInputs); the settings' type, so the list is written once.
ProxyInputKind = Literal["power_law", "gaussian"]
INPUT_KINDS: tuple[str, ...] = get_args(ProxyInputKind)
DEFAULT_INPUT_KIND: ProxyInputKind = "power_law"
PROXIES: tuple[str, ...] = ("params", "flops", "synflow", "naswot", "jacov", "snip", "grad_norm")
# Stored (and used) as signed log10(1 + |v|): these span orders of magnitude (synflow passes 1e37,
# beyond what float32 holds). Monotone, so rank correlations are those of the raw scores.
LOG_SCALED = frozenset({"params", "flops", "synflow", "snip", "grad_norm"})


def stored_value(name: str, raw: float) -> float:
    """A raw proxy score on the scale it is cached and used at (NaN stays NaN: undefined for this network)."""
    if name in LOG_SCALED and math.isfinite(raw):
        return math.copysign(math.log10(1.0 + abs(raw)), raw)
    return raw


__all__ = [
    "DEFAULT_INPUT_KIND",
    "GAUSSIAN_VERSION",
    "INPUT_KINDS",
    "LOG_SCALED",
    "PROXIES",
    "PROXY_VERSION",
    "ProxyInputKind",
    "stored_value",
]
