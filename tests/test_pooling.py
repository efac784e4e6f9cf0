"""Pooling checked against hand computation on tiny models, under right and left padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from colecache.embedding.backend import BatchItem

TEXTS = [
    "class Cell(nn.Module):\n    pass",
    "def forward(self, x0):\n    x1 = self.edge_0_1(x0)\n    x2 = x0 + x1\n    return x2 + self.edge_1_3(x1)",
    "x = 1",
]


def _alone(backend, text: str) -> list[np.ndarray]:
    """Hidden states of one unpadded sequence, every layer, as (T, D) arrays."""
    ids = torch.tensor([backend.tokenize([text], 10_000)[0].ids])
    with torch.inference_mode():
        out = backend.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return [h[0].float().numpy() for h in (*out.hidden_states[:-1], out.last_hidden_state)]


def _expected(states: list[np.ndarray], pooling: str, layer: int) -> np.ndarray:
    if pooling == "mean_all_layers":
        return np.mean([h.mean(axis=0) for h in states], axis=0)
    hidden = states[layer]
    return {"mean": hidden.mean(axis=0), "cls": hidden[0], "last_token": hidden[-1]}[pooling]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_decoder"])
@pytest.mark.parametrize(
    ("pooling", "layer"), [("mean", -1), ("mean", 1), ("cls", -1), ("last_token", -1), ("mean_all_layers", None)]
)
def test_pooling_matches_hand_computation_in_a_padded_batch(request, model, pooling, layer):
    backend = request.getfixturevalue(model)
    assert backend.left_padding == (model == "tiny_decoder")
    tokens = backend.tokenize(TEXTS, 10_000)
    assert len({t.n_tokens for t in tokens}) == 3  # rows really are padded
    n = backend.identity.num_hidden_states
    absolute = None if layer is None else layer % n
    got = backend.embed([BatchItem(t, pooling, absolute, False) for t in tokens])
    for row, text in enumerate(TEXTS):
        want = _expected(_alone(backend, text), pooling, -1 if layer is None else layer)
        np.testing.assert_allclose(got[row], want, rtol=1e-4, atol=1e-5)


def test_mixed_readouts_share_one_forward(tiny_decoder):
    tokens = tiny_decoder.tokenize(TEXTS, 10_000)
    last = tiny_decoder.identity.num_hidden_states - 1
    items = [
        BatchItem(tokens[0], "mean", last, True),
        BatchItem(tokens[1], "last_token", 1, False),
        BatchItem(tokens[2], "mean_all_layers", None, False),
    ]
    calls = tiny_decoder.stats.forward_calls
    got = tiny_decoder.embed(items)
    assert tiny_decoder.stats.forward_calls == calls + 1
    assert np.isclose(np.linalg.norm(got[0]), 1.0)
    separately = [tiny_decoder.embed([item])[0] for item in items]
    np.testing.assert_allclose(got, np.stack(separately), rtol=1e-4, atol=1e-5)


def test_truncation_keeps_special_tokens_and_flags_items(tiny_bert):
    long_text = "x = 1\n" * 200
    short, cut = tiny_bert.tokenize(["x = 1", long_text], 32)
    assert not short.truncated and short.n_tokens < 32
    assert cut.truncated and cut.n_tokens == 32
    assert cut.ids[0] == tiny_bert.tokenizer.cls_token_id and cut.ids[-1] == tiny_bert.tokenizer.sep_token_id


def test_one_forward_many_readouts_equals_separate_embeds(tiny_decoder):
    tokens = tiny_decoder.tokenize(TEXTS, 10_000)
    last = tiny_decoder.identity.num_hidden_states - 1
    readouts = [("mean", last, False), ("last_token", 1, True), ("mean_all_layers", None, False)]
    calls = tiny_decoder.stats.forward_calls
    together = tiny_decoder.embed_readouts(tokens, readouts)
    assert tiny_decoder.stats.forward_calls == calls + 1
    for (pooling, layer, normalize), got in zip(readouts, together):
        want = tiny_decoder.embed([BatchItem(t, pooling, layer, normalize) for t in tokens])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
