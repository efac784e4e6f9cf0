"""`colecache study report|import|export`, run as real subprocesses against a real server process."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys

import pytest
from colecache_client.spaces import get_space
from conftest import free_port

pytestmark = pytest.mark.integration

SPACE = get_space("nb201")
FAST = {"head": {"epochs": 80}}
EXPORT_HEADER = ["spec", "value", "metadata", "arch", "id", "created_at", "updated_at"]


def _study(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colecache.cli", "study", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "120", **(env or {})},
        timeout=600,
    )


def _cells(n: int, seed: int) -> list:
    rng = random.Random(seed)
    return SPACE.dedupe([SPACE.sample(rng) for _ in range(3 * n)])[:n]


def _value(cell, i: int) -> float:
    return 50.0 + 4 * cell.ops.count("nor_conv_3x3") - 3 * cell.ops.count("none") + (i % 7) / 8


def _rows(n: int = 300, seed: int = 12) -> list[tuple]:
    """(spec, value, metadata): cell strings, every tenth an op list (a JSON cell), some with a seed."""
    out = []
    for i, cell in enumerate(_cells(n, seed)):
        spec = list(cell.ops) if i % 10 == 0 else cell.to_string()
        out.append((spec, _value(cell, i), {"seed": i % 3} if i % 4 == 0 else None))
    return out


def _write(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["spec", "value", "metadata", "note"])
        for spec, value, meta in rows:
            cell = spec if isinstance(spec, str) else json.dumps(spec)
            writer.writerow([cell, repr(value), "" if meta is None else json.dumps(meta), "ignored"])


def _new_study(server, name: str) -> str:
    with server.client() as client:
        return client.post("/studies", json={"name": name, "surrogate": FAST}).json()["id"]


def _table_row(text: str, label: str) -> list[str]:
    """The cells after `label` in the rich table's row that starts with it."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no {label!r} row in:\n{text}")


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_import_is_chunked_and_idempotent_and_export_round_trips(default_server, tmp_path):
    sid = _new_study(default_server, "cli-import")
    rows = _rows()
    source = tmp_path / "obs.csv"
    _write(source, rows)
    url = ["--url", default_server.url]

    first = _study("import", sid, str(source), *url, "--chunk-size", "100")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"300 rows: 300 inserted, 0 unchanged, 0 replaced, 0 kept; study {sid} has 300 observations (version 3)"
    )
    assert first.stderr == ""  # the progress bar is drawn on a terminal only
    again = _study("import", sid, str(source), *url, "--chunk-size", "100")
    assert again.returncode == 0, again.stderr
    assert "300 rows: 0 inserted, 300 unchanged, 0 replaced, 0 kept" in again.stdout
    assert "300 observations (version 3)" in again.stdout

    exported = tmp_path / "export.csv"
    written = _study("export", sid, "-o", str(exported), *url)
    assert written.returncode == 0, written.stderr
    assert "300 observations" in written.stderr
    text = exported.read_text(encoding="utf-8")
    to_stdout = _study("export", sid, *url)
    assert to_stdout.returncode == 0 and to_stdout.stdout == text
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == EXPORT_HEADER and len(table) == 300
    got = {(r["spec"], float(r["value"]), r["metadata"]) for r in table}
    want = {
        (
            spec if isinstance(spec, str) else json.dumps(spec, separators=(",", ":")),
            value,
            "" if meta is None else json.dumps(meta, separators=(",", ":")),
        )
        for spec, value, meta in rows
    }
    assert got == want  # specs as written (op lists as compact JSON), values exact, metadata kept
    assert all(r["arch"] for r in table)

    back = _study("import", sid, str(exported), *url)  # an export imports back unchanged
    assert back.returncode == 0, back.stderr
    assert "300 rows: 0 inserted, 300 unchanged" in back.stdout

    changed = tmp_path / "changed.csv"
    _write(changed, [(spec, value + 1, meta) for spec, value, meta in rows[:5]])
    refused = _study("import", sid, str(changed), *url)
    assert refused.returncode == 1 and "409" in _one_error_line(refused)
    replaced = _study("import", sid, str(changed), *url, "--on-conflict", "replace")
    assert replaced.returncode == 0 and "0 inserted, 0 unchanged, 5 replaced, 0 kept" in replaced.stdout
    kept = _study("import", sid, str(source), *url, "--on-conflict", "keep")
    assert kept.returncode == 0 and "0 inserted, 295 unchanged, 0 replaced, 5 kept" in kept.stdout


def test_custom_columns_and_env_url(default_server, tmp_path):
    sid = _new_study(default_server, "cli-columns")
    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["arch", "acc", "run"])
        for i, cell in enumerate(_cells(12, seed=5)):
            writer.writerow([cell.to_string(), 60 + i, json.dumps({"run": i})])
    result = _study(
        "import",
        sid,
        str(path),
        "--spec-column",
        "arch",
        "--value-column",
        "acc",
        "--metadata-column",
        "run",
        env={"COLECACHE_URL": default_server.url},
    )
    assert result.returncode == 0, result.stderr
    assert "12 rows: 12 inserted" in result.stdout
    with default_server.client() as client:
        listed = client.get(f"/studies/{sid}/observations").json()["observations"]
    assert sorted(o["metadata"]["run"] for o in listed) == list(range(12))


def test_bad_csv_is_one_error_line_exit_2_and_posts_nothing(default_server, tmp_path):
    sid = _new_study(default_server, "cli-bad-csv")
    path = tmp_path / "bad.csv"
    rows = _rows(6, seed=3)
    _write(path, rows)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(repr(rows[3][1]), "n/a")  # line 5 = the 4th data row
    path.write_text("\n".join(lines) + "\n")
    url = ["--url", default_server.url]
    result = _study("import", sid, str(path), *url)
    assert result.returncode == 2
    assert "line 5: value 'n/a' is not a number" in _one_error_line(result)

    path.write_text("architecture,value\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n")
    missing = _study("import", sid, str(path), *url)
    assert missing.returncode == 2 and "no 'spec' column" in _one_error_line(missing)
    absent = _study("import", sid, str(tmp_path / "nope.csv"), *url)
    assert absent.returncode == 2 and "nope.csv" in _one_error_line(absent)
    with default_server.client() as client:
        assert client.get(f"/studies/{sid}").json()["n_observations"] == 0


def test_server_errors_are_one_line_exit_1(default_server, tmp_path):
    sid = _new_study(default_server, "cli-errors")
    path = tmp_path / "obs.csv"
    rows = _rows(150, seed=4)
    rows[120] = ("|nope~0|+|none~0|none~1|+|none~0|none~1|none~2|", 1.0, None)  # CSV line 122
    _write(path, rows)
    url = ["--url", default_server.url]

    invalid = _study("import", sid, str(path), *url, "--chunk-size", "100")
    line = _one_error_line(invalid)
    assert invalid.returncode == 1 and "422" in line and "line 122" in line and "nope" in line
    assert "nothing was posted" in line  # the SDK checks specs of the spaces it knows before posting
    with default_server.client() as client:
        assert client.get(f"/studies/{sid}").json()["n_observations"] == 0

    # A conflict inside the file (same spec, two values) names both CSV lines and the CLI's option.
    twice = _rows(3, seed=8)
    twice[2] = (twice[0][0], twice[0][1] + 1.0, twice[0][2])
    _write(path, twice)
    conflict = _one_error_line(_study("import", sid, str(path), *url))
    assert "line 4" in conflict and "line 2 has it" in conflict and "--on-conflict replace or keep" in conflict

    unknown = _study("import", "no-such-study", str(path), *url)
    assert unknown.returncode == 1 and "404" in _one_error_line(unknown)
    for command in (["report", "no-such-study"], ["export", "no-such-study"]):
        result = _study(*command, *url)
        assert result.returncode == 1 and "404" in _one_error_line(result)
    bad_window = _study("report", sid, *url, "--window", "1")
    assert bad_window.returncode == 2 and "Traceback" not in bad_window.stderr

    down = f"http://127.0.0.1:{free_port()}"
    for command in (["report", sid], ["export", sid], ["import", sid, str(path)]):
        result = _study(*command, "--url", down)
        assert result.returncode == 1, result.stderr
        assert "could not talk to the colecache server" in _one_error_line(result)


def test_report_prints_the_figures_and_writes_plots(default_server, tmp_path):
    sid = _new_study(default_server, "cli-report")
    cells = _cells(50, seed=9)
    with default_server.client() as client:

        def observe(batch):
            body = {"observations": [{"spec": c.to_string(), "value": _value(c, i)} for i, c in enumerate(batch)]}
            assert client.post(f"/studies/{sid}/observations", json=body).status_code == 200

        def predict(batch):
            body = {"specs": [c.to_string() for c in batch]}
            assert client.post(f"/studies/{sid}/predict", json=body).status_code == 200

        observe(cells[:20])
        for start in (20, 30, 40):  # predicted first, observed after: 30 out-of-sample pairs
            predict(cells[start : start + 10])
            observe(cells[start : start + 10])
    url = ["--url", default_server.url]

    result = _study("report", sid, *url, "--window", "10")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for label in (
        "Kendall tau",
        "Spearman rho",
        "MAE (accuracy)",
        "bias (predicted - observed)",
        "within ±1 std (vs 68%)",
        "within ±2 std (vs 95%)",
    ):
        assert label in out
    assert "recent (last 10)" in out and "online (all pairs)" in out
    assert _table_row(out, "pairs") == ["30", "10"]
    with default_server.client() as client:
        body = client.get(f"/studies/{sid}/report", params={"window": 10}).json()
    best = body["best"]
    assert "observations: 50" in out
    assert f"best: {best['value']:.6g} at evaluation {best['index']}" in out

    pytest.importorskip("colecache.report.plots")
    pytest.importorskip("matplotlib")
    svg = tmp_path / "out.svg"
    plotted = _study("report", sid, *url, "--plots", str(svg))
    assert plotted.returncode == 0, plotted.stderr
    assert svg.exists() and "<svg" in svg.read_text()[:2000]
    wrong = _study("report", sid, *url, "--plots", str(tmp_path / "out.txt"))
    assert wrong.returncode == 2 and ".svg" in _one_error_line(wrong)
