"""Cache keys change with every field that shapes a vector, and with nothing else."""

from __future__ import annotations

import dataclasses

import pytest
from colecache.cache.keys import cache_key
from colecache.embedding.fingerprint import Fingerprint, FingerprintError, ModelIdentity, resolve
from colecache.embedding.options import EmbedOptions

IDENTITY = ModelIdentity("org/model", "sha256:abc", "float32", num_hidden_states=7, max_positions=512, dim=384)
DEFAULTS = EmbedOptions(pooling="mean", layer=-1, max_length=512, normalize=False)
BASE = Fingerprint("org/model", "sha256:abc", "mean", 6, 512, "float32", False)
CODE = "class Cell(nn.Module):\n    pass\n"


def test_key_is_stable_across_processes_and_releases():
    # A pinned value: if this changes, every stored vector is orphaned. Bump KEY_SCHEME on purpose only.
    assert BASE.id == Fingerprint("org/model", "sha256:abc", "mean", 6, 512, "float32", False).id
    assert cache_key(BASE.id, "nb201-pytorch/1", CODE).hex() == (
        "267fff5b67c26cc1aef16bc55f622450855f9eb75546738c273777dcfa51a13d"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"model": "org/other"},
        {"revision": "sha256:def"},
        {"pooling": "last_token"},
        {"layer": 5},
        {"max_length": 256},
        {"dtype": "bfloat16"},
        {"normalize": True},
    ],
)
def test_every_fingerprint_field_changes_the_key(change):
    other = dataclasses.replace(BASE, **change)
    assert cache_key(other.id, "nb201-pytorch/1", CODE) != cache_key(BASE.id, "nb201-pytorch/1", CODE)


def test_renderer_version_and_code_change_the_key():
    key = cache_key(BASE.id, "nb201-pytorch/1", CODE)
    assert cache_key(BASE.id, "nb201-pytorch/2", CODE) != key
    assert cache_key(BASE.id, "nb201-pytorch/1", CODE + " ") != key


def test_fields_cannot_bleed_into_each_other():
    # Length-prefixing: moving a character from one field to the next must not collide.
    assert cache_key("ab", "c", CODE) != cache_key("a", "bc", CODE)


def test_equivalent_options_resolve_to_one_fingerprint():
    explicit = resolve(IDENTITY, DEFAULTS, EmbedOptions(pooling="mean", layer=6, max_length=512, normalize=False))
    implicit = resolve(IDENTITY, DEFAULTS, EmbedOptions())
    negative = resolve(IDENTITY, DEFAULTS, EmbedOptions(layer=-1, reject_truncated=True))
    named = resolve(IDENTITY, DEFAULTS, EmbedOptions(model="org/model"))
    assert explicit.fingerprint == implicit.fingerprint == negative.fingerprint == named.fingerprint == BASE
    # The layer is irrelevant when every layer is averaged, so it does not split the key.
    all_a = resolve(IDENTITY, DEFAULTS, EmbedOptions(pooling="mean_all_layers", layer=2)).fingerprint
    all_b = resolve(IDENTITY, DEFAULTS, EmbedOptions(pooling="mean_all_layers")).fingerprint
    assert all_a == all_b and all_a.layer is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EmbedOptions(model="org/other"), "not 'org/other'"),
        (EmbedOptions(layer=7), "layer 7 is out of range"),
        (EmbedOptions(layer=-8), "layer -8 is out of range"),
        (EmbedOptions(max_length=513), "exceeds the model's limit of 512"),
    ],
)
def test_options_the_model_cannot_honour(options, message):
    with pytest.raises(FingerprintError, match=message):
        resolve(IDENTITY, DEFAULTS, options)
