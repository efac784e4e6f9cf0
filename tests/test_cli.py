"""The `colecache` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "render"
CELL = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colecache.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_render_prints_the_golden_text():
    result = _run("render", CELL, "--primitives", "helper", "--context", "comment", "--dataset", "cifar100")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / "helper-comment.py.txt").read_text()


def test_render_rejects_bad_spec_with_reason():
    result = _run("render", "|nope~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert result.returncode == 2 and "unknown op 'nope'" in result.stderr


def test_embed_in_process_uses_the_cache(tmp_path):
    env = {"COLECACHE_DATA_DIR": str(tmp_path), "COLECACHE_LOG_LEVEL": "warning"}
    first = _run("embed", CELL, env=env)
    assert first.returncode == 0, first.stderr
    row = json.loads(first.stdout.splitlines()[0])
    assert row["arch"] == CELL and row["source"] == "computed" and len(row["embedding"]) == 384
    second = json.loads(_run("embed", CELL, env=env).stdout.splitlines()[0])
    assert second["source"] == "sql" and second["embedding"] == row["embedding"]


def test_migrate_creates_the_schema(tmp_path):
    import sqlalchemy

    result = _run("migrate", env={"COLECACHE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'colecache.db'}")
    assert {"embeddings", "fingerprints", "alembic_version"} <= set(sqlalchemy.inspect(engine).get_table_names())
