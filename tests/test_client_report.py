"""The SDK's study report, CSV export and CSV import, against a scripted server (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import re

import httpx
import pytest
from colecache_client import (
    AsyncClient,
    Client,
    Conflict,
    NotFound,
    Observation,
    StudyInfo,
    StudyReport,
    ValidationError,
    read_observations_csv,
    write_observations_csv,
)
from colecache_client.client import Study
from colecache_client.spaces import get_space

SPACE = get_space("nb201")
EXPORT_COLUMNS = ["spec", "value", "metadata", "arch", "id", "created_at", "updated_at"]

REPORT = {
    "study_id": "s1",
    "name": "c100",
    "space": "nb201",
    "objective": "test_acc",
    "direction": "maximize",
    "version": 7,
    "n_observations": 5,
    "best": {"value": 73.5, "index": 4, "arch": "|a~0|"},
    "online": {
        "n_pairs": 3,
        "kendall_tau": 0.333,
        "spearman_rho": 0.5,
        "mae": 1.25,
        "bias": 0.75,
        "calibration": {
            "n": 3,
            "within_1std": 0.6667,
            "within_2std": 1.0,
            "expected_1std": 0.6827,
            "expected_2std": 0.9545,
        },
    },
    "recent": {
        "n_pairs": 2,
        "kendall_tau": None,
        "spearman_rho": None,
        "mae": 0.5,
        "calibration": {"n": 2, "within_1std": None, "within_2std": None, "expected_1std": 0.6827},
        "window": 2,
    },
    "best_so_far": [{"index": i, "value": v, "best": b} for i, v, b in [(1, 70, 70), (2, 71, 71), (3, 69, 71)]],
    "pairs": [
        {"index": 3, "arch": "|a~0|", "mean": 70.0, "std": 1.0, "value": 69.0, "surrogate_version": 2, "n_train": 2}
    ],
    "tau_over_time": [{"index": 3, "n_pairs": 1, "kendall_tau": None, "window_tau": None}],
}


class FakeServer:
    """Enough of the studies API to exercise the client: idempotent observations keyed by (spec, metadata)."""

    def __init__(self, limit: int = 1024, fail_post: dict[int, httpx.Response] | None = None):
        self.limit = limit
        self.rows: dict[tuple[str, str], dict] = {}
        self.version = 0
        self.requests: list[httpx.Request] = []
        self.posts: list[list[dict]] = []
        self.fail_post = fail_post or {}  # post number (0-based) -> the response to give instead

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, params = request.url.path, request.url.params
        if path == "/info":
            return httpx.Response(200, json={"limits": {"max_items_per_request": self.limit}})
        if not path.startswith("/studies/s1"):
            return httpx.Response(404, json={"detail": f"study {path.split('/')[2]} not found"})
        if path == "/studies/s1":
            return httpx.Response(200, json=self.info())
        if path == "/studies/s1/report":
            return httpx.Response(200, json={**REPORT, "recent": {**REPORT["recent"], "window": int(params["window"])}})
        if path == "/studies/s1/observations" and request.method == "POST":
            return self.post(json.loads(request.content))
        if path == "/studies/s1/observations" and params.get("format") == "csv":
            return httpx.Response(200, text=self.csv(), headers={"content-type": "text/csv; charset=utf-8"})
        return httpx.Response(405, json={"detail": "not scripted"})

    def info(self) -> dict:
        return {
            "id": "s1",
            "name": "c100",
            "space": "nb201",
            "objective": "acc",
            "direction": "maximize",
            "version": self.version,
            "n_observations": len(self.rows),
        }

    def post(self, body: dict) -> httpx.Response:
        number = len(self.posts)
        self.posts.append(body["observations"])
        if number in self.fail_post:
            return self.fail_post[number]
        counts = {"inserted": 0, "unchanged": 0, "replaced": 0, "kept": 0}
        for item in body["observations"]:
            key = (json.dumps(item["spec"]), json.dumps(item.get("metadata"), sort_keys=True))
            old = self.rows.get(key)
            if old is None:
                counts["inserted"] += 1
                self.rows[key] = dict(item)
            elif old["value"] == item["value"]:
                counts["unchanged"] += 1
            elif body["on_conflict"] == "replace":
                counts["replaced"] += 1
                self.rows[key] = dict(item)
            else:
                counts["kept"] += 1
        if counts["inserted"] or counts["replaced"]:
            self.version += 1
        return httpx.Response(200, json={**counts, "version": self.version, "n_observations": len(self.rows)})

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for n, row in enumerate(self.rows.values(), start=1):
            spec = row["spec"] if isinstance(row["spec"], str) else json.dumps(row["spec"], separators=(",", ":"))
            meta = "" if row.get("metadata") is None else json.dumps(row["metadata"], separators=(",", ":"))
            writer.writerow([spec, repr(row["value"]), meta, "", n, "2024-01-01T00:00:00", "2024-01-01T00:00:00"])
        return out.getvalue()


def _client(server, **kwargs) -> Client:
    return Client("http://test", transport=httpx.MockTransport(server), backoff=0.001, **kwargs)


def _cells(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        cell = SPACE.to_string(SPACE.sample(rng))
        if cell not in out:
            out.append(cell)
    return out


def _write(path, rows: list[list], header=("spec", "value", "metadata")) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


# --- report -----------------------------------------------------------------------------------------
def test_report_is_parsed_into_typed_figures_and_keeps_the_raw_json():
    server = FakeServer()
    report = _client(server).report("s1", window=2)
    assert isinstance(report, StudyReport)
    assert server.requests[-1].url.params["window"] == "2"
    assert (report.study_id, report.name, report.direction, report.version, report.n_observations) == (
        "s1",
        "c100",
        "maximize",
        7,
        5,
    )
    assert report.best.value == 73.5 and report.best.index == 4 and report.best.arch == "|a~0|"
    assert report.online.n_pairs == 3 and report.online.kendall_tau == 0.333 and report.online.window is None
    assert report.online.bias == 0.75 and report.recent.bias is None  # absent: None
    assert report.online.calibration.within_1std == 0.6667 and report.online.calibration.expected_2std == 0.9545
    assert report.recent.window == 2 and report.recent.kendall_tau is None and report.recent.mae == 0.5
    assert report.recent.calibration.within_2std is None and report.recent.calibration.expected_2std == 0.9545
    assert [row["best"] for row in report.best_so_far] == [70, 71, 71]
    assert report.pairs[0]["surrogate_version"] == 2 and report.tau_over_time[0]["n_pairs"] == 1
    assert report.raw["online"]["mae"] == 1.25 and report.raw["study_id"] == "s1"


def test_report_of_a_study_without_observations_has_no_best():
    body = {**REPORT, "best": None, "best_so_far": [], "pairs": [], "tau_over_time": []}
    report = StudyReport.from_json(body)
    assert report.best is None and report.pairs == [] and report.raw is body


def test_study_handle_report_and_unknown_study():
    server = FakeServer()
    client = _client(server)
    study = Study(client, StudyInfo.from_json(server.info()))
    assert study.report(window=10).recent.window == 10
    with pytest.raises(NotFound, match="study nope not found"):
        client.report("nope")


# --- export -------------------------------------------------------------------------------------------
def test_export_returns_the_csv_text_and_writes_it_unchanged(tmp_path):
    server = FakeServer()
    client = _client(server)
    client.observe("s1", [(c, 70.0 + i / 3) for i, c in enumerate(_cells(3))])
    text = client.export_csv("s1")
    assert server.requests[-1].url.params["format"] == "csv"
    assert text == server.csv() and text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    target = tmp_path / "out.csv"
    assert client.export_csv("s1", target) == text
    assert target.read_bytes() == text.encode()  # byte for byte: no newline translation
    with pytest.raises(NotFound):  # an error body is still decoded as the typed error
        client.export_csv("nope")


def test_export_then_read_round_trips_exactly(tmp_path):
    server = FakeServer()
    client = _client(server)
    rows = [
        Observation(_cells(1)[0], 0.1 + 0.2, {"seed": 1, "note": 'a,b "quoted"\nline'}),
        Observation([3, 3, 4, 1, 3, 1], 1e-300, None),
        Observation({"code": "import torch\nclass Net: pass"}, -12.5, {}),
    ]
    client.observe("s1", rows)
    back = read_observations_csv(io.StringIO(client.export_csv("s1")))
    assert back == [Observation(o.spec, o.value, o.metadata) for o in rows]
    assert back[0].value == 0.1 + 0.2  # repr round-trips the float exactly
    # and imported again into the same study: nothing changes
    client.export_csv("s1", tmp_path / "again.csv")
    written = client.import_csv("s1", tmp_path / "again.csv")
    assert (written.inserted, written.unchanged) == (0, 3)


# --- import -------------------------------------------------------------------------------------------
def test_import_posts_in_chunks_reports_progress_and_sums_the_counts(tmp_path):
    server = FakeServer()
    cells = _cells(250)
    path = tmp_path / "obs.csv"
    _write(path, [[c, 50 + i % 17, json.dumps({"seed": i % 2})] for i, c in enumerate(cells)])
    seen: list[tuple[int, int]] = []
    client = _client(server)
    written = client.import_csv("s1", path, chunk_size=100, progress=lambda done, total: seen.append((done, total)))
    assert [len(p) for p in server.posts] == [100, 100, 50]
    assert seen == [(100, 250), (200, 250), (250, 250)]
    assert (written.inserted, written.unchanged, written.replaced, written.kept) == (250, 0, 0, 0)
    assert written.n_observations == 250 and written.version == 3
    assert server.posts[0][1] == {"spec": cells[1], "value": 51.0, "metadata": {"seed": 1}}
    again = client.import_csv("s1", path, chunk_size=100)
    assert (again.inserted, again.unchanged, again.n_observations, again.version) == (0, 250, 250, 3)


def test_import_chunks_stay_under_the_server_limit_and_pass_on_conflict(tmp_path):
    server = FakeServer(limit=64)
    path = tmp_path / "obs.csv"
    cells = _cells(130)
    _write(path, [[c, 1.0] for c in cells], header=("spec", "value"))
    client = _client(server)
    client.import_csv("s1", path)  # default chunk_size 500 > the server's 64
    assert [len(p) for p in server.posts] == [64, 64, 2]
    _write(path, [[c, 2.0] for c in cells[:3]], header=("spec", "value"))
    written = client.import_csv("s1", path, on_conflict="replace")
    assert written.replaced == 3 and json.loads(server.requests[-1].content)["on_conflict"] == "replace"


def test_import_error_names_rows_of_the_whole_import(tmp_path):
    item_error = httpx.Response(
        422, json={"detail": "1 invalid spec(s): item 3: bad op", "errors": [{"index": 3, "reason": "bad op"}]}
    )
    server = FakeServer(fail_post={1: item_error})
    path = tmp_path / "obs.csv"
    _write(path, [[c, 1.0, ""] for c in _cells(25)])
    seen: list[tuple[int, int]] = []
    with pytest.raises(ValidationError) as info:
        _client(server).import_csv("s1", path, chunk_size=10, progress=lambda d, t: seen.append((d, t)))
    assert info.value.errors == [{"index": 13, "reason": "bad op"}]  # row 13 of the import, not item 3 of chunk 2
    assert seen == [(10, 25)] and len(server.posts) == 2  # the first chunk is committed; nothing after the error
    if hasattr(info.value, "__notes__"):
        assert "rows 11-20 of 25" in info.value.__notes__[0]


def test_import_conflict_is_not_retried_and_stays_typed(tmp_path):
    conflict = httpx.Response(409, json={"detail": "conflict; nothing was stored", "errors": [{"index": 0}]})
    server = FakeServer(fail_post={0: conflict})
    path = tmp_path / "obs.csv"
    _write(path, [[c, 1.0, ""] for c in _cells(3)])
    with pytest.raises(Conflict):
        _client(server).import_csv("s1", path)
    assert len(server.posts) == 1


def test_import_of_a_header_only_file_posts_nothing(tmp_path):
    server = FakeServer()
    path = tmp_path / "empty.csv"
    _write(path, [])
    written = _client(server).import_csv("s1", path)
    assert written.inserted == 0 and written.n_observations == 0 and server.posts == []
    with pytest.raises(NotFound):  # the study is still checked
        _client(server).import_csv("nope", path)


def test_import_refuses_a_bad_chunk_size_and_a_bad_file_before_posting(tmp_path):
    server = FakeServer()
    path = tmp_path / "obs.csv"
    _write(path, [[_cells(1)[0], 1.0, ""], ["|x~0|", "oops", ""]])
    with pytest.raises(ValueError, match="line 3: value 'oops' is not a number"):
        _client(server).import_csv("s1", path)
    _write(path, [[_cells(1)[0], 1.0, ""]])
    with pytest.raises(ValueError, match="chunk_size"):
        _client(server).import_csv("s1", path, chunk_size=0)
    assert server.posts == []


def test_async_client_report_export_import(tmp_path):
    server = FakeServer()
    path = tmp_path / "obs.csv"
    _write(path, [[c, float(i)] for i, c in enumerate(_cells(30))], header=("spec", "value"))
    seen: list[int] = []

    async def main():
        async with AsyncClient("http://test", transport=httpx.MockTransport(server), backoff=0.001) as client:
            written = await client.import_csv("s1", path, chunk_size=12, progress=lambda d, t: seen.append(d))
            report = await client.report("s1", window=5)
            text = await client.export_csv("s1", tmp_path / "out.csv")
            with pytest.raises(NotFound):
                await client.report("nope")
            return written, report, text

    written, report, text = asyncio.run(main())
    assert written.inserted == 30 and seen == [12, 24, 30]
    assert report.recent.window == 5
    assert (tmp_path / "out.csv").read_bytes() == text.encode() and len(read_observations_csv(io.StringIO(text))) == 30


# --- the CSV reader -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "line 1: no header row"),
        ("arch,value\n|a~0|,1\n", "line 1: no 'spec' column"),
        ("spec,score\n|a~0|,1\n", "line 1: no 'value' column"),
        ("spec,value\n|a~0|,1\n|b~0|,abc\n", "line 3: value 'abc' is not a number"),
        ("spec,value\n|a~0|,nan\n", "line 2: value 'nan' is not a finite number"),
        ("spec,value\n|a~0|,\n", "line 2: the 'value' cell is empty"),
        ("spec,value\n,1\n", "line 2: the 'spec' cell is empty"),
        ("spec,value,metadata\n|a~0|,1\n", None),  # a short row: metadata simply absent
        ("spec,value\n|a~0|\n", "line 2: too few cells"),
        ('spec,value,metadata\n|a~0|,1,"[1, 2]"\n', "line 2: metadata must be a JSON object, not list"),
        ("spec,value,metadata\n|a~0|,1,{seed: 1}\n", "line 2: metadata is not valid JSON"),
        ('spec,value\n"[3,3,4,1,3",1\n', "line 2: spec starts with '[' but is not valid JSON"),
        ("spec,value\n\n\n|a~0|,1\n{oops,2\n", "line 5: spec starts with '{' but is not valid JSON"),
    ],
)
def test_reader_errors_name_the_line_and_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    if message is None:
        assert read_observations_csv(path) == [Observation("|a~0|", 1.0)]
        return
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        read_observations_csv(path)
    assert str(info.value).startswith(f"{path}: line ")


def test_reader_json_spec_cells_and_plain_strings():
    text = (
        "spec,value,metadata,other\n"
        '"[3,3,4,1,3,1]",1.5,,x\n'
        '"{""matrix"": [[0, 1], [0, 0]], ""ops"": [""input"", ""output""]}",2,"{""seed"": 3}",y\n'
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,3,,z\n"
        "\"Genotype(normal=[('sep_conv_3x3', 0)])\",4,,\n"
    )
    rows = read_observations_csv(io.StringIO(text))
    assert rows[0] == Observation([3, 3, 4, 1, 3, 1], 1.5)
    assert rows[1] == Observation({"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]}, 2.0, {"seed": 3})
    assert rows[2].spec.startswith("|nor_conv_3x3~0|") and rows[2].metadata is None
    assert rows[3].spec == "Genotype(normal=[('sep_conv_3x3', 0)])"


def test_reader_custom_columns_bom_and_quoted_multiline_cells(tmp_path):
    path = tmp_path / "custom.csv"
    path.write_bytes('\ufeffarch_text,acc,run\r\n|a~0|,71.25,"{""note"":\r\n ""two lines""}"\r\n|b~0|,x,\r\n'.encode())
    with pytest.raises(ValueError, match="line 4: value 'x'"):  # the row after a two-line cell
        read_observations_csv(path, spec_column="arch_text", value_column="acc", metadata_column="run")
    path.write_bytes('\ufeffarch_text,acc,run\r\n|a~0|,71.25,"{""seed"": 1}"\r\n'.encode())
    rows = read_observations_csv(path, spec_column="arch_text", value_column="acc", metadata_column="run")
    assert rows == [Observation("|a~0|", 71.25, {"seed": 1})]
    assert (
        read_observations_csv(path, spec_column="arch_text", value_column="acc", metadata_column=None)[0].metadata
        is None
    )


def test_writer_and_reader_round_trip(tmp_path):
    rows = [
        Observation("|a~0|", 1 / 3, {"seed": 1}),
        Observation([1, 2, 3], -0.0),
        ("|b~0|", 2.5, {"k": [1, 2]}),
        {"spec": {"code": "x = 1"}, "value": 7},
    ]
    path = tmp_path / "w.csv"
    assert write_observations_csv(path, rows) == 4
    assert read_observations_csv(path) == [
        Observation("|a~0|", 1 / 3, {"seed": 1}),
        Observation([1, 2, 3], -0.0),
        Observation("|b~0|", 2.5, {"k": [1, 2]}),
        Observation({"code": "x = 1"}, 7.0),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "[not json",
        ' {"a string"',
        '"quoted"',
        [3, 3, 4],
        {"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]},
    ],
)
def test_every_spec_cell_reads_back_to_the_exact_spec(spec):
    from colecache_client.csvio import format_spec_cell, parse_spec_cell

    assert parse_spec_cell(format_spec_cell(spec)) == spec


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('spec,value,metadata\n|a|,1,"{""a"": NaN}"\n', "line 2: metadata is not valid JSON (NaN is not a JSON number"),
        ('spec,value\n"[3, Infinity]",1\n', "line 2: spec starts with '[' but is not valid JSON"),
        ("spec,value\n|a|,1,extra\n", "line 2: 3 cells, but the header has 2 columns"),
    ],
)
def test_csv_rows_the_server_could_not_take_are_refused_by_line(tmp_path, text, reason):
    from colecache_client.csvio import read_observations_csv

    path = tmp_path / "obs.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(reason)):
        read_observations_csv(path)


def test_observe_misuse_is_a_clear_error_before_any_request():
    from colecache_client import Client

    def refuse(request):
        raise AssertionError(f"no request expected, got {request.url}")

    with Client("http://x", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(TypeError, match="wrap a single one in a list"):
            client.observe("s1", "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
        with pytest.raises(ValueError, match="on_conflict must be one of"):
            client.observe("s1", [("|a|", 1.0)], on_conflict="overwrite")
