"""Server-rendered report pages: Jinja2 templates (autoescaped) around the plots' inline SVG. No
JavaScript and no build step: the page is the report, drawn on the server."""

from __future__ import annotations

from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape

from . import plots


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("colecache.report", "templates"), autoescape=select_autoescape(["html"]))
    env.globals["num"] = lambda value, digits=3: "–" if value is None else f"{value:.{digits}f}"
    env.globals["val"] = lambda value: "–" if value is None else f"{value:.6g}"
    env.globals["pct"] = lambda value: "–" if value is None else f"{value:.0%}"
    return env


def studies_page(studies: list[dict], logout: bool) -> str:
    """`studies`: dicts with id, name, space, objective, direction, n_observations, best, created_at."""
    return _environment().get_template("studies.html").render(studies=studies, logout=logout)


def report_page(report: dict, logout: bool) -> str:
    """The report JSON (GET /studies/{id}/report) as a page: figures table and four inline SVG plots."""
    svgs = [(name, plots.panel_svg(name, report)) for name in plots.PANELS]
    return _environment().get_template("report.html").render(r=report, plots=svgs, logout=logout)


def login_page(next_path: str, error: str | None = None) -> str:
    return _environment().get_template("login.html").render(next=next_path, error=error, logout=False)


def not_found_page(message: str, logout: bool) -> str:
    return _environment().get_template("not_found.html").render(message=message, logout=logout)
