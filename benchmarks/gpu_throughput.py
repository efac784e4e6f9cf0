"""GPU throughput: colecache /embed against the raw batched forward of the same model, same texts.

The one script to run when a GPU machine is lent (its time is scarce): for the bundled MiniLM and
for a ~0.5B decoder built from a Qwen2-style config with random weights (no hub access needed;
throughput does not depend on the weights), it measures

  - the raw forward: transformers AutoModel, length-sorted batches of 32, padded, pooled on the
    device (masked mean for MiniLM, last real token for the decoder), in the chosen dtype;
  - colecache: a real server process (`colecache serve`) on the same model files, dtype and
    pooling, with 32 concurrent clients sending 1..64 cold NB201 specs each, then 1 client.

    python benchmarks/gpu_throughput.py                       # on the GPU box: bf16, writes the table
    python benchmarks/gpu_throughput.py --tiny --device cpu   # harness check on a CPU (tiny decoder)

Writes benchmarks/results/gpu_throughput.md (or --out).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colecache.embedding.backend import resolve_model_ref
from colecache.render import RenderOptions, render
from colecache.settings import BUNDLED_MODEL
from colecache.specs import ArchSpec
from colecache_client.spaces import get_space
from throughput import drive, log, plan_requests, start_colecache, write_markdown

ROOT = Path(__file__).resolve().parents[1]
SPACE = get_space("nb201")
app = typer.Typer(help=__doc__)


def build_decoder(target: Path, tiny: bool) -> Path:
    """A Qwen2-architecture decoder with random weights (~0.5B parameters, or tiny), saved with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref(BUNDLED_MODEL).source)
    if tiny:
        size = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
    else:
        size = {"hidden_size": 896, "num_hidden_layers": 32, "num_attention_heads": 14, "intermediate_size": 4864}
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        **size,
    )
    torch.manual_seed(0)
    model = Qwen2Model(config).to(torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    params = sum(p.numel() for p in model.parameters())
    log(f"decoder with {params / 1e6:.0f}M parameters written to {target}")
    return target


def raw_throughput(model_dir: str, texts: list[str], device: str, dtype: str, pooling: str) -> float:
    """Texts per second of the plain batched forward (after one warm-up batch)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [[texts[i] for i in order[s : s + 32]] for s in range(0, len(order), 32)]

    def forward(batch: list[str]):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=512, return_tensors="pt").to(device)
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"]
        if pooling == "last_token":  # right padding: the last real token sits at length - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=device), mask.sum(1) - 1]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1)
        return pooled.float().cpu().numpy()

    with torch.inference_mode():
        forward(batches[-1])  # warm-up (longest batch: allocator and kernels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        for batch in batches:
            forward(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - started)


def server_devices(url: str) -> list[dict]:
    import httpx

    return httpx.get(url + "/info", timeout=30).json()["model"]["devices"]


@app.command()
def main(
    out: Annotated[Path, typer.Option(help="Markdown table to write.")] = ROOT / "benchmarks/results/gpu_throughput.md",
    device: Annotated[str, typer.Option(help="cuda or cpu.")] = "cuda",
    dtype: Annotated[str, typer.Option(help="bfloat16, float16 or float32.")] = "bfloat16",
    cells: Annotated[int, typer.Option(help="Cold cells per measurement.")] = 2000,
    tiny: Annotated[bool, typer.Option(help="Tiny decoder and few cells (harness check).")] = False,
    multi: Annotated[
        str | None,
        typer.Option(
            help="Also serve with several replicas, e.g. cuda:all (the default on a box with >1 GPU) or cpu,cpu "
            "(harness check); 32 clients, against one replica."
        ),
    ] = None,
) -> None:
    import torch

    if tiny:
        cells = min(cells, 64)
    if multi is None and device.startswith("cuda") and torch.cuda.device_count() > 1:
        multi = "cuda:all"
    if device == "cpu" and dtype != "float32":
        dtype = "float32"  # the server refuses half precision on CPU
    started_all = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="colecache-gpu-"))
    all_cells = list(SPACE.all_cells())
    random.Random(1).shuffle(all_cells)
    options = RenderOptions()
    models = {
        "all-MiniLM-L6-v2": (str(resolve_model_ref(BUNDLED_MODEL).source), "mean"),
        "Qwen2-style decoder, random weights": (str(build_decoder(workdir / "decoder", tiny)), "last_token"),
    }
    rows: list[tuple[str, str, str, str]] = []
    try:
        for m, (name, (path, pooling)) in enumerate(models.items()):
            raw_cells = all_cells[(3 * m) * cells : (3 * m + 1) * cells]
            raw = raw_throughput(
                path, [render(ArchSpec("nb201", c), options).code for c in raw_cells], device, dtype, pooling
            )
            rows.append((name, f"raw forward, batch 32, length-sorted, {pooling}", f"{raw:.1f}", ""))
            log(f"{name}: raw {raw:.1f} texts/s")
            server = start_colecache(
                workdir,
                COLECACHE_MODEL=path,
                COLECACHE_DEVICE=device,
                COLECACHE_DTYPE=dtype,
                COLECACHE_POOLING=pooling,
                COLECACHE_DATA_DIR=str(workdir / f"data-{m}"),
            )
            try:
                for k, clients in enumerate((32, 1)):
                    subset = [c.to_string() for c in all_cells[(3 * m + 1 + k) * cells : (3 * m + 2 + k) * cells]]
                    bodies = [{"specs": subset[a:b], "encoding": "base64"} for a, b in plan_requests(len(subset), k)]
                    rate = len(subset) / asyncio.run(drive(server.url, "/embed", bodies, clients))
                    rows.append(
                        (
                            name,
                            f"colecache /embed, {clients} clients x 1..64 specs, cold",
                            f"{rate:.1f}",
                            f"{rate / raw:.2f}x raw",
                        )
                    )
                    log(f"{name}: colecache {clients} clients {rate:.1f} texts/s")
            finally:
                server.stop()
            if multi:
                single = next(float(r[2]) for r in rows if r[0] == name and "32 clients" in r[1])
                server = start_colecache(
                    workdir,
                    COLECACHE_MODEL=path,
                    COLECACHE_DEVICE=multi,
                    COLECACHE_DTYPE=dtype,
                    COLECACHE_POOLING=pooling,
                    COLECACHE_DATA_DIR=str(workdir / f"data-{m}-multi"),
                )
                try:
                    subset = [c.to_string() for c in all_cells[(3 * m + 1) * cells : (3 * m + 2) * cells]]
                    bodies = [{"specs": subset[a:b], "encoding": "base64"} for a, b in plan_requests(len(subset), 0)]
                    rate = len(subset) / asyncio.run(drive(server.url, "/embed", bodies, 32))
                    replicas = len(server_devices(server.url))
                    rows.append(
                        (
                            name,
                            f"colecache /embed, 32 clients, {replicas} replicas ({multi}), cold",
                            f"{rate:.1f}",
                            f"{rate / raw:.2f}x raw, {rate / single:.2f}x one replica",
                        )
                    )
                    log(f"{name}: colecache {multi} {rate:.1f} texts/s")
                finally:
                    server.stop()
    finally:
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        lines = [
            "# colecache GPU throughput",
            "",
            f"Command: `python benchmarks/gpu_throughput.py {' '.join(sys.argv[1:])}`  ",
            f"Machine: {platform.node()}, GPU {gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}  ",
            f"Device {device}, dtype {dtype}, {cells} cold NB201 cells (exclude_helper/none) per row, max_length 512; "
            f"wall {(time.perf_counter() - started_all) / 60:.1f} min.",
            "",
            "| model | measurement | texts/s | vs raw |",
            "|---|---|---|---|",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        ]
        write_markdown(out, lines)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    app()
