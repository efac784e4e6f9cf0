"""Throughput and latency of colecache against the raw model forward and infinity-emb, in one run.

    python benchmarks/throughput.py --out benchmarks/results/throughput.md
    python benchmarks/throughput.py --quick            # small sizes, to check the harness

Measured (same machine, same run, same model weights, same code texts, max 512 tokens, fp32):
  a. cold embedding throughput over HTTP, 1 / 8 / 32 concurrent clients sending 1..64 specs each,
     vs the raw in-process batched forward (transformers, batch 32, length-sorted) and infinity-emb;
  b. cached latency: one cached spec vs the server's no-op route (GET /health), and 1,000 cached specs;
  c. /predict on 1,000 cached candidates vs the surrogate's own forward (features + head);
  d. `colecache precompute --canonical` of the whole NB201 space vs the raw forward on the same 6,466
     distinct texts.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer
from colecache.embedding.backend import resolve_model_ref
from colecache.render import RenderOptions, render
from colecache.settings import BUNDLED_MODEL
from colecache.specs import ArchSpec
from colecache_client.spaces import get_space

app = typer.Typer(help=__doc__)
SPACE = get_space("nb201")
ROOT = Path(__file__).resolve().parents[1]
INFINITY = Path(os.environ.get("INFINITY_BIN", "/work/infinity-venv/bin/infinity_emb"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_markdown(out: Path, lines: list[str]) -> None:
    """Write a result table (creating its folder) and say where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    log(f"wrote {out}")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# --- raw model forward ------------------------------------------------------------------------
def raw_throughput(texts: list[str], batch_size: int = 32, max_length: int = 512) -> float:
    """Plain transformers: length-sorted batches, padded forward, masked mean. Cells per second."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_ref(BUNDLED_MODEL).source
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            _ = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return len(texts) / (time.perf_counter() - started)


def raw_onnx_throughput(texts: list[str], workdir: Path, quantize: str = "none", batch_size: int = 32) -> float:
    """Our exported ONNX model in a bare onnxruntime session (the same file COLECACHE_BACKEND=onnx runs):
    length-sorted batches, padded forward, masked mean of the last layer. Cells per second."""
    from colecache.embedding.onnx import OnnxBackend, output_name
    from colecache.settings import Settings

    (backend,) = OnnxBackend.load_replicas(
        Settings(backend="onnx", onnx_quantize=quantize, data_dir=workdir / "onnx-export", device="cpu")
    )
    tokenizer, session = backend.tokenizer, backend.session
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = [texts[i] for i in order[start : start + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=512, return_tensors="np")
        feeds = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "position_ids" in backend.inputs:
            feeds["position_ids"] = np.maximum(enc["attention_mask"].cumsum(1) - 1, 0)
        hidden = session.run([output_name(backend.identity.num_hidden_states - 1)], feeds)[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        _ = (hidden * mask).sum(1) / mask.sum(1)
    return len(texts) / (time.perf_counter() - started)


@lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_ref(BUNDLED_MODEL).source)


def token_counts(texts: list[str]) -> list[int]:
    return [min(len(ids), 512) for ids in _tokenizer()(texts)["input_ids"]]


def raw_padding(counts: list[int], batch_size: int = 32) -> float:
    """Real / padded tokens of the raw forward's length-sorted batches of 32."""
    counts = sorted(counts)
    padded = sum(len(b) * max(b) for b in (counts[i : i + batch_size] for i in range(0, len(counts), batch_size)))
    return sum(counts) / padded


def forward_stats(url: str) -> dict[str, float]:
    """Model forward seconds, forwards and padded tokens so far, from the server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=30).text
    wanted = {
        "colecache_model_forward_seconds_sum": "seconds",
        "colecache_model_forward_seconds_count": "batches",
        "colecache_batch_tokens_sum": "padded_tokens",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


# --- servers ------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_until(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def start_colecache(workdir: Path, **env: str) -> Server:
    port = free_port()
    log_path = workdir / f"colecache-{port}.log"
    settings = {
        "COLECACHE_DATA_DIR": str(workdir / "data"),
        "COLECACHE_PORT": str(port),
        "COLECACHE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "colecache.cli", "serve"],
        env={**os.environ, **settings, **env},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(url + "/ready", proc, log_path)
    return Server("colecache", url, proc, log_path)


def infinity_model_dir(workdir: Path) -> Path:
    """The bundled MiniLM, with sentence-transformers' own 256-token cap raised to our 512."""
    target = workdir / "minilm-512"
    if not target.exists():
        shutil.copytree(resolve_model_ref(BUNDLED_MODEL).source, target)
        config = json.loads((target / "sentence_bert_config.json").read_text())
        config["max_seq_length"] = 512
        (target / "sentence_bert_config.json").write_text(json.dumps(config))
    return target


def onnx_model_dir(workdir: Path, model: Path) -> Path:
    """A copy of the model folder with `model.onnx` exported by optimum-cli (from infinity-emb's venv)."""
    target = workdir / "minilm-512-onnx"
    if not (target / "model.onnx").exists():
        shutil.copytree(model, target, dirs_exist_ok=True)
        log("exporting the model with optimum-cli for infinity's optimum engine")
        exported = workdir / "optimum-export"
        subprocess.run(
            [
                str(INFINITY.parent / "optimum-cli"),
                "export",
                "onnx",
                "--model",
                str(model),
                "--task",
                "feature-extraction",
                "--library-name",
                "transformers",
                str(exported),
            ],
            check=True,
            capture_output=True,
        )
        shutil.copy(exported / "model.onnx", target / "model.onnx")
    return target


def start_infinity(workdir: Path, engine: str = "torch") -> Server:
    port = free_port()
    log_path = workdir / f"infinity-{port}.log"
    model = infinity_model_dir(workdir)
    if engine == "optimum":
        # infinity's optimum engine loads `model.onnx` (outputs `last_hidden_state`) from the model folder:
        # export it with the optimum that infinity-emb installed beside it. Run from inside the folder
        # (`--model-id .`): given an absolute folder, this infinity/optimum pair fails to find the file.
        model = onnx_model_dir(workdir, model)
    proc = subprocess.Popen(
        [
            str(INFINITY),
            "v2",
            "--model-id",
            "." if engine == "optimum" else str(model),
            "--served-model-name",
            "minilm",
            "--port",
            str(port),
            "--engine",
            engine,
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "--no-bettertransformer",
            "--no-vector-disk-cache",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        cwd=model,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(url + "/health", proc, log_path)
    return Server(f"infinity-{engine}", url, proc, log_path)


# --- load generation ----------------------------------------------------------------------------
def plan_requests(n_items: int, seed: int, low: int = 1, high: int = 64) -> list[tuple[int, int]]:
    """(start, stop) slices of the item list, sizes uniform in [low, high]."""
    rng, out, start = random.Random(seed), [], 0
    while start < n_items:
        size = rng.randint(low, high)
        out.append((start, min(start + size, n_items)))
        start += size
    return out


async def drive(url: str, path: str, bodies: list[dict], clients: int) -> float:
    """Send all bodies with `clients` concurrent workers; returns wall seconds."""
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(path, json=body)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - started


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, part: str, what: str, value: str, target: str = "") -> None:
        self.rows.append((part, what, value, target))
        log(f"{part} | {what} | {value} | {target}")


@app.command()
def main(
    out: Annotated[Path, typer.Option(help="Markdown table to write.")] = ROOT / "benchmarks/results/throughput.md",
    cells: Annotated[int, typer.Option(help="Distinct cold cells per throughput scenario.")] = 600,
    quick: Annotated[bool, typer.Option(help="Small sizes (harness check).")] = False,
    infinity: Annotated[bool, typer.Option(help="Include infinity-emb (needs $INFINITY_BIN).")] = True,
    precompute: Annotated[bool, typer.Option(help="Include the whole-space precompute (about 10 min).")] = True,
    only_backends: Annotated[
        bool, typer.Option(help="Run only part e (backends and engines) and update its section of --out.")
    ] = False,
) -> None:
    if only_backends:
        backends(out, cells)
        return
    if quick:
        cells, precompute = 96, False
    started_all = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="colecache-bench-"))
    all_cells = list(SPACE.all_cells())
    random.Random(0).shuffle(all_cells)
    options = RenderOptions()
    texts = {c: render(ArchSpec("nb201", c), options).code for c in all_cells}
    concurrency = (1, 8, 32)
    scenario_cells = {c: all_cells[i * cells : (i + 1) * cells] for i, c in enumerate(concurrency)}
    infinity_cells = {c: all_cells[(3 + i) * cells : (4 + i) * cells] for i, c in enumerate(concurrency)}
    report = Report()

    # a. cold throughput ---------------------------------------------------------------------------
    log("raw forward")
    raw = {c: raw_throughput([texts[x] for x in scenario_cells[c]]) for c in concurrency}
    raw_mean = statistics.mean(raw.values())
    report.add(
        "a",
        f"raw transformers forward, batch 32, length-sorted ({cells} cells x3)",
        f"{raw_mean:.1f} cells/s ({', '.join(f'{v:.1f}' for v in raw.values())})",
    )
    server = start_colecache(workdir)
    try:
        for c in concurrency:
            subset = [x.to_string() for x in scenario_cells[c]]
            bodies = [{"specs": subset[a:b], "encoding": "base64"} for a, b in plan_requests(len(subset), c)]
            before = forward_stats(server.url)
            seconds = asyncio.run(drive(server.url, "/embed", bodies, c))
            after = forward_stats(server.url)
            rate = len(subset) / seconds
            busy = (after["seconds"] - before["seconds"]) / seconds
            batches = after["batches"] - before["batches"]
            padded = after["padded_tokens"] - before["padded_tokens"]
            counts = token_counts([texts[x] for x in scenario_cells[c]])
            report.add(
                "a",
                f"colecache /embed, {c} clients x 1..64 specs, cold",
                f"{rate:.1f} cells/s",
                f"{rate / raw[c]:.2f}x raw (target >= 0.95x at 32)",
            )
            report.notes.append(
                f"a, {c} clients: model forward busy {busy:.0%} of the wall time, {batches:.0f} forwards "
                f"(mean {len(subset) / max(batches, 1):.1f} items), "
                f"real/padded tokens {sum(counts) / max(padded, 1):.0%} "
                f"(raw forward: {raw_padding(counts):.0%})."
            )
            raw[f"cole{c}"] = rate
        # One request of 1,000 cold cells (the spine's closing figure), against the raw forward of the same texts.
        single = all_cells[6 * cells : 6 * cells + (cells if quick else 1000)]
        raw_single = raw_throughput([texts[x] for x in single])
        with httpx.Client(base_url=server.url, timeout=3600) as client:
            began = time.perf_counter()
            client.post(
                "/embed", json={"specs": [x.to_string() for x in single], "encoding": "base64"}
            ).raise_for_status()
            rate = len(single) / (time.perf_counter() - began)
        report.add("a", f"raw forward of the same {len(single)} texts", f"{raw_single:.1f} cells/s")
        report.add(
            "a",
            f"colecache: one cold /embed of {len(single)} cells",
            f"{rate:.1f} cells/s",
            f"{rate / raw_single:.2f}x raw",
        )
        if infinity and INFINITY.exists():
            inf = start_infinity(workdir)
            try:
                for c in concurrency:
                    subset = [texts[x] for x in infinity_cells[c]]
                    bodies = [{"model": "minilm", "input": subset[a:b]} for a, b in plan_requests(len(subset), c)]
                    seconds = asyncio.run(drive(inf.url, "/embeddings", bodies, c))
                    rate = len(subset) / seconds
                    report.add(
                        "a",
                        f"infinity-emb /embeddings, {c} clients x 1..64 texts",
                        f"{rate:.1f} cells/s",
                        f"colecache is {raw[f'cole{c}'] / rate:.2f}x (target >= 1.0x at 32)",
                    )
            finally:
                inf.stop()
        else:
            report.notes.append("infinity-emb not run (no binary at $INFINITY_BIN).")

        # b. cached latency ------------------------------------------------------------------------
        # Every cell part a sent through colecache is cached now: take 1,000 of them.
        warm = [x.to_string() for c in concurrency for x in scenario_cells[c]][:1000]
        with httpx.Client(base_url=server.url, timeout=600) as client:
            client.post("/embed", json={"specs": warm})
            one = warm[0]
            for _ in range(20):
                client.get("/health")
                client.post("/embed", json={"specs": [one]})
            noop = timed(lambda: client.get("/health"), 500)
            single = timed(lambda: client.post("/embed", json={"specs": [one]}).raise_for_status(), 500)
            report.add(
                "b", "no-op route GET /health p50 / p99", f"{percentile(noop, 50):.2f} / {percentile(noop, 99):.2f} ms"
            )
            report.add(
                "b",
                "one cached spec POST /embed p50 / p99",
                f"{percentile(single, 50):.2f} / {percentile(single, 99):.2f} ms",
                f"{percentile(single, 50) / percentile(noop, 50):.2f}x no-op (target <= 1.5x)",
            )
            for encoding in ("base64", "float"):
                body = {"specs": warm, "encoding": encoding}
                thousand = timed(lambda b=body: client.post("/embed", json=b).raise_for_status(), 30)
                report.add(
                    "b",
                    f"{len(warm)} cached specs, {encoding} p50 / p99",
                    f"{percentile(thousand, 50):.1f} / {percentile(thousand, 99):.1f} ms",
                    "target <= 50 ms",
                )

            # c. predict -------------------------------------------------------------------------
            from colecache.benchdata import find_nb201_dir, load_nb201

            table = load_nb201() if find_nb201_dir() else None
            # One cell per isomorphism class: studies key observations by class (canonical rendering),
            # and two members of a class carry different benchmark values.
            observed = [x.to_string() for x in SPACE.dedupe(scenario_cells[8])][:200]
            value = (
                (lambda a: float(table.accuracy["cifar100"][table.index_of[a]]))
                if table
                else (lambda a: 50.0 + a.count("conv_3x3"))
            )
            study = client.post("/studies", json={"name": "bench"}).json()
            client.post(
                f"/studies/{study['id']}/observations",
                json={"observations": [{"spec": a, "value": value(a)} for a in observed]},
            ).raise_for_status()
            candidates = warm
            client.post(f"/studies/{study['id']}/predict", json={"specs": candidates}).raise_for_status()  # fit
            predict = timed(
                lambda: client.post(f"/studies/{study['id']}/predict", json={"specs": candidates}).raise_for_status(),
                30,
            )
            head = head_forward_ms(client, study, observed, candidates, value)
            report.add(
                "c",
                f"/predict on {len(candidates)} cached candidates p50 / p99",
                f"{percentile(predict, 50):.1f} / {percentile(predict, 99):.1f} ms",
                f"{percentile(predict, 50) / head:.2f}x the head's forward of {head:.1f} ms (target <= 2x)",
            )
    finally:
        server.stop()

    # d. whole-space precompute ----------------------------------------------------------------------
    if precompute:
        # Canonical rendering (what studies use): the 15,625 cells are 6,466 distinct texts; the raw
        # forward embeds exactly those texts, so both sides do the same work.
        canonical = RenderOptions(canonical=True)
        distinct = list(dict.fromkeys(render(ArchSpec("nb201", c), canonical).code for c in all_cells))
        log(f"precompute of the whole space ({len(distinct)} distinct canonical texts)")
        env = {**os.environ, "COLECACHE_DATA_DIR": str(workdir / "precompute")}
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "colecache.cli", "precompute", "--canonical"], env=env, check=True)
        rate = len(distinct) / (time.perf_counter() - began)
        log("raw forward over the same texts")
        raw_all = raw_throughput(distinct)
        report.add("d", f"raw forward, whole space ({len(distinct):,} canonical texts)", f"{raw_all:.1f} texts/s")
        report.add(
            "d",
            "colecache precompute --canonical, whole space (process start to finish)",
            f"{rate:.1f} texts/s",
            f"{rate / raw_all:.2f}x raw (target >= 0.95x)",
        )
    write_report(out, report, time.perf_counter() - started_all, quick)
    shutil.rmtree(workdir, ignore_errors=True)


BACKENDS_BEGIN = "<!-- part e: backends (throughput.py --only-backends) -->"
BACKENDS_END = "<!-- end of part e -->"


def cold_rate(url: str, specs: list, clients: int, path: str = "/embed", infinity: bool = False) -> float:
    """Cells per second for `specs` sent by `clients` concurrent clients in requests of 1..64."""
    if infinity:
        bodies = [{"model": "minilm", "input": specs[a:b]} for a, b in plan_requests(len(specs), clients)]
    else:
        bodies = [{"specs": specs[a:b], "encoding": "base64"} for a, b in plan_requests(len(specs), clients)]
    return len(specs) / asyncio.run(drive(url, path, bodies, clients))


def backends(out: Path, cells: int) -> None:
    """Part e: the same uncached NB201 cells at 32 clients through colecache on torch, ONNX and ONNX int8, and
    through infinity-emb's torch and optimum (ONNX) engines, each against its raw forward; plus one ONNX
    server with two CPU replicas of one thread each against one replica with two threads."""
    import torch

    started_all = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="colecache-backends-"))
    all_cells = list(SPACE.all_cells())
    random.Random(1).shuffle(all_cells)
    chosen = all_cells[:cells]
    texts = [render(ArchSpec("nb201", c), RenderOptions()).code for c in chosen]
    specs = [c.to_string() for c in chosen]
    clients = 32
    rows: list[tuple[str, str, str]] = []

    def add(what: str, value: float, against: str = "") -> None:
        rows.append((what, f"{value:.1f} cells/s", against))
        log(f"e | {what} | {value:.1f} | {against}")

    raw_torch = raw_throughput(texts)
    add("raw transformers forward (torch), batch 32", raw_torch)
    raw_onnx = raw_onnx_throughput(texts, workdir)
    add("raw ONNX Runtime forward of our export, batch 32", raw_onnx, f"{raw_onnx / raw_torch:.2f}x raw torch")
    raw_int8 = raw_onnx_throughput(texts, workdir, "int8")
    add("raw ONNX Runtime forward, int8 weights, batch 32", raw_int8, f"{raw_int8 / raw_torch:.2f}x raw torch")

    rates: dict[str, float] = {}
    configs = {
        "torch": {},
        "onnx": {"COLECACHE_BACKEND": "onnx"},
        "onnx-int8": {"COLECACHE_BACKEND": "onnx", "COLECACHE_ONNX_QUANTIZE": "int8"},
        "onnx, cpu,cpu x 1 thread": {
            "COLECACHE_BACKEND": "onnx",
            "COLECACHE_DEVICE": "cpu,cpu",
            "COLECACHE_TORCH_THREADS": "1",
        },
        "onnx, cpu x 2 threads": {"COLECACHE_BACKEND": "onnx", "COLECACHE_TORCH_THREADS": "2"},
    }
    for name, env in configs.items():
        folder = workdir / name.replace(" ", "_").replace(",", "")
        folder.mkdir()
        if env.get("COLECACHE_BACKEND") == "onnx":  # reuse the export: the run measures serving, not exporting
            shutil.copytree(workdir / "onnx-export" / "onnx", folder / "data" / "onnx", dirs_exist_ok=True)
        server = start_colecache(folder, **env)
        try:
            rates[name] = cold_rate(server.url, specs, clients)
        finally:
            server.stop()
    raw_of = {"torch": raw_torch, "onnx": raw_onnx, "onnx-int8": raw_int8}
    for name in ("torch", "onnx", "onnx-int8"):
        add(
            f"colecache /embed, backend {name}, {clients} clients, cold",
            rates[name],
            f"{rates[name] / raw_of[name]:.2f}x its raw forward",
        )

    engines: dict[str, float] = {}
    if INFINITY.exists():
        for engine in ("torch", "optimum"):
            try:
                inf = start_infinity(workdir, engine)
            except RuntimeError as exc:
                log(f"infinity {engine}: {exc}")
                continue
            try:
                engines[engine] = cold_rate(inf.url, texts, clients, "/embeddings", infinity=True)
                add(f"infinity-emb /embeddings, engine {engine}, {clients} clients", engines[engine])
            finally:
                inf.stop()
    targets = []
    if "torch" in engines:
        targets.append(f"ONNX backend vs infinity torch: {rates['onnx'] / engines['torch']:.2f}x (target >= 1.5x)")
    if "optimum" in engines:
        targets.append(f"ONNX backend vs infinity optimum: {rates['onnx'] / engines['optimum']:.2f}x (target >= 1.0x)")
    targets.append(f"ONNX backend vs our raw ONNX forward: {rates['onnx'] / raw_onnx:.2f}x (target >= 0.95x)")
    two, one = rates["onnx, cpu,cpu x 1 thread"], rates["onnx, cpu x 2 threads"]
    add(
        "colecache ONNX, two CPU replicas (cpu,cpu) x 1 thread, 32 clients",
        two,
        f"{two / one:.2f}x one replica x 2 threads",
    )
    add("colecache ONNX, one CPU replica x 2 threads, 32 clients", one)

    section = [
        BACKENDS_BEGIN,
        "",
        "## e. Backends and engines (ONNX Runtime, infinity-emb's torch and optimum engines)",
        "",
        "Command: `python benchmarks/throughput.py --only-backends`  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU, torch {torch.__version__}, "
        f"Python {platform.python_version()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"wall time {(time.perf_counter() - started_all) / 60:.1f} min  ",
        f"The same {cells} uncached NB201 cells (exclude_helper/none code, all-MiniLM-L6-v2, max_length 512, mean "
        f"pooling) for every row; each server starts on an empty cache; {clients} clients send requests of 1..64.",
        "",
        "| measurement | value | against |",
        "|---|---|---|",
        *[f"| {w} | {v} | {a} |" for w, v, a in rows],
        "",
        *[f"- {t}" for t in targets],
        "",
        BACKENDS_END,
    ]
    text = out.read_text() if out.exists() else ""
    if BACKENDS_BEGIN in text:
        head, _, rest = text.partition(BACKENDS_BEGIN)
        tail = rest.partition(BACKENDS_END)[2]
        text = head.rstrip() + "\n\n" + "\n".join(section) + tail
    else:
        text = text.rstrip() + "\n\n" + "\n".join(section) + "\n"
    out.write_text(text)
    log(f"wrote part e into {out}")
    shutil.rmtree(workdir, ignore_errors=True)


def head_forward_ms(client: httpx.Client, study: dict, observed: list[str], candidates: list[str], value) -> float:
    """The surrogate's own forward (feature map + head) on the candidates, fitted like the server's."""
    from colecache.surrogate import Surrogate, SurrogateConfig

    info = client.get(f"/studies/{study['id']}").json()
    embed = lambda specs: np.asarray(  # noqa: E731
        [
            i["embedding"]
            for i in client.post(
                "/embed", json={"specs": specs, "render": info["render"], "embedder": info["embedder"]}
            ).json()["items"]
        ],
        dtype=np.float32,
    )
    config = SurrogateConfig.model_validate(info["surrogate"])
    kinds = config.features.structural
    encode = lambda specs: (  # noqa: E731
        np.asarray([np.concatenate([SPACE.encode(SPACE.parse(a), k) for k in kinds]) for a in specs]) if kinds else None
    )
    surrogate = Surrogate(config)
    surrogate.fit(embed(observed), encode(observed), np.array([value(a) for a in observed]))
    x, s = embed(candidates), encode(candidates)
    surrogate.predict(x, s)
    return percentile(timed(lambda: surrogate.predict(x, s), 30), 50)


def write_report(out: Path, report: Report, seconds: float, quick: bool) -> None:
    import torch

    lines = [
        "# colecache throughput and latency",
        "",
        f"Command: `python benchmarks/throughput.py{' --quick' if quick else ''}`  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wall time {seconds / 60:.1f} min  ",
        "Model: all-MiniLM-L6-v2 (bundled), fp32, mean pooling, max_length 512, render exclude_helper/none.",
        "",
        "| part | measurement | value | against target |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p} | {w} | {v} | {t} |" for p, w, v, t in report.rows]
    lines += [""] + [f"- {note}" for note in report.notes]
    write_markdown(out, lines)


if __name__ == "__main__":
    app()
