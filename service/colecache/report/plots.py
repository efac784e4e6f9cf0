"""Plots of a study report (the JSON of `GET /studies/{id}/report`), drawn with matplotlib, no pyplot.

Each panel is drawn on a given Axes, so the report page gets one SVG per panel and the CLI one
figure with all four. Only matplotlib's object API is used (no global pyplot state), so request
threads can draw at once.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller SVGs, selectable in the page
matplotlib.rcParams["svg.hashsalt"] = "colecache"  # stable element ids: the same report, the same SVG

EMPTY = "no pairs yet: a prediction is paired when its architecture is observed"
MAX_POINTS = 5000  # dots drawn per panel; more are thinned evenly (the curves use every point)


def _plain(text: str) -> str:
    """User text (a study's name or objective) as literal text: `$` would start matplotlib mathtext."""
    return str(text).replace("$", r"\$")


def _thin(items: list) -> list:
    step = -(-len(items) // MAX_POINTS)
    return items[::step] if step > 1 else items


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, color="0.4", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def best_so_far(ax: Axes, report: dict) -> None:
    """Every observed value (dots) and the best so far (steps) against the evaluation index."""
    points = report["best_so_far"]
    ax.set_title("Best so far")
    if not points:
        _empty(ax, "no observations yet")
        return
    index = [p["index"] for p in points]
    dots = _thin(points)
    ax.scatter([p["index"] for p in dots], [p["value"] for p in dots], s=8, color="0.65", label="observed")
    ax.step(index, [p["best"] for p in points], where="post", color="C0", linewidth=2, label="best so far")
    ax.set_xlabel("evaluation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_plain(report.get("objective", "value")))
    ax.legend(loc="lower right" if report.get("direction") == "maximize" else "upper right", fontsize=8)


def predicted_vs_observed(ax: Axes, report: dict) -> None:
    """Predicted mean (+- 1 std) against the value later observed, coloured by evaluation index."""
    pairs = report["pairs"]
    ax.set_title(f"Predicted vs observed ({len(pairs)} pairs)")
    if not pairs:
        _empty(ax, EMPTY)
        return
    pairs = _thin(pairs)
    mean = [p["mean"] for p in pairs]
    value = [p["value"] for p in pairs]
    ax.errorbar(value, mean, yerr=[p["std"] for p in pairs], fmt="none", ecolor="0.8", elinewidth=0.8, zorder=1)
    dots = ax.scatter(value, mean, c=[p["index"] for p in pairs], cmap="viridis", s=14, zorder=2)
    low, high = min(*mean, *value), max(*mean, *value)
    ax.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=0.8, label="y = x")
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted mean")
    ax.figure.colorbar(dots, ax=ax, label="evaluation", ticks=MaxNLocator(integer=True))
    ax.legend(loc="upper left", fontsize=8)


def tau_over_time(ax: Axes, report: dict) -> None:
    """Kendall tau over every pair so far and over the latest window, against the evaluation index."""
    curve = [p for p in report["tau_over_time"] if p["kendall_tau"] is not None or p["window_tau"] is not None]
    ax.set_title("Kendall tau over time")
    if not curve:
        _empty(ax, EMPTY)
        return
    index = [p["index"] for p in curve]
    ax.plot(index, [p["kendall_tau"] for p in curve], color="C0", label="all pairs so far")
    window = report.get("recent", {}).get("window")
    ax.plot(index, [p["window_tau"] for p in curve], color="C1", alpha=0.8, label=f"latest {window} pairs")
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("evaluation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Kendall tau")
    ax.legend(loc="lower right", fontsize=8)


def calibration(ax: Axes, report: dict) -> None:
    """Share of observations inside mean +- 1 and +- 2 std, next to what a calibrated Gaussian gives."""
    figures = report["online"]["calibration"]
    ax.set_title(f"Calibration ({figures['n']} pairs)")
    if not figures["n"]:
        _empty(ax, EMPTY)
        return
    labels = ["within 1 std", "within 2 std"]
    observed = [figures["within_1std"], figures["within_2std"]]
    expected = [figures["expected_1std"], figures["expected_2std"]]
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], observed, width=0.4, color="C0", label="observed")
    ax.bar([i + 0.2 for i in x], expected, width=0.4, color="0.75", label="calibrated (Gaussian)")
    for i, share in enumerate(observed):
        ax.text(i - 0.2, share + 0.02, f"{share:.0%}", ha="center", fontsize=8)
    ax.set_xticks(list(x), labels)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share of observations")
    ax.legend(loc="upper left", fontsize=8)


PANELS: dict[str, Callable[[Axes, dict], None]] = {
    "best_so_far": best_so_far,
    "predicted_vs_observed": predicted_vs_observed,
    "tau_over_time": tau_over_time,
    "calibration": calibration,
}


def panel_svg(name: str, report: dict, size: tuple[float, float] = (5.4, 3.6)) -> str:
    """One panel as an SVG document (text, no XML prolog, so it can sit inline in HTML)."""
    figure = Figure(figsize=size, layout="constrained")
    PANELS[name](figure.add_subplot(), report)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return _own_ids(text[text.index("<svg") :], name)


def _own_ids(svg: str, prefix: str) -> str:
    """Prefix every element id (and each reference to it) so several panels can share one HTML page:
    matplotlib numbers clip paths and glyphs the same way in every figure it draws."""
    for element_id in set(re.findall(r'\bid="([^"]+)"', svg)):
        svg = (
            svg.replace(f'id="{element_id}"', f'id="{prefix}-{element_id}"')
            .replace(f"url(#{element_id})", f"url(#{prefix}-{element_id})")
            .replace(f'href="#{element_id}"', f'href="#{prefix}-{element_id}"')
        )
    return svg


def report_figure(report: dict) -> Figure:
    """All four panels in one 2 x 2 figure, titled with the study's name."""
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    title = f"{report.get('name', '')} ({report.get('space', '')}, {report.get('objective', '')})"
    figure.suptitle(_plain(title))
    for ax, draw in zip(figure.subplots(2, 2).flat, PANELS.values()):
        draw(ax, report)
    return figure


def save_report_plots(report: dict, path: Path) -> Path:
    """Write the four panels to `path`; the format follows the suffix (.svg, .png, .pdf).

    Raises ValueError for a suffix matplotlib cannot write."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in Figure().canvas.get_supported_filetypes():
        raise ValueError(f"cannot write plots as {path.suffix or 'a file without suffix'}: use .svg, .png or .pdf")
    report_figure(report).savefig(path, dpi=120, metadata={"Date": None} if suffix in {"svg", "pdf"} else None)
    return path
