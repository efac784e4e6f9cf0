"""How an architecture is rendered to code: the COLE variants."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Primitives = Literal["inline", "helper", "exclude_helper"]
Context = Literal["none", "backbone", "comment"]
Dataset = Literal["cifar10", "cifar100", "imagenet16-120"]


class RenderOptions(BaseModel):
    """Render variant. Defaults follow the COLE paper: helper referenced but not defined, cell only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primitives: Primitives = Field(
        "exclude_helper",
        description="`inline` ops, a `helper` class defined in the text, or `exclude_helper` (referenced only).",
    )
    context: Context = Field(
        "none",
        description="`none` (cell only), `backbone` (the NB201 macro network around it), `comment` (docstring).",
    )
    dataset: Dataset = Field("cifar10", description="Dataset named by `comment` and `backbone` contexts.")
    canonical: bool = Field(
        False, description="Render each cell's isomorphism-class representative, so isomorphic cells share a key."
    )
