"""Search spaces shared by the colecache server and its clients (pure Python, no torch).

Spaces are plugins: a package adds one by declaring an entry point in the `colecache.spaces`
group that names a `SearchSpace` subclass (or a zero-argument factory returning an instance):

    [project.entry-points."colecache.spaces"]
    myspace = "my_package.spaces:MySpace"

The built-in spaces (nb201, nb101, darts, einspace, graph) register the same way, through this
package's own metadata. `register()` adds a space in-process (notebooks, tests).
"""

from __future__ import annotations

import logging
import threading
from importlib import import_module
from importlib.metadata import entry_points

from .base import PRIMITIVES, OpGraph, ProxyNetwork, SearchSpace, SpecError
from .nb201 import OPS as NB201_OPS
from .nb201 import NB201Cell, NB201Space

ENTRY_POINT_GROUP = "colecache.spaces"

BUILTIN = {
    "nb201": "colecache_client.spaces.nb201:NB201Space",
    "nb101": "colecache_client.spaces.nb101:NB101Space",
    "darts": "colecache_client.spaces.darts:DartsSpace",
    "einspace": "colecache_client.spaces.einspace:EinSpace",
    "graph": "colecache_client.spaces.graph:GraphSpace",
}
"""Fallback when this package runs from a source tree without installed metadata."""

log = logging.getLogger(__name__)
_lock = threading.Lock()
_registry: dict[str, SearchSpace] | None = None
LOAD_ERRORS: dict[str, str] = {}
"""Entry points that failed to load, name -> reason (shown by the server's /info)."""


def _instantiate(name: str, target: object) -> SearchSpace:
    space = target() if callable(target) else target
    if not isinstance(space, SearchSpace):
        raise TypeError(f"entry point {name!r} gave {type(space).__name__}, not a SearchSpace")
    if space.name != name:
        raise ValueError(f"entry point {name!r} gave a space named {space.name!r}")
    return space


def _load() -> dict[str, SearchSpace]:
    found: dict[str, SearchSpace] = {}
    declared = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name, reference in BUILTIN.items():
        if name not in declared:
            module, _, attr = reference.partition(":")
            try:
                found[name] = _instantiate(name, getattr(import_module(module), attr))
            except Exception as exc:  # a broken plugin must not take the others down
                LOAD_ERRORS[name] = f"{type(exc).__name__}: {exc}"
    for name, ep in sorted(declared.items()):
        try:
            found[name] = _instantiate(name, ep.load())
        except Exception as exc:
            LOAD_ERRORS[name] = f"{type(exc).__name__}: {exc}"
            log.warning("search space %r (%s) failed to load: %s", name, ep.value, exc)
    return found


def spaces() -> dict[str, SearchSpace]:
    """Every registered space by name (entry points are loaded once, on first use)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = _load()
    return _registry


def register(space: SearchSpace) -> None:
    """Add (or replace) a space in this process."""
    spaces()[space.name] = space


def get_space(name: str) -> SearchSpace:
    """The registered space called `name`; SpecError names the known ones otherwise."""
    registry = spaces()
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise SpecError(f"unknown search space {name!r} (known: {', '.join(sorted(registry))})") from None


__all__ = [
    "ENTRY_POINT_GROUP",
    "LOAD_ERRORS",
    "NB201_OPS",
    "PRIMITIVES",
    "NB201Cell",
    "NB201Space",
    "OpGraph",
    "ProxyNetwork",
    "SearchSpace",
    "SpecError",
    "get_space",
    "register",
    "spaces",
]
