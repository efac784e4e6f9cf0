"""The ONNX Runtime backend: exported once, same read-outs as torch (cosine >= 0.999 unquantised), its own
fingerprint, and a real server on it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from colecache.embedding.backend import BatchItem, TransformerBackend
from colecache.embedding.fingerprint import resolve
from colecache.embedding.options import EmbedOptions
from colecache.render import RenderOptions, render
from colecache.settings import BUNDLED_MODEL, Settings
from colecache.specs import ArchSpec
from colecache_client.spaces import get_space

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SPACE = get_space("nb201")
READOUTS = [("mean", -1), ("mean", 1), ("cls", 0), ("last_token", -1), ("mean_all_layers", None)]


def _codes(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    cells = SPACE.dedupe(SPACE.sample(rng) for _ in range(3 * n))[:n]
    options = RenderOptions(primitives="exclude_helper", context="none", dataset="cifar10", canonical=True)
    return [render(ArchSpec("nb201", c), options).code for c in cells]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _items(backend, codes, max_length, pooling, layer):
    n = backend.identity.num_hidden_states
    return [
        BatchItem(t, pooling, None if layer is None else layer % n, False) for t in backend.tokenize(codes, max_length)
    ]


def _agree(model: str, tmp_path, codes, max_length, minimum: float):
    torch_backend = TransformerBackend.load(Settings(model=model, data_dir=tmp_path, device="cpu"))
    onnx_backend = TransformerBackend.load(Settings(model=model, data_dir=tmp_path, device="cpu", backend="onnx"))
    assert onnx_backend.identity.backend == "onnx" and torch_backend.identity.backend == "torch"
    for pooling, layer in READOUTS:
        items = _items(torch_backend, codes, max_length, pooling, layer)
        assert [i.tokens for i in items] == [i.tokens for i in _items(onnx_backend, codes, max_length, pooling, layer)]
        worst = _cosines(torch_backend.embed(items), onnx_backend.embed(items)).min()
        assert worst >= minimum, (pooling, layer, worst)
    return torch_backend, onnx_backend


def test_tiny_bert_reads_out_as_torch_does_with_truncation_and_batches_of_one(tiny_bert_dir, tmp_path):
    codes = _codes(12)
    torch_backend, onnx_backend = _agree(str(tiny_bert_dir), tmp_path, codes, 64, 0.9999)  # 64: most truncate
    assert any(t.truncated for t in onnx_backend.tokenize(codes, 64))
    one = _items(onnx_backend, codes[:1], 256, "mean", -1)
    np.testing.assert_allclose(onnx_backend.embed(one), torch_backend.embed(one), atol=1e-4)
    # Exported once: a second load finds the file (and does not write it again).
    (exported,) = (tmp_path / "onnx").glob("*/model.onnx")
    stamp = exported.stat().st_mtime_ns
    TransformerBackend.load(Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", backend="onnx"))
    assert exported.stat().st_mtime_ns == stamp and len(list((tmp_path / "onnx").iterdir())) == 1


def test_left_padded_decoder_with_positions(tiny_decoder_dir, tmp_path):
    _agree(str(tiny_decoder_dir), tmp_path, _codes(8, seed=1), 128, 0.9999)


@pytest.mark.slow
def test_bundled_minilm_agrees_with_torch_on_real_codes(tmp_path):
    _agree(BUNDLED_MODEL, tmp_path, _codes(24, seed=2), 512, 0.999)


def test_backend_and_quantisation_key_vectors_apart(tiny_bert_dir, tmp_path):
    plain = TransformerBackend.load(Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu"))
    onnx = TransformerBackend.load(Settings(model=str(tiny_bert_dir), data_dir=tmp_path, backend="onnx"))
    int8 = TransformerBackend.load(
        Settings(model=str(tiny_bert_dir), data_dir=tmp_path, backend="onnx", onnx_quantize="int8")
    )
    ids = {resolve(b.identity, EmbedOptions(), EmbedOptions()).fingerprint.id for b in (plain, onnx, int8)}
    assert len(ids) == 3
    assert int8.identity.backend == "onnx-int8"
    from colecache.embedding.onnx import export_key

    kept = {p.name for p in (tmp_path / "onnx" / export_key(int8.identity, "int8")).iterdir()}
    assert kept == {"model.onnx", "inputs.json"}  # the float32 graph it was quantised from is gone
    items = _items(plain, _codes(6), 256, "mean", -1)
    assert _cosines(plain.embed(items), int8.embed(items)).min() > 0.9  # close, but not the same vectors


def test_onnx_refuses_a_gpu_or_half_precision(tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="runs on the CPU"):
        TransformerBackend.load(Settings(model=str(tiny_bert_dir), data_dir=tmp_path, backend="onnx", device="cuda"))
    with pytest.raises(ValueError, match="runs float32"):
        TransformerBackend.load(
            Settings(model=str(tiny_bert_dir), data_dir=tmp_path, backend="onnx", dtype="bfloat16", device="cpu")
        )


@pytest.mark.integration
def test_server_on_onnx_with_two_sessions(server_factory):
    server = server_factory(COLECACHE_BACKEND="onnx", COLECACHE_DEVICE="cpu,cpu", COLECACHE_TORCH_THREADS="1")
    rng = random.Random(3)
    cells = [c.to_string() for c in SPACE.dedupe(SPACE.sample(rng) for _ in range(40))[:20]]
    with server.client() as client:
        body = client.post("/embed", json={"specs": cells, "encoding": "float"}).json()
        assert body["fingerprint"]["backend"] == "onnx" and len(body["items"]) == 20
        again = client.post("/embed", json={"specs": cells}).json()
        assert {item["source"] for item in again["items"]} == {"memory"}
        info = client.get("/info").json()["model"]
        assert [d["name"] for d in info["devices"]] == ["cpu#0", "cpu#1"]
