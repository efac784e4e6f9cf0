"""Spec -> code: the first stage of the pipeline.

Every search space renders its own architectures (`SearchSpace.render`, pure Python in the
shared client package); this module only dispatches, applies canonical rendering and says which
renderer version produced the text (it enters the cache key).
"""

from __future__ import annotations

from dataclasses import dataclass

from colecache_client.spaces import get_space
from colecache_client.spaces.nb201 import RENDERER_VERSION as NB201_RENDERER_VERSION

from ..specs import CodeSpec, Spec
from .options import RenderOptions

RAW_CODE_VERSION = "raw-code/1"
"""Client-supplied code is embedded verbatim; its 'renderer' is the identity."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """What the model will read, and what produced it (both enter the cache key)."""

    code: str
    renderer_version: str
    arch: str | None  # the architecture actually rendered (its representative when canonical)


def render(spec: Spec, options: RenderOptions) -> Rendered:
    """Render one parsed spec under `options`.

    Raises SpecError (-> 422) when the spec's space cannot render these options."""
    if isinstance(spec, CodeSpec):
        return Rendered(spec.code, RAW_CODE_VERSION, None)
    space = get_space(spec.space)
    arch = space.canonical_arch(spec.arch) if options.canonical else spec.arch
    code = space.render(arch, primitives=options.primitives, context=options.context, dataset=options.dataset)
    return Rendered(code, space.renderer_version, space.to_string(arch))


def check_options(space_name: str, options: RenderOptions) -> None:
    """SpecError when `space_name` cannot render `options` (checked before anything is stored)."""
    get_space(space_name).check_render_options(
        primitives=options.primitives, context=options.context, dataset=options.dataset
    )


def representative(cell):
    """The NB201 cell that canonical rendering uses for `cell`'s isomorphism class."""
    return get_space("nb201").canonical_arch(cell)


__all__ = [
    "NB201_RENDERER_VERSION",
    "RAW_CODE_VERSION",
    "RenderOptions",
    "Rendered",
    "check_options",
    "render",
    "representative",
]
