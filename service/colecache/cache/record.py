"""A cached embedding and its byte encodings (raw little-endian float32; never pickle or JSON)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_HEADER = struct.Struct("<IB")  # n_tokens, truncated
VECTOR_DTYPE = np.dtype("<f4")


@dataclass(frozen=True, slots=True)
class EmbeddingRecord:
    vector: np.ndarray  # float32, shape (dim,)
    n_tokens: int
    truncated: bool


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def vector_from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=VECTOR_DTYPE)


def pack_record(record: EmbeddingRecord) -> bytes:
    """Hot-tier value: a 5-byte header then the raw float32 vector."""
    return _HEADER.pack(record.n_tokens, int(record.truncated)) + vector_to_bytes(record.vector)


def unpack_record(blob: bytes) -> EmbeddingRecord:
    n_tokens, truncated = _HEADER.unpack_from(blob)
    return EmbeddingRecord(vector_from_bytes(blob[_HEADER.size :]), n_tokens, bool(truncated))
