"""The request path as one pipeline: spec -> code -> key -> cache tiers -> batched model -> vectors."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from colecache_client.spaces import SpecError

from . import metrics
from .cache.keys import cache_key
from .cache.record import EmbeddingRecord
from .cache.singleflight import SingleFlight
from .cache.tiered import TieredCache
from .embedding.backend import BatchItem, TransformerBackend
from .embedding.fingerprint import Fingerprint, Readout, resolve
from .embedding.options import EmbedOptions
from .embedding.queue import BatchQueue, ItemFailed
from .render import RAW_CODE_VERSION, Rendered, RenderOptions, render
from .specs import CodeSpec, InvalidSpecs, ItemError, Spec

COMPUTED = "computed"


@dataclass(frozen=True, slots=True)
class Keyed:
    """What the pipeline needs of a rendered spec once its key is known (the code is not kept)."""

    key: bytes
    renderer_version: str
    arch: str | None


@dataclass(frozen=True, slots=True)
class EmbeddedItem:
    record: EmbeddingRecord
    source: str  # 'redis' | 'memory' | 'sql' | 'computed'
    key: bytes
    renderer_version: str
    arch: str | None


@dataclass(frozen=True, slots=True)
class EmbedOutcome:
    items: list[EmbeddedItem]
    fingerprint: Fingerprint

    @property
    def dim(self) -> int:
        return int(self.items[0].record.vector.shape[0]) if self.items else 0


class TruncatedItems(ValueError):
    """reject_truncated was set and some items exceed max_length."""

    def __init__(self, errors: Sequence[ItemError]):
        self.errors = list(errors)
        super().__init__("; ".join(f"item {e.index}: {e.reason}" for e in self.errors[:5]))


class EmbedPipeline:
    def __init__(
        self,
        backend: TransformerBackend,
        queue: BatchQueue,
        cache: TieredCache,
        defaults: EmbedOptions,
        key_memo_size: int = 200_000,
    ):
        self.backend = backend
        self.queue = queue
        self.cache = cache
        self.defaults = defaults
        # A failed item's flight ends in its exception (a value), so requests sharing the flight's other keys get them.
        self._flight: SingleFlight[bytes, EmbeddingRecord | Exception] = SingleFlight()
        # (render options, fingerprint id) -> spec -> Keyed: a repeated spec skips rendering and hashing.
        self._keys: dict[tuple[RenderOptions, str], OrderedDict[Spec, Keyed]] = {}
        self._key_memo_size = key_memo_size
        self._readouts: dict[EmbedOptions, Readout] = {}
        if queue.probe_item is None:
            # A known-good item lets the queue tell an input the model fails on from a failing model.
            probe = backend.tokenize(["x = 1"], backend.identity.max_positions)[0]
            queue.probe_item = BatchItem(probe, "mean", backend.identity.num_hidden_states - 1, False)

    def readout(self, options: EmbedOptions) -> Readout:
        """Resolve request options against the served model (raises FingerprintError)."""
        readout = self._readouts.get(options)
        if readout is None:
            readout = resolve(self.backend.identity, self.defaults, options)
            if len(self._readouts) < 1024:
                self._readouts[options] = readout
        return readout

    def keyed(self, specs: Sequence[Spec], render_options: RenderOptions, fingerprint: Fingerprint) -> list[Keyed]:
        """Spec -> code -> key, memoised per (render options, fingerprint). Code specs are hashed each time."""
        memo = self._keys.setdefault((render_options, fingerprint.id), OrderedDict())
        out, errors = [], []
        for index, spec in enumerate(specs):
            if isinstance(spec, CodeSpec):
                out.append(Keyed(cache_key(fingerprint.id, RAW_CODE_VERSION, spec.code), RAW_CODE_VERSION, None))
                continue
            found = memo.get(spec)
            if found is None:
                try:
                    rendered = render(spec, render_options)
                except Exception as exc:  # a plugin's renderer refusing (or failing on) one item fails that item
                    reason = str(exc) if isinstance(exc, SpecError) else f"renderer failed: {type(exc).__name__}: {exc}"
                    errors.append(ItemError(index, reason))
                    continue
                key = cache_key(fingerprint.id, rendered.renderer_version, rendered.code)
                found = memo[spec] = Keyed(key, rendered.renderer_version, rendered.arch)
                if len(memo) > self._key_memo_size:
                    memo.popitem(last=False)
            out.append(found)
        if errors:
            raise InvalidSpecs(errors)
        return out

    async def embed(self, specs: Sequence[Spec], render_options: RenderOptions, options: EmbedOptions) -> EmbedOutcome:
        readout = self.readout(options)
        fingerprint = readout.fingerprint
        keyed = self.keyed(specs, render_options, fingerprint)
        keys = [k.key for k in keyed]

        unique = list(dict.fromkeys(keys))
        found, found_in = await self.cache.get_many(unique)
        by_key = {k: r for k, r in zip(unique, found) if r is not None}
        source_of = {k: s for k, s in zip(unique, found_in) if s is not None}
        missing = [k for k in unique if k not in by_key]
        metrics.record_lookup(found_in)

        code_of: dict[bytes, Rendered] = {}
        if missing:
            # Only misses need their code again (the memo keeps keys, not texts).
            wanted = set(missing)
            for key, spec in zip(keys, specs):
                if key in wanted and key not in code_of:
                    code_of[key] = render(spec, render_options)
        tokens_of = None
        if readout.reject_truncated:
            # Decided before computing: a refused request computes and caches nothing (its hits stay as they were).
            truncated = {k for k, r in by_key.items() if r.truncated}
            if missing:
                texts = [code_of[k].code for k in missing]
                tokens_of = dict(
                    zip(missing, await asyncio.to_thread(self.backend.tokenize, texts, fingerprint.max_length))
                )
                truncated.update(k for k, t in tokens_of.items() if t.truncated)
            self._reject_truncated(keys, truncated, fingerprint)
        if missing:

            async def compute(claimed: list[bytes]) -> dict[bytes, EmbeddingRecord | Exception]:
                return await self._compute(claimed, code_of, fingerprint, tokens_of)

            computed = await self._flight.run(missing, compute)
            failed = {k: v for k, v in computed.items() if isinstance(v, Exception)}
            if failed:
                self._raise_failures(keys, failed)
            by_key.update(computed)
            source_of.update(dict.fromkeys(computed, COMPUTED))

        items = [EmbeddedItem(by_key[k.key], source_of[k.key], k.key, k.renderer_version, k.arch) for k in keyed]
        return EmbedOutcome(items, fingerprint)

    @staticmethod
    def _raise_failures(keys: list[bytes], failed: dict[bytes, Exception]) -> None:
        """The model failed on some items: a 422 naming them when the input is at fault, else the server's error."""
        for exc in failed.values():
            if not isinstance(exc, ItemFailed):
                raise exc
        raise InvalidSpecs([ItemError(i, str(failed[key])) for i, key in enumerate(keys) if key in failed])

    @staticmethod
    def _reject_truncated(keys: list[bytes], truncated: set[bytes], fingerprint: Fingerprint) -> None:
        errors = [
            ItemError(i, f"code is longer than max_length={fingerprint.max_length} tokens")
            for i, key in enumerate(keys)
            if key in truncated
        ]
        if errors:
            raise TruncatedItems(errors)

    async def _compute(
        self,
        keys: list[bytes],
        code_of: dict[bytes, Rendered],
        fingerprint: Fingerprint,
        tokens_of: dict | None = None,
    ) -> dict[bytes, EmbeddingRecord | Exception]:
        """Tokenize off the event loop (unless already done), run through the batch queue, commit, return.

        Vectors are committed forward by forward as they come back, not once the whole request is done:
        what was computed stays stored when the request ends early (a shutdown's grace period running out).
        An item the model failed on maps to its exception; the others are committed and served anyway.
        """
        texts = [code_of[k].code for k in keys]
        if tokens_of is not None:
            tokens = [tokens_of[k] for k in keys]
        else:
            tokens = await asyncio.to_thread(self.backend.tokenize, texts, fingerprint.max_length)
        batch = [BatchItem(t, fingerprint.pooling, fingerprint.layer, fingerprint.normalize) for t in tokens]
        futures = self.queue.enqueue(batch)
        position = {future: i for i, future in enumerate(futures)}
        results: dict[bytes, EmbeddingRecord | Exception] = {}
        waiting = set(futures)
        try:
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                rows, versions = [], []
                for future in sorted(done, key=position.__getitem__):
                    key, token = keys[position[future]], tokens[position[future]]
                    if future.cancelled():
                        raise asyncio.CancelledError()
                    if future.exception() is not None:
                        results[key] = future.exception()
                    else:
                        rows.append((key, EmbeddingRecord(future.result(), token.n_tokens, token.truncated)))
                        versions.append(code_of[key].renderer_version)
                if rows:
                    results.update(await self.cache.put_many(rows, fingerprint.as_dict(), versions))
        finally:
            for future in waiting:  # this request is going away: the queue skips what it no longer needs
                future.cancel()
        return results
