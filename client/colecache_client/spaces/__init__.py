"""Search spaces shared by the colecache server and its clients (pure Python, no torch)."""

from __future__ import annotations

from .base import SearchSpace, SpecError
from .nb201 import OPS as NB201_OPS
from .nb201 import NB201Cell, NB201Space

SPACES: dict[str, SearchSpace] = {"nb201": NB201Space()}


def get_space(name: str) -> SearchSpace:
    """The registered space called `name`; SpecError names the known ones otherwise."""
    try:
        return SPACES[name]
    except KeyError:
        raise SpecError(f"unknown search space {name!r} (known: {', '.join(sorted(SPACES))})") from None


__all__ = ["NB201_OPS", "SPACES", "NB201Cell", "NB201Space", "SearchSpace", "SpecError", "get_space"]
