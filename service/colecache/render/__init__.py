"""Spec -> code: the first stage of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from colecache_client.spaces import SpecError
from colecache_client.spaces.nb201 import NB201Cell, NB201Space

from ..specs import CodeSpec, Spec
from .nb201 import RENDERER_VERSION as NB201_RENDERER_VERSION
from .nb201 import render_nb201
from .options import RenderOptions

RAW_CODE_VERSION = "raw-code/1"
"""Client-supplied code is embedded verbatim; its 'renderer' is the identity."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """What the model will read, and what produced it (both enter the cache key)."""

    code: str
    renderer_version: str
    arch: str | None  # the architecture actually rendered (its representative when canonical)


@lru_cache(maxsize=1)
def _nb201_representatives() -> dict[NB201Cell, NB201Cell]:
    """Each cell -> the lexicographically smallest cell string of its isomorphism class."""
    space = NB201Space()
    best: dict[str, NB201Cell] = {}
    cells = list(space.all_cells())
    for cell in cells:
        key = cell.canonical()
        if key not in best or cell.to_string() < best[key].to_string():
            best[key] = cell
    return {cell: best[cell.canonical()] for cell in cells}


def representative(cell: NB201Cell) -> NB201Cell:
    """The member of `cell`'s isomorphism class that canonical rendering uses."""
    return _nb201_representatives()[cell]


def render(spec: Spec, options: RenderOptions) -> Rendered:
    """Render one parsed spec under `options`."""
    if isinstance(spec, CodeSpec):
        return Rendered(spec.code, RAW_CODE_VERSION, None)
    if spec.space != "nb201":
        raise SpecError(f"no renderer for search space {spec.space!r}; send {{'code': ...}} instead")
    cell = spec.arch
    if options.canonical:
        cell = representative(cell)
    return Rendered(render_nb201(cell, options), NB201_RENDERER_VERSION, cell.to_string())


__all__ = ["NB201_RENDERER_VERSION", "RAW_CODE_VERSION", "RenderOptions", "Rendered", "render", "representative"]
