"""The API's operations, written once as generators that yield HTTP calls and receive decoded bodies.

`Client` drives them with blocking httpx calls and `AsyncClient` with awaited ones, so the
request shapes, chunking and result parsing exist in one place (a sans-IO core).
"""

from __future__ import annotations

import base64
import re
import reprlib
import sys
from array import array
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import APIError, ValidationError
from .types import (
    EmbedItem,
    EmbedResult,
    Observation,
    ObservationsWritten,
    Prediction,
    PredictResult,
    ProxiesResult,
    ProxyItem,
    StudyInfo,
    StudyReport,
)


@dataclass(frozen=True)
class Call:
    """One HTTP request. `retry_unsent_only`: retry only failures that happened before the request was sent.

    `items`: how many specs the server may have to embed to answer (a cold call is slow), so the
    driver lengthens the read timeout by its per-item allowance. `resend_on_timeout`: whether a
    read timeout may be retried; False for such long calls, whose repeat would start the same work
    again while the first one is still running. `text`: the driver answers with the body as text
    (a CSV download) instead of decoded JSON.

    A driver throws a call's error back into the plan (`generator.throw`), so a plan may add what it
    knows (which rows a chunk held) before letting it propagate."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    retry_unsent_only: bool = False
    items: int = 0
    resend_on_timeout: bool = True
    cost: float = 1.0  # work per item relative to embedding one spec (scales the per-item allowance)
    text: bool = False


@dataclass(frozen=True)
class ChunkLimit:
    """Ask the driver for the largest batch the server accepts (from GET /info, fetched once)."""


Plan = Generator[Call | ChunkLimit, Any, Any]


def decode_vector(value: str | list[float]) -> list[float]:
    """A vector from the server: base64 of little-endian float32, or a JSON list."""
    if isinstance(value, list):
        return value
    floats = array("f")
    floats.frombytes(base64.b64decode(value))
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


def spec_list(specs: Any, what: str = "specs") -> list[Any]:
    """`specs` as a list. One spec (a string or a dict) where a list belongs is a TypeError naming `what`:
    `list()` of a cell string would otherwise send one bad spec per character (a 422 with ~90 errors)."""
    if isinstance(specs, (str, bytes, dict)):
        raise TypeError(f"{what} is a list of specs; wrap a single one in a list: [{_SHORT.repr(specs)}]")
    return list(specs)


_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxstring = _SHORT.maxother = 60


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(size, 1))]


def _clean(options: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (options or {}).items() if v is not None}


# Scoring one uncached network (build, forward, backward) is about four embeddings' worth on a CPU.
PROXY_COST = 4.0


def proxies(specs: Sequence[Any], space: str) -> Plan:
    specs = spec_list(specs)  # before any request
    limit = yield ChunkLimit()
    items: list[ProxyItem] = []
    body: dict[str, Any] = {"proxies": [], "log10_scaled": [], "fingerprint": {}}
    for part in chunks(specs, limit):
        body = yield Call(
            "POST",
            "/proxies",
            json={"specs": list(part), "space": space},
            items=len(part),
            resend_on_timeout=False,
            cost=PROXY_COST,
        )
        offset = len(items)
        items.extend(ProxyItem(offset + raw["index"], raw["source"], raw["values"]) for raw in body["items"])
    return ProxiesResult(body["proxies"], body["log10_scaled"], body["fingerprint"], items)


def embed(
    specs: Sequence[Any], space: str, render: dict | None, embedder: dict | None, encoding: str = "base64"
) -> Plan:
    specs = spec_list(specs)  # before any request
    limit = yield ChunkLimit()
    items: list[EmbedItem] = []
    dim, fingerprint = 0, {}
    for part in chunks(specs, limit):
        body = yield Call(
            "POST",
            "/embed",
            json={
                "specs": list(part),
                "space": space,
                "render": _clean(render),
                "embedder": _clean(embedder),
                "encoding": encoding,
            },
            items=len(part),
            resend_on_timeout=False,
        )
        offset = len(items)
        dim, fingerprint = body["dim"], body["fingerprint"]
        for raw in body["items"]:
            items.append(
                EmbedItem(
                    index=offset + raw["index"],
                    embedding=decode_vector(raw["embedding"]),
                    source=raw["source"],
                    n_tokens=raw["n_tokens"],
                    truncated=raw["truncated"],
                    key=raw["key"],
                    renderer_version=raw["renderer_version"],
                    arch=raw.get("arch"),
                )
            )
    return EmbedResult(dim, fingerprint, items)


def create_study(body: dict[str, Any]) -> Plan:
    # Not idempotent: a request that may have reached the server is not sent twice.
    created = yield Call("POST", "/studies", json=_clean(body), retry_unsent_only=True)
    return StudyInfo.from_json(created)


def set_candidates(study_id: str, specs: Sequence[Any] | None) -> Plan:
    body = yield Call(
        "PUT",
        f"/studies/{study_id}/candidates",
        json={"specs": None if specs is None else spec_list(specs, "candidates")},
    )
    return body["version"]


def get_study(study_id: str) -> Plan:
    return StudyInfo.from_json((yield Call("GET", f"/studies/{study_id}")))


def list_studies() -> Plan:
    body = yield Call("GET", "/studies")
    return body["studies"]


def delete_study(study_id: str) -> Plan:
    yield Call("DELETE", f"/studies/{study_id}")


def _observation(item: Observation | dict | tuple) -> dict[str, Any]:
    if isinstance(item, Observation):
        return item.to_json()
    if isinstance(item, tuple):
        spec, value, *rest = item
        return Observation(spec, value, rest[0] if rest else None).to_json()
    return dict(item)


ON_CONFLICT = ("reject", "replace", "keep")


def _check_rows(rows: Any, on_conflict: str) -> None:
    """Misuse the server would only answer with a puzzling 422: say it here (TypeError / ValueError)."""
    if isinstance(rows, (str, bytes, dict, tuple, Observation)):
        raise TypeError(
            "observations are a list of (spec, value[, metadata]) tuples, dicts or Observation objects; "
            "wrap a single one in a list: study.observe([(spec, value)])"
        )
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")


def observe(study_id: str, observations: Sequence[Observation | dict | tuple], on_conflict: str) -> Plan:
    """Post observations (chunked under the server's limit; each chunk is its own committed transaction)."""
    _check_rows(observations, on_conflict)
    limit = yield ChunkLimit()
    payload = [_observation(o) for o in observations]
    totals = {"inserted": 0, "unchanged": 0, "replaced": 0, "kept": 0}
    last: dict[str, Any] = {}
    for part in chunks(payload, limit):
        last = yield Call(
            "POST", f"/studies/{study_id}/observations", json={"observations": list(part), "on_conflict": on_conflict}
        )
        for key in totals:
            totals[key] += last[key]
    return ObservationsWritten(**totals, version=last["version"], n_observations=last["n_observations"])


def observations(study_id: str, page: int = 1000) -> Plan:
    out: list[Observation] = []
    while True:
        body = yield Call("GET", f"/studies/{study_id}/observations", params={"limit": page, "offset": len(out)})
        rows = body["observations"]
        out.extend(Observation(r["spec"], r["value"], r.get("metadata"), r.get("arch")) for r in rows)
        if len(rows) < page:
            return out


def predict(study_id: str, specs: Sequence[Any]) -> Plan:
    specs = spec_list(specs)  # before any request
    limit = yield ChunkLimit()
    predictions: list[Prediction] = []
    body: dict[str, Any] = {}
    for part in chunks(specs, limit):
        body = yield Call(
            "POST", f"/studies/{study_id}/predict", json={"specs": list(part)}, items=len(part), resend_on_timeout=False
        )
        offset = len(predictions)
        predictions.extend(
            Prediction(offset + p["index"], p.get("arch"), p["mean"], p["std"]) for p in body["predictions"]
        )
    return PredictResult(
        body["study_id"],
        body["surrogate_version"],
        body["n_observations"],
        predictions,
        body.get("reference"),
        bool(body.get("smoothed", False)),
    )


def report(study_id: str, window: int = 50) -> Plan:
    body = yield Call("GET", f"/studies/{study_id}/report", params={"window": window})
    return StudyReport.from_json(body)


def export_csv(study_id: str) -> Plan:
    return (yield Call("GET", f"/studies/{study_id}/observations", params={"format": "csv"}, text=True))


def import_observations(
    study_id: str,
    rows: Sequence[Observation | dict | tuple],
    chunk_size: int,
    on_conflict: str,
    progress: Callable[[int, int], Any] | None = None,
) -> Plan:
    """Post rows in chunks of at most `chunk_size` (and the server's limit), each committed on its own.

    `progress(done, total)` (rows) runs after each committed chunk. On an error the chunks before it
    stay committed; the error's per-item `errors[i]["index"]` are made positions in `rows` (the server
    numbers items within the chunk). Re-running is safe: re-posting the same value is a no-op."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    _check_rows(rows, on_conflict)
    payload = [_observation(o) for o in rows]
    info = yield Call("GET", f"/studies/{study_id}")  # 404 before anything is sent; its space checks the specs
    if not payload:  # nothing to post; say where the study stands
        return ObservationsWritten(0, 0, 0, 0, version=info["version"], n_observations=info["n_observations"])
    invalid = _invalid_specs(info["space"], payload)
    if invalid:
        raise ValidationError(
            422,
            f"{len(invalid)} row(s) have specs that are not {info['space']} architectures; nothing was posted",
            invalid,
        )
    limit = yield ChunkLimit()
    size = min(chunk_size, limit)
    totals = {"inserted": 0, "unchanged": 0, "replaced": 0, "kept": 0}
    last: dict[str, Any] = {}
    for start in range(0, len(payload), size):
        part = payload[start : start + size]
        try:
            last = yield Call(
                "POST", f"/studies/{study_id}/observations", json={"observations": part, "on_conflict": on_conflict}
            )
        except APIError as exc:
            _locate(exc, start, len(part), len(payload))
            raise
        for key in totals:
            totals[key] += last[key]
        if progress is not None:
            progress(start + len(part), len(payload))
    return ObservationsWritten(**totals, version=last["version"], n_observations=last["n_observations"])


def _invalid_specs(space_name: str, payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose spec the study's space (known to this SDK) cannot parse, as per-item errors; nothing for a
    space only the server knows (a plugin) or for `{"code": ...}` specs, which the server judges."""
    from .spaces import SpecError, get_space

    try:
        space = get_space(space_name)
    except SpecError:
        return []
    errors = []
    for index, row in enumerate(payload):
        spec = row.get("spec")
        if isinstance(spec, dict) and "code" in spec:
            continue
        try:
            space.parse(spec)
        except (SpecError, ValueError, TypeError, KeyError) as exc:
            errors.append({"field": "spec", "index": index, "reason": str(exc)})
    return errors


_ITEM_OF_POST = re.compile(r"\bitem (\d+) of this post\b")


def _locate(exc: APIError, start: int, size: int, total: int) -> None:
    """Make a chunk's item errors point into the whole import: indices (and the "item K of this post" a
    conflict names) shifted by the chunk's start."""

    def shifted(error: dict[str, Any]) -> dict[str, Any]:
        out = {**error, "index": error["index"] + start}
        if isinstance(out.get("reason"), str):
            out["reason"] = _ITEM_OF_POST.sub(lambda m: f"item {int(m.group(1)) + start} of this import", out["reason"])
        return out

    exc.errors = [shifted(e) if isinstance(e, dict) and isinstance(e.get("index"), int) else e for e in exc.errors]
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(f"in rows {start + 1}-{start + size} of {total}; the {start} row(s) before them are committed")
