"""Where does a colecache server spend its CPU under cold /embed load? A py-spy profile, summarised.

Starts a server, drives it with N concurrent clients sending 1..64 cold NB201 specs each (as
throughput.py part a), samples the server with py-spy (every thread, native frames off), and
writes a table of where the samples fall: the model forward (torch), tokenization, HTTP/JSON and
pydantic, the cache tiers, and the rest; plus the top functions by own time.

    python benchmarks/profile_server.py --clients 32 --cells 600 --out benchmarks/results/profile_embed.md
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colecache_client.spaces import get_space
from throughput import drive, plan_requests, start_colecache, write_markdown

ROOT = Path(__file__).resolve().parents[1]
app = typer.Typer(help=__doc__)

# First matching fragment of a stack (innermost frame first) decides the group.
GROUPS = [
    ("model forward (torch)", ("torch/", "transformers/models", "backend.py:embed", "_call_impl")),
    ("tokenization", ("tokenization", "tokenizers", "backend.py:tokenize")),
    ("cache tiers (SQL / memory)", ("sqlalchemy", "sqlite3", "colecache/cache/")),
    ("HTTP, JSON, pydantic", ("uvicorn", "h11", "starlette", "fastapi", "pydantic", "json", "orjson", "httptools")),
    ("rendering, keys, parsing", ("colecache/render", "colecache/specs", "keys.py", "colecache_client/spaces")),
    ("asyncio / event loop", ("asyncio",)),
]


IDLE = ("Condition.wait", "Event.wait", "select (selectors.py", "_worker (concurrent/futures/thread.py", "Runner.run")


def classify(stack: str) -> str:
    frames = stack.split(";")[::-1]
    if any(marker in frames[0] for marker in IDLE):
        return "idle (threads waiting)"
    for frame in frames:
        for group, fragments in GROUPS:
            if any(f in frame for f in fragments):
                return group
    return "other"


@app.command()
def main(
    clients: Annotated[int, typer.Option()] = 32,
    cells: Annotated[int, typer.Option(help="Cold cells sent.")] = 600,
    out: Annotated[Path, typer.Option()] = ROOT / "benchmarks/results/profile_embed.md",
) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    workdir = Path(tempfile.mkdtemp(prefix="colecache-profile-"))
    subset = list(get_space("nb201").all_cells())
    random.Random(7).shuffle(subset)
    specs = [c.to_string() for c in subset[:cells]]
    bodies = [{"specs": specs[a:b], "encoding": "base64"} for a, b in plan_requests(len(specs), clients)]
    server = start_colecache(workdir)
    raw = workdir / "profile.txt"
    try:
        recorder = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.proc.pid), "--format", "raw", "--rate", "100", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        seconds = asyncio.run(drive(server.url, "/embed", bodies, clients))
        recorder.send_signal(2)  # SIGINT: py-spy writes the profile and exits
        recorder.wait(60)
    finally:
        server.stop()
    groups: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        groups[classify(stack)] += int(count)
        leaves[stack.split(";")[-1]] += int(count)
    idle = groups.pop("idle (threads waiting)", 0)
    for frame in [f for f in leaves if any(marker in f for marker in IDLE)]:
        del leaves[frame]
    total = sum(groups.values()) or 1
    lines = [
        "# Where a colecache server spends its CPU under cold /embed load",
        "",
        f"Command: `python benchmarks/profile_server.py --clients {clients} --cells {cells}`  ",
        f"{cells} cold cells, {clients} clients x 1..64 specs, {cells / seconds:.1f} cells/s while sampled; "
        f"py-spy at 100 Hz over every server thread: {total} busy samples ({idle} samples of threads waiting "
        "left out). torch's own threads are seen as the Python frame that called the forward.",
        "",
        "| where | share of busy samples |",
        "|---|---|",
        *[f"| {g} | {n / total:.1%} |" for g, n in groups.most_common()],
        "",
        "Top frames by own samples:",
        "",
        "| frame | share |",
        "|---|---|",
        *[f"| `{frame}` | {n / total:.1%} |" for frame, n in leaves.most_common(12)],
    ]
    write_markdown(out, lines)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    app()
