"""Blocking and asyncio clients for a colecache server (httpx underneath; no torch, no numpy)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import IO, Any

import httpx

from . import _plans
from ._plans import Call, ChunkLimit, Plan
from ._transport import (
    DEFAULT_TIMEOUT_PER_ITEM,
    RetryPolicy,
    call_timeout,
    chunk_limit,
    decode,
    default_headers,
    retryable,
    timeout_message,
)
from .csvio import read_observations_csv
from .errors import APIError, ColecacheError, Timeout, TransportError
from .types import (
    EmbedResult,
    Observation,
    ObservationsWritten,
    PredictResult,
    ProxiesResult,
    StudyInfo,
    StudyReport,
)

DEFAULT_URL = "http://127.0.0.1:8000"

log = logging.getLogger("colecache_client")


class ReferenceWarning(UserWarning):
    """A study's surrogate was fitted on a weaker reference than the whole search space it asked for."""


def _wrap(exc: Exception, call: Call | None = None, timeout: httpx.Timeout | None = None) -> Exception:
    if isinstance(exc, httpx.ReadTimeout) and call is not None and not call.resend_on_timeout:
        return Timeout(timeout_message(call.method, call.path, call.items, timeout, exc))
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"request timed out: {exc}")
    if isinstance(exc, httpx.TransportError):
        return TransportError(f"could not talk to the colecache server: {exc}")
    return exc


def _write_text(path: str | os.PathLike, text: str) -> None:
    """Write a download exactly as received (no newline translation of its line ends)."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(text)


def precompute_command(info: StudyInfo) -> str:
    """The `colecache precompute` line that fills the whole-space reference for this study's options."""
    render, embedder = info.render or {}, info.embedder or {}
    parts = [f"colecache precompute --space {info.space}"]
    for option in ("primitives", "context", "dataset"):
        if render.get(option) is not None:
            parts.append(f"--{option} {render[option]}")
    parts.append("--canonical" if render.get("canonical") else "--no-canonical")
    for option in ("pooling", "layer", "max_length"):
        if embedder.get(option) is not None:
            parts.append(f"--{option.replace('_', '-')} {embedder[option]}")
    if embedder.get("normalize") is not None:
        parts.append("--normalize" if embedder["normalize"] else "--no-normalize")
    return " ".join(parts)


def warn_if_degraded(info: StudyInfo, result: PredictResult, enumerable: bool | None, stacklevel: int = 3) -> None:
    """Warn (once per study and call site) when a study that asked for the whole-space reference got less.

    Without the space in the server's cache the feature reduction is fitted on the candidate pool
    or the observed cells only, and ranks worse (NB201 trial: Kendall tau 0.546 instead of 0.610);
    nothing in the predictions themselves shows it."""
    features = (info.surrogate or {}).get("features") or {}
    if result.reference in (None, "space") or features.get("reference", "space") != "space":
        return
    if not features.get("cole", True):
        return
    if not enumerable:
        return  # the candidate pool (or the observed cells) is the best such a space can have (or unknown)
    fitted_on = "the study's candidate pool" if result.reference == "candidates" else "the observed cells only"
    warnings.warn(
        f"study {info.name!r} ({info.id}): the surrogate's feature reduction was fitted on {fitted_on}, not on "
        f"the whole {info.space} space, because the server has not cached that space for this study's "
        f"render/embedder options; predictions rank worse (NB201: Kendall tau 0.546 instead of 0.610). Fill it "
        f"once with `{precompute_command(info)}` (see GET /info, spaces.{info.space}.reference).",
        ReferenceWarning,
        stacklevel=stacklevel,
    )


class _Base:
    def __init__(self, *, max_retries: int, backoff: float, max_chunk: int | None, timeout_per_item: float):
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self.max_chunk = max_chunk
        self.timeout_per_item = timeout_per_item
        self._chunk: int | None = None
        self._info: dict[str, Any] | None = None  # GET /info, fetched once (with the chunk limit)

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return str(self._http.base_url).rstrip("/")

    def space_enumerable(self, space: str) -> bool | None:
        """Whether `space` can be enumerated (so a whole-space reference exists): the server's word from
        GET /info when fetched, else this process's own registry; None when neither knows the space."""
        described = ((self._info or {}).get("spaces") or {}).get(space) or {}
        if "enumerable" in described:
            return bool(described["enumerable"])
        try:
            from .spaces import get_space

            return bool(get_space(space).describe()["enumerable"])
        except Exception:  # a plugin space installed only beside the server
            return None

    def _timeout(self, call: Call) -> httpx.Timeout | None:
        """The per-call timeout of a call that may embed many specs (None: the client's own)."""
        timeout = call_timeout(self._http.timeout, call.items, self.timeout_per_item * call.cost)
        if timeout is not None:
            log.info(
                "%s %s: %d spec(s), waiting up to %.0f s for the answer",
                call.method,
                call.path,
                call.items,
                timeout.read,
            )
        return timeout

    @staticmethod
    def _request_args(call: Call, timeout: httpx.Timeout | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if call.json is not None:
            args["json"] = call.json
        if call.params is not None:
            args["params"] = call.params
        if timeout is not None:
            args["timeout"] = timeout
        return args


class Client(_Base):
    """A blocking client.

    >>> with Client("http://gpu-box:8000", api_key="...") as client:
    ...     vectors = client.embed(["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|"]).embeddings

    Retries 429 / 503 and connection failures with backoff (honouring Retry-After), splits large
    batches under the server's item limit, and raises typed errors carrying the server's message.

    `timeout` is per request; calls that may embed many specs (`embed`, `predict`) wait
    `timeout_per_item` seconds longer per spec, since a cold call computes every uncached
    embedding first. Such a call that still times out is not re-sent (the server is likely still
    working on it); it raises `Timeout` saying so.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_chunk: int | None = None,
        timeout_per_item: float = DEFAULT_TIMEOUT_PER_ITEM,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ):
        super().__init__(
            max_retries=max_retries, backoff=backoff, max_chunk=max_chunk, timeout_per_item=timeout_per_item
        )
        self._http = http_client or httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=default_headers(api_key), transport=transport
        )

    # --- plumbing ------------------------------------------------------------------------------
    def _send(self, call: Call) -> Any:
        attempt, timeout = 0, self._timeout(call)
        while True:
            try:
                response = self._http.request(call.method, call.path, **self._request_args(call, timeout))
                return decode(response, call.text)
            except (APIError, httpx.TransportError) as exc:
                if attempt >= self.retry.max_retries or not retryable(
                    exc, call.retry_unsent_only, call.resend_on_timeout
                ):
                    raise _wrap(exc, call, timeout or self._http.timeout) from exc
                time.sleep(self.retry.delay(attempt, getattr(exc, "retry_after", None)))
                attempt += 1

    def _run(self, plan: Plan) -> Any:
        reply: Any = None
        error: Exception | None = None
        try:
            while True:
                step = plan.send(reply) if error is None else plan.throw(error)
                error = None
                try:
                    if isinstance(step, ChunkLimit):
                        if self._chunk is None:
                            self._info = self._send(Call("GET", "/info"))
                            self._chunk = chunk_limit(self._info, self.max_chunk)
                        reply = self._chunk
                    else:
                        reply = self._send(step)
                except ColecacheError as exc:
                    error = exc  # the plan may add context (which rows) before it propagates
        except StopIteration as done:
            return done.value

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- service -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._send(Call("GET", "/health"))

    def ready(self) -> bool:
        """True when the model is loaded and the stores answer (no retries: a 503 means not yet)."""
        try:
            return decode(self._http.get("/ready"))["status"] == "ready"
        except APIError:
            return False

    def wait_ready(self, timeout: float = 300.0, interval: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.ready():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise Timeout(f"server not ready after {timeout}s")
            time.sleep(interval)

    def info(self) -> dict[str, Any]:
        return self._send(Call("GET", "/info"))

    def embed(
        self,
        specs: Sequence[Any],
        *,
        space: str = "nb201",
        render: dict[str, Any] | None = None,
        embedder: dict[str, Any] | None = None,
    ) -> EmbedResult:
        """Vectors for specs (cell strings, op lists, `{"code": ...}`), in order; chunked as needed."""
        return self._run(_plans.embed(specs, space, render, embedder))

    def proxies(self, specs: Sequence[Any], *, space: str = "nb201") -> ProxiesResult:
        """Zero-cost proxies of each architecture's untrained network, in order (cached by the server;
        about a second per uncached NB201 network per server worker, so long calls wait accordingly)."""
        return self._run(_plans.proxies(specs, space))

    # --- studies -------------------------------------------------------------------------------
    def create_study(
        self,
        name: str,
        *,
        space: str = "nb201",
        objective: str = "accuracy",
        direction: str = "maximize",
        render: dict[str, Any] | None = None,
        embedder: dict[str, Any] | None = None,
        surrogate: dict[str, Any] | None = None,
        candidates: Sequence[Any] | None = None,
    ) -> Study:
        """A new study. `candidates`: the pool the search draws from (unlabelled), if it is fixed."""
        body = {
            "name": name,
            "space": space,
            "objective": objective,
            "direction": direction,
            "render": render,
            "embedder": embedder,
            "surrogate": surrogate,
            "candidates": None if candidates is None else _plans.spec_list(candidates, "candidates"),
        }
        return Study(self, self._run(_plans.create_study(body)))

    def study(self, study_id: str) -> Study:
        """A handle on an existing study (fetches its description)."""
        return Study(self, self.get_study(study_id))

    def get_study(self, study_id: str) -> StudyInfo:
        return self._run(_plans.get_study(study_id))

    def list_studies(self) -> list[dict[str, Any]]:
        return self._run(_plans.list_studies())

    def delete_study(self, study_id: str) -> None:
        self._run(_plans.delete_study(study_id))

    def observe(
        self, study_id: str, observations: Sequence[Observation | dict | tuple], on_conflict: str = "reject"
    ) -> ObservationsWritten:
        """Record `(spec, value[, metadata])` results; returns once the server has committed them."""
        return self._run(_plans.observe(study_id, observations, on_conflict))

    def observations(self, study_id: str) -> list[Observation]:
        return self._run(_plans.observations(study_id))

    def predict(self, study_id: str, specs: Sequence[Any]) -> PredictResult:
        """Surrogate mean and std for each spec (the server refits first if observations changed)."""
        return self._run(_plans.predict(study_id, specs))

    def set_candidates(self, study_id: str, specs: Sequence[Any] | None) -> int:
        """Replace the study's candidate pool (None clears it); returns the new study version."""
        return self._run(_plans.set_candidates(study_id, specs))

    def report(self, study_id: str, window: int = 50) -> StudyReport:
        """The study's best-so-far curve and its surrogate's out-of-sample quality (Kendall tau, Spearman
        rho, MAE, calibration) over every prediction/observation pair and over the latest `window` of them
        (ValidationError outside the server's range, 3..100000 today); NotFound for an unknown study."""
        return self._run(_plans.report(study_id, window))

    def export_csv(self, study_id: str, path: str | os.PathLike | None = None) -> str:
        """Every observation as CSV (columns spec,value,metadata,arch,id,created_at,updated_at); also
        written to `path` when given. `import_csv` reads it back unchanged."""
        text = self._run(_plans.export_csv(study_id))
        if path is not None:
            _write_text(path, text)
        return text

    def import_csv(
        self,
        study_id: str,
        path: str | os.PathLike | IO[str],
        *,
        chunk_size: int = 500,
        on_conflict: str = "reject",
        spec_column: str = "spec",
        value_column: str = "value",
        metadata_column: str | None = "metadata",
        progress: Callable[[int, int], Any] | None = None,
    ) -> ObservationsWritten:
        """Observations from a CSV file (see `read_observations_csv`), posted in chunks of `chunk_size` rows.

        The whole file is read and checked first, so a malformed one (ValueError naming the line) posts
        nothing. Each chunk is committed on its own; `progress(done, total)` (rows) follows each. Importing
        the same file again is a no-op ("unchanged"), so an interrupted import can simply be re-run."""
        rows = read_observations_csv(
            path, spec_column=spec_column, value_column=value_column, metadata_column=metadata_column
        )
        return self.import_observations(
            study_id, rows, chunk_size=chunk_size, on_conflict=on_conflict, progress=progress
        )

    def import_observations(
        self,
        study_id: str,
        rows: Sequence[Observation | dict | tuple],
        *,
        chunk_size: int = 500,
        on_conflict: str = "reject",
        progress: Callable[[int, int], Any] | None = None,
    ) -> ObservationsWritten:
        """`observe` for bulk loads: posts `chunk_size` rows at a time (each chunk committed on its own) and
        calls `progress(done, total)` (rows) after each. On an error the chunks before it stay committed and
        the error's `errors[i]["index"]` are positions in `rows`; re-running is safe (same values: no-ops)."""
        return self._run(_plans.import_observations(study_id, rows, chunk_size, on_conflict, progress))


class Study:
    """A study handle: `observe`, `predict`, `observations`, `report`, `export_csv`, `import_csv`, `refresh`."""

    def __init__(self, client: Client, info: StudyInfo):
        self.client = client
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def maximize(self) -> bool:
        return self.info.direction == "maximize"

    def refresh(self) -> StudyInfo:
        self.info = self.client.get_study(self.id)
        return self.info

    def observe(self, observations: Sequence[Observation | dict | tuple], on_conflict: str = "reject"):
        return self.client.observe(self.id, observations, on_conflict)

    def observations(self) -> list[Observation]:
        return self.client.observations(self.id)

    def predict(self, specs: Sequence[Any]) -> PredictResult:
        """Surrogate mean and std per spec; `reference` says what the feature reduction was fitted on.

        Warns (`ReferenceWarning`) when this study asked for the whole search space but the server
        could only fit on the candidate pool or the observed cells (the space is not precomputed)."""
        result = self.client.predict(self.id, specs)
        warn_if_degraded(self.info, result, self.client.space_enumerable(self.info.space))
        return result

    def set_candidates(self, specs: Sequence[Any] | None) -> int:
        """The pool this study's search draws from; the surrogate's reduction is fitted on it."""
        return self.client.set_candidates(self.id, specs)

    def report(self, window: int = 50) -> StudyReport:
        """Best-so-far and the surrogate's out-of-sample quality (see `Client.report`)."""
        return self.client.report(self.id, window)

    def export_csv(self, path: str | os.PathLike | None = None) -> str:
        """Every observation as CSV text, also written to `path` when given (see `Client.export_csv`)."""
        return self.client.export_csv(self.id, path)

    def import_csv(self, path: str | os.PathLike | IO[str], **options: Any) -> ObservationsWritten:
        """Observations from a CSV file, chunked and idempotent (options as `Client.import_csv`)."""
        return self.client.import_csv(self.id, path, **options)


class AsyncClient(_Base):
    """The asyncio twin of `Client`: same methods, awaited."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_chunk: int | None = None,
        timeout_per_item: float = DEFAULT_TIMEOUT_PER_ITEM,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ):
        super().__init__(
            max_retries=max_retries, backoff=backoff, max_chunk=max_chunk, timeout_per_item=timeout_per_item
        )
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=default_headers(api_key), transport=transport
        )

    async def _send(self, call: Call) -> Any:
        attempt, timeout = 0, self._timeout(call)
        while True:
            try:
                response = await self._http.request(call.method, call.path, **self._request_args(call, timeout))
                return decode(response, call.text)
            except (APIError, httpx.TransportError) as exc:
                if attempt >= self.retry.max_retries or not retryable(
                    exc, call.retry_unsent_only, call.resend_on_timeout
                ):
                    raise _wrap(exc, call, timeout or self._http.timeout) from exc
                await asyncio.sleep(self.retry.delay(attempt, getattr(exc, "retry_after", None)))
                attempt += 1

    async def _run(self, plan: Plan) -> Any:
        reply: Any = None
        error: Exception | None = None
        try:
            while True:
                step = plan.send(reply) if error is None else plan.throw(error)
                error = None
                try:
                    if isinstance(step, ChunkLimit):
                        if self._chunk is None:
                            self._info = await self._send(Call("GET", "/info"))
                            self._chunk = chunk_limit(self._info, self.max_chunk)
                        reply = self._chunk
                    else:
                        reply = await self._send(step)
                except ColecacheError as exc:
                    error = exc  # the plan may add context (which rows) before it propagates
        except StopIteration as done:
            return done.value

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def health(self) -> dict[str, Any]:
        return await self._send(Call("GET", "/health"))

    async def ready(self) -> bool:
        try:
            return decode(await self._http.get("/ready"))["status"] == "ready"
        except APIError:
            return False

    async def info(self) -> dict[str, Any]:
        return await self._send(Call("GET", "/info"))

    async def embed(self, specs, *, space="nb201", render=None, embedder=None) -> EmbedResult:
        return await self._run(_plans.embed(specs, space, render, embedder))

    async def proxies(self, specs, *, space="nb201") -> ProxiesResult:
        return await self._run(_plans.proxies(specs, space))

    async def create_study(
        self,
        name,
        *,
        space="nb201",
        objective="accuracy",
        direction="maximize",
        render=None,
        embedder=None,
        surrogate=None,
        candidates=None,
    ) -> StudyInfo:
        body = {
            "name": name,
            "space": space,
            "objective": objective,
            "direction": direction,
            "render": render,
            "embedder": embedder,
            "surrogate": surrogate,
            "candidates": None if candidates is None else _plans.spec_list(candidates, "candidates"),
        }
        return await self._run(_plans.create_study(body))

    async def get_study(self, study_id: str) -> StudyInfo:
        return await self._run(_plans.get_study(study_id))

    async def list_studies(self) -> list[dict[str, Any]]:
        return await self._run(_plans.list_studies())

    async def delete_study(self, study_id: str) -> None:
        await self._run(_plans.delete_study(study_id))

    async def observe(self, study_id, observations, on_conflict="reject") -> ObservationsWritten:
        return await self._run(_plans.observe(study_id, observations, on_conflict))

    async def observations(self, study_id: str) -> list[Observation]:
        return await self._run(_plans.observations(study_id))

    async def predict(self, study_id: str, specs: Sequence[Any]) -> PredictResult:
        return await self._run(_plans.predict(study_id, specs))

    async def set_candidates(self, study_id: str, specs: Sequence[Any] | None) -> int:
        return await self._run(_plans.set_candidates(study_id, specs))

    async def report(self, study_id: str, window: int = 50) -> StudyReport:
        return await self._run(_plans.report(study_id, window))

    async def export_csv(self, study_id: str, path: str | os.PathLike | None = None) -> str:
        text = await self._run(_plans.export_csv(study_id))
        if path is not None:
            _write_text(path, text)
        return text

    async def import_csv(
        self,
        study_id: str,
        path: str | os.PathLike | IO[str],
        *,
        chunk_size: int = 500,
        on_conflict: str = "reject",
        spec_column: str = "spec",
        value_column: str = "value",
        metadata_column: str | None = "metadata",
        progress: Callable[[int, int], Any] | None = None,
    ) -> ObservationsWritten:
        """As `Client.import_csv` (the file is read in this thread; it is checked before anything is posted)."""
        rows = read_observations_csv(
            path, spec_column=spec_column, value_column=value_column, metadata_column=metadata_column
        )
        return await self.import_observations(
            study_id, rows, chunk_size=chunk_size, on_conflict=on_conflict, progress=progress
        )

    async def import_observations(
        self,
        study_id: str,
        rows: Sequence[Observation | dict | tuple],
        *,
        chunk_size: int = 500,
        on_conflict: str = "reject",
        progress: Callable[[int, int], Any] | None = None,
    ) -> ObservationsWritten:
        return await self._run(_plans.import_observations(study_id, rows, chunk_size, on_conflict, progress))
