"""Cache keys: one digest over everything that shapes a vector, and nothing else."""

from __future__ import annotations

import hashlib

KEY_SCHEME = "colecache-key/1"


def cache_key(fingerprint_id: str, renderer_version: str, code: str) -> bytes:
    """sha256 over length-prefixed fields, so no two different field tuples can collide by concatenation.

    `fingerprint_id` already covers model, revision, pooling, layer, max_length, dtype and
    normalisation; the renderer version and the exact code text complete the key.
    """
    digest = hashlib.sha256()
    for part in (KEY_SCHEME, fingerprint_id, renderer_version, code):
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()
