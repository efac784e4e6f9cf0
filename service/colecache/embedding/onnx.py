"""ONNX Runtime backend (CPU): the torch backend's tokenizer, padding and pooling, with the forward run
by ONNX Runtime, which is usually faster than torch's eager forward on a CPU.

The model is exported once per (model, revision, quantisation, exporter) into
`<data_dir>/onnx/<key>/model.onnx` with torch's own exporter (`torch.onnx.export(dynamo=True)`), every
hidden state an output of its own so layer choice and `mean_all_layers` work as with torch. We do
not use optimum-onnx for this: its only release (0.1.0) requires transformers < 4.58, and the server
runs transformers 5. `COLECACHE_ONNX_QUANTIZE=int8` quantises the weights dynamically
(`onnxruntime.quantization.quantize_dynamic`, QInt8). The backend (`onnx` / `onnx-int8`) is part of
every fingerprint, so these vectors never mix with torch's in the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..settings import Settings
from .backend import Tokens, TransformerBackend, resolve_devices
from .fingerprint import ModelIdentity

log = logging.getLogger(__name__)

EXPORT_VERSION = "onnx/2"  # bump when the exported graph changes what it computes


def output_name(layer: int) -> str:
    """Hidden state `layer` (0: embeddings; the last one is `last_hidden_state`), (batch, tokens, dim) float32."""
    return f"hidden_states.{layer}"


class _AllHiddenStates(torch.nn.Module):
    """The model with every hidden state as its own output (a forward that reads one layer fetches only that
    one: no copy of the others); the last one is `last_hidden_state`."""

    def __init__(self, model, inputs: Sequence[str]):
        super().__init__()
        self.model = model
        self.inputs = list(inputs)
        self.use_cache = {"use_cache": False} if getattr(model.config, "use_cache", False) else {}

    def forward(self, *tensors):
        out = self.model(**dict(zip(self.inputs, tensors)), output_hidden_states=True, **self.use_cache)
        return (*out.hidden_states[:-1], out.last_hidden_state)


def model_inputs(model) -> list[str]:
    """The inputs the exported graph takes: what the torch backend passes (ids, mask, and positions from the
    mask when the model takes them; never token types, whose default differs between models)."""
    names = inspect.signature(model.forward).parameters
    return ["input_ids", "attention_mask"] + (["position_ids"] if "position_ids" in names else [])


def export_key(identity: ModelIdentity, quantize: str) -> str:
    """Which export a folder holds: sha256 of the model, revision, quantisation, exporter version and torch."""
    blob = json.dumps(
        {
            "model": identity.model,
            "revision": identity.revision,
            "quantize": quantize,
            "export": EXPORT_VERSION,
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def export(model, folder: Path, quantize: str, num_hidden_states: int) -> Path:
    """Export `model` (torch, CPU, float32, eval) to `folder/model.onnx` unless it is there; returns the path.

    Exported with eager attention: its plain MatMul/Softmax graph ran 1.2x faster in ONNX Runtime than the
    exported SDPA graph (MiniLM, 2 CPU cores, 256 NB201 codes: 23 vs 19 cells/s).

    Written into a temporary sibling and renamed into place, so a crash never leaves a half file and two
    processes exporting at once both end with the one that was renamed first."""
    target = folder / "model.onnx"
    if target.exists():
        log.info("reusing the ONNX export in %s", folder)
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        started = time.perf_counter()
        inputs = model_inputs(model)
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
        with _quiet_exporters():
            _export_graph(model, inputs, scratch, num_hidden_states, batch, tokens)
        final = scratch / "model.fp32.onnx"
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet_exporters():
                quantize_dynamic(str(final), str(scratch / "model.int8.onnx"), weight_type=QuantType.QInt8)
            for leftover in scratch.glob("model.fp32.onnx*"):  # the float32 graph and its weights file
                leftover.unlink()
            final = scratch / "model.int8.onnx"
        os.replace(final, scratch / "model.onnx")
        (scratch / "inputs.json").write_text(json.dumps(inputs))
        try:
            os.rename(scratch, folder)
        except OSError:  # another process renamed its export into place first: use that one
            if not target.exists():
                raise
        log.info("exported the model to ONNX (%s) in %.1fs: %s", quantize, time.perf_counter() - started, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _export_graph(model, inputs: list[str], scratch: Path, num_hidden_states: int, batch, tokens) -> None:
    torch.onnx.export(
        _AllHiddenStates(model, inputs).eval(),
        tuple(_example(inputs)[name] for name in inputs),
        str(scratch / "model.fp32.onnx"),
        input_names=inputs,
        output_names=[output_name(i) for i in range(num_hidden_states)],
        dynamic_shapes={"tensors": tuple({0: batch, 1: tokens} for _ in inputs)},
        dynamo=True,
        external_data=True,
        verbose=False,
    )


@contextlib.contextmanager
def _quiet_exporters():
    """The exporter and quantiser log hundreds of INFO lines and print progress: keep them out of our JSON log."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "root")
    levels = {name: logging.getLogger(None if name == "root" else name).level for name in names}
    for name in names:
        logging.getLogger(None if name == "root" else name).setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(None if name == "root" else name).setLevel(level)


def _example(inputs: Sequence[str]) -> dict[str, torch.Tensor]:
    """Example inputs with a padded row: traced on an all-ones mask, the exporter would keep the model's
    no-padding shortcut and ignore the mask of every later batch."""
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0),
    }


class OnnxBackend(TransformerBackend):
    """The forward in an ONNX Runtime session; tokenization, padding and pooling are the torch backend's."""

    def __init__(self, tokenizer, session, inputs: Sequence[str], identity: ModelIdentity):
        self.model = None
        self.session = session
        self.inputs = list(inputs)
        self._setup(tokenizer, identity, torch.device("cpu"))
        self.takes_position_ids = "position_ids" in self.inputs

    @classmethod
    def load_replicas(cls, settings: Settings) -> list[OnnxBackend]:
        """One session per device of `COLECACHE_DEVICE` (all CPU), from one export of the model.

        Raises ValueError for a GPU device or a dtype other than float32 (ONNX Runtime on CPU runs float32;
        `COLECACHE_ONNX_QUANTIZE=int8` is the faster option)."""
        import onnxruntime as ort

        named = [part.strip() for part in settings.device.split(",") if part.strip()]
        if any(name != "auto" and not name.startswith("cpu") for name in named):
            raise ValueError(
                f"COLECACHE_BACKEND=onnx runs on the CPU (COLECACHE_DEVICE=cpu or cpu,cpu), not {settings.device}; "
                "on GPUs use COLECACHE_BACKEND=torch"
            )
        devices = [torch.device("cpu") for _ in resolve_devices(settings.device.replace("auto", "cpu"))]
        if settings.dtype not in ("auto", "float32"):
            raise ValueError(f"COLECACHE_BACKEND=onnx runs float32, not {settings.dtype}; use COLECACHE_DTYPE=auto")
        staging = TransformerBackend._load(settings, torch.device("cpu"))
        backend = "onnx" if settings.onnx_quantize == "none" else f"onnx-{settings.onnx_quantize}"
        identity = ModelIdentity(**{**_fields(staging.identity), "backend": backend})
        folder = settings.data_dir / "onnx" / export_key(identity, settings.onnx_quantize)
        path = export(staging.model, folder, settings.onnx_quantize, identity.num_hidden_states)
        inputs = json.loads((folder / "inputs.json").read_text())
        del staging.model  # the session holds its own copy of the weights

        def session():
            options = ort.SessionOptions()
            options.intra_op_num_threads = settings.torch_threads or 0
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        return [cls(staging.tokenizer, session(), inputs, identity) for _ in devices]

    def _forward(self, tokens: Sequence[Tokens], need_all: bool) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        input_ids, mask = self._padded(tokens)
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0).numpy()
        n = self.identity.num_hidden_states
        wanted = [output_name(i) for i in range(n)] if need_all else [output_name(n - 1)]
        states = tuple(torch.from_numpy(out) for out in self.session.run(wanted, feeds))
        self.stats.forward_calls += 1
        self.stats.items += len(tokens)
        self.stats.padded_tokens += input_ids.numel()
        return states, mask


def _fields(identity: ModelIdentity) -> dict:
    return {name: getattr(identity, name) for name in identity.__slots__}
