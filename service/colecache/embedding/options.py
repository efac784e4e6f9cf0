"""Per-request embedding options (everything that shapes a vector except the model itself)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Pooling = Literal["mean", "last_token", "cls", "mean_all_layers"]


class EmbedOptions(BaseModel):
    """Unset fields take the server's defaults (COLECACHE_POOLING, _LAYER, _MAX_LENGTH, _NORMALIZE)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: str | None = Field(
        None, description="Must name the served model if given (one model per server); checked, not switched."
    )
    pooling: Pooling | None = Field(
        None,
        description="`mean` (masked), `last_token` (last real token, any padding side), `cls` (first real token), "
        "`mean_all_layers` (masked mean of every hidden state, averaged over layers).",
    )
    # Bounds far past any model's, so the model's own range check answers, but no integer reaches the
    # fingerprint (stored and served) that a 64-bit column or the JSON writer cannot hold.
    layer: int | None = Field(
        None, ge=-4096, le=4096, description="Hidden-state index to pool: 0 = embeddings, -1 = last layer."
    )
    max_length: int | None = Field(
        None,
        ge=1,
        le=1 << 24,
        description="Token limit per item, special tokens included: at most the model's own limit, at least its "
        "special tokens + 1 (`GET /info`).",
    )
    normalize: bool | None = Field(None, description="L2-normalise the vectors.")
    reject_truncated: bool = Field(
        False, description="Answer 422 naming the items that exceed max_length instead of truncating them."
    )
