"""Report pages for people: `/ui` lists the caller's studies, `/ui/studies/{id}` shows one study's
report (figures and plots), `/ui/login` turns an API key into a cookie. Not part of the JSON API
(hidden from OpenAPI). A browser asking for `GET /studies/{id}` (Accept: text/html) is sent here."""

from __future__ import annotations

import hmac
import re
from typing import Annotated
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ...report import pages
from ...studies.service import StudyService
from ..auth import KEY_COOKIE, UI_PREFIX, key_identity
from ..deps import get_owner, get_studies
from ..errors import ApiError
from .studies import list_observations, load_study, study_report, utc_iso

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)

STUDY_PATH = re.compile(r"^/studies/([0-9A-Za-z]{1,64})/?$")
MAX_FORM_BYTES = 8192
COOKIE_MAX_AGE_S = 7 * 24 * 3600


def _keys_required(request: Request) -> bool:
    return bool(request.app.state.services.settings.api_key_list())


def _safe_next(value: str | None) -> str:
    """Only a page of this UI: never an absolute URL or another host (no open redirect)."""
    if value and value.startswith(UI_PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return UI_PREFIX


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    # The pages embed nothing from elsewhere and run no script.
    headers = {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(text, status_code=status_code, headers=headers)


@router.get("", response_class=HTMLResponse)
async def studies_list(
    request: Request,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    def rows() -> list[dict]:
        out = []
        for study in studies.repo.list(owner):
            best = studies.repo.best(study.id, study.direction)
            out.append(
                {
                    "id": study.id,
                    "name": study.name,
                    "space": study.space,
                    "objective": study.objective,
                    "direction": study.direction,
                    "n_observations": studies.repo.count(study.id),
                    "best": None if best is None else best.value,
                    "created_at": (utc_iso(study.created_at) or "")[:16].replace("T", " ") + " UTC",
                }
            )
        return out

    return _html(pages.studies_page(await anyio.to_thread.run_sync(rows), logout=_keys_required(request)))


@router.get("/studies/{study_id}", response_class=HTMLResponse)
async def study_page(
    study_id: str,
    request: Request,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
    window: Annotated[int, Query(ge=3, le=100_000)] = 50,
):
    logout = _keys_required(request)
    try:
        study = await load_study(study_id, owner, studies)
    except ApiError as exc:  # a page, not JSON, for a study that is not there (or not this key's)
        if exc.status != 404:
            raise
        return _html(pages.not_found_page(f"No study {study_id!r} here.", logout), status_code=404)
    report = await studies.report(study, window=window)
    return _html(await anyio.to_thread.run_sync(pages.report_page, report, logout))


@router.get("/studies/{study_id}/observations.csv")
async def study_csv(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
):
    """The page's CSV link: the same CSV as `GET /studies/{id}/observations?format=csv`, opened by the cookie."""
    return await list_observations(study_id, owner, studies, limit=None, offset=0, format="csv")


@router.get("/studies/{study_id}/report.json")
async def study_json(
    study_id: str,
    owner: Annotated[str | None, Depends(get_owner)],
    studies: Annotated[StudyService, Depends(get_studies)],
    window: Annotated[int, Query(ge=3, le=100_000)] = 50,
):
    """The page's JSON link: `GET /studies/{id}/report`, opened by the cookie."""
    return await study_report(study_id, owner, studies, window=window)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None):
    if not _keys_required(request):
        return RedirectResponse(_safe_next(next), status_code=303)
    return _html(pages.login_page(_safe_next(next)))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request):
    """Form post of `key` (and `next`): a valid key becomes an HttpOnly cookie scoped to /ui."""
    body = await request.body()
    form = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or [None])[0])
    identities = [key_identity(k) for k in request.app.state.services.settings.api_key_list()]
    candidate = key_identity(key)
    if not key or not any([hmac.compare_digest(candidate, identity) for identity in identities]):
        return _html(pages.login_page(target, "That key is not valid for this server."), status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        key,
        max_age=COOKIE_MAX_AGE_S,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.api_route("/logout", methods=["GET", "POST"])
async def logout():
    response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path=UI_PREFIX)
    return response


class StudyPageRedirect:
    """`GET /studies/{id}` (and `GET /`) from a browser (Accept names text/html) goes to the study's report
    page (the study list); API clients (Accept: application/json or */*) get what they got before. Runs
    before auth: a browser has no bearer header, and the pages have their own login."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            match = STUDY_PATH.match(scope["path"])
            target = f"{UI_PREFIX}/studies/{match.group(1)}" if match else UI_PREFIX if scope["path"] == "/" else None
            if target is not None:
                accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
                if "text/html" in accept:
                    response = RedirectResponse(target, status_code=303)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
