"""The identity of a vector: which model, which weights and which read-out produced it.

Two vectors with the same fingerprint and the same code are interchangeable; anything that
could change a single bit of a vector belongs here (and therefore in the cache key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

from .options import EmbedOptions


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """What the loaded model is; filled in by the backend once weights are loaded."""

    model: str  # hub id, or the folder name of a local model
    revision: str  # hub commit, configured revision, or "sha256:<weights hash>"
    dtype: str  # float32 / float16 / bfloat16
    num_hidden_states: int  # embeddings + one per layer
    max_positions: int  # the longest input the model accepts
    dim: int
    num_special_tokens: int = 0  # tokens the tokenizer adds around every text ([CLS] .. [SEP], BOS, ...)
    backend: str = "torch"  # what runs the forward: torch, onnx, onnx-int8 (vectors differ between them)

    @property
    def min_length(self) -> int:
        """The smallest max_length that keeps at least one token of the text beside the special tokens."""
        return self.num_special_tokens + 1


@dataclass(frozen=True, slots=True)
class Fingerprint:
    model: str
    revision: str
    pooling: str
    layer: int | None  # absolute hidden-state index; None when the pooling reads every layer
    max_length: int
    dtype: str
    normalize: bool
    backend: str = "torch"  # not hashed when "torch", so ids from before this field existed stay valid

    @property
    def id(self) -> str:
        """Stable hex digest of every field (field order and spelling fixed by JSON sort)."""
        return _digest(self)

    def as_dict(self) -> dict:
        return {**_fields(self), "id": self.id}


@lru_cache(maxsize=1024)
def _fields(fingerprint: Fingerprint) -> dict:
    fields = asdict(fingerprint)
    if fields["backend"] == "torch":
        del fields["backend"]
    return fields


@lru_cache(maxsize=1024)
def _digest(fingerprint: Fingerprint) -> str:
    blob = json.dumps(_fields(fingerprint), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class FingerprintError(ValueError):
    """Options the served model cannot honour (wrong model name, layer out of range, ...)."""


@dataclass(frozen=True, slots=True)
class Readout:
    """The resolved per-request choices: the fingerprint plus what does not shape vectors."""

    fingerprint: Fingerprint
    reject_truncated: bool


def resolve(identity: ModelIdentity, defaults: EmbedOptions, options: EmbedOptions) -> Readout:
    """Merge request options over server defaults and normalise them, so equal meaning gives equal keys."""
    if options.model is not None and options.model not in (identity.model, f"{identity.model}@{identity.revision}"):
        raise FingerprintError(f"this server embeds with model {identity.model!r}, not {options.model!r}")
    pooling = options.pooling or defaults.pooling or "mean"
    layer = options.layer if options.layer is not None else (defaults.layer if defaults.layer is not None else -1)
    # The server default is a ceiling (clamped to the model); an explicit request value must fit.
    max_length = options.max_length or min(defaults.max_length or identity.max_positions, identity.max_positions)
    normalize = options.normalize if options.normalize is not None else bool(defaults.normalize)
    n = identity.num_hidden_states
    if not -n <= layer < n:
        raise FingerprintError(f"layer {layer} is out of range for a model with {n} hidden states (-{n}..{n - 1})")
    if max_length > identity.max_positions:
        raise FingerprintError(f"max_length {max_length} exceeds the model's limit of {identity.max_positions} tokens")
    if max_length < identity.min_length:
        # Below this the tokenizer cannot truncate at all and hands the model the whole text.
        raise FingerprintError(
            f"max_length {max_length} is below the minimum of {identity.min_length} for this model "
            f"({identity.num_special_tokens} special token(s) plus at least one token of the text)"
        )
    fingerprint = Fingerprint(
        model=identity.model,
        revision=identity.revision,
        pooling=pooling,
        layer=None if pooling == "mean_all_layers" else layer % n,
        max_length=max_length,
        dtype=identity.dtype,
        normalize=normalize,
        backend=identity.backend,
    )
    return Readout(fingerprint, options.reject_truncated)
