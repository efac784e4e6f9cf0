"""One client's input must not fail or stall another's: option limits, per-item failures, bounded tokenisation."""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from colecache.api.state import Services, load_model, open_stores, shutdown
from colecache.embedding.backend import BatchItem, Tokens, TransformerBackend
from colecache.embedding.fingerprint import FingerprintError, ModelIdentity, resolve
from colecache.embedding.options import EmbedOptions
from colecache.embedding.queue import BatchQueue, ItemFailed
from colecache.render import RenderOptions
from colecache.settings import Settings
from colecache.specs import InvalidSpecs, parse_specs
from colecache_client.spaces import get_space

CELLS = [c.to_string() for c in list(get_space("nb201").all_cells())[3::1999][:6]]
CODE_LINE = "        x = self.conv_3x3(x)  # nor_conv_3x3 on edge 1 -> 2\n"
BIG_CODE = ("class Net(nn.Module):\n    def forward(self, x):\n" + CODE_LINE * 4000)[:200_000]


# --- options against the model --------------------------------------------------------------------
def _identity(num_special_tokens: int = 2) -> ModelIdentity:
    return ModelIdentity("org/m", "sha256:abc", "float32", 7, 512, 384, num_special_tokens=num_special_tokens)


@pytest.mark.parametrize("where", ["request", "server default"])
@pytest.mark.parametrize("max_length", [1, 2])
def test_max_length_below_the_special_tokens_is_refused_naming_the_option(where, max_length):
    request, defaults = EmbedOptions(max_length=max_length), EmbedOptions()
    if where == "server default":
        request, defaults = EmbedOptions(), EmbedOptions(max_length=max_length)
    with pytest.raises(FingerprintError, match=rf"max_length {max_length} is below the minimum of 3 for this model"):
        resolve(_identity(), defaults, request)


def test_max_length_range_is_the_models_own():
    assert resolve(_identity(), EmbedOptions(), EmbedOptions(max_length=3)).fingerprint.max_length == 3
    assert resolve(_identity(), EmbedOptions(), EmbedOptions(max_length=512)).fingerprint.max_length == 512
    with pytest.raises(FingerprintError, match="max_length 513 exceeds the model's limit of 512"):
        resolve(_identity(), EmbedOptions(), EmbedOptions(max_length=513))
    assert resolve(_identity(0), EmbedOptions(), EmbedOptions(max_length=1)).fingerprint.max_length == 1


def test_the_backend_reads_the_special_tokens_off_its_tokenizer(tiny_bert, tiny_decoder):
    for backend in (tiny_bert, tiny_decoder):
        assert backend.identity.num_special_tokens == backend.tokenizer.num_special_tokens_to_add(pair=False) == 2
        with pytest.raises(ValueError, match="no room"):
            backend.tokenize(["x = 1"], 2)


def test_the_model_never_gets_more_tokens_than_it_has_positions(tiny_bert):
    limit = tiny_bert.identity.max_positions
    too_long = Tokens([101] + [1060] * (limit - 1) + [102], False)
    with pytest.raises(ValueError, match=f"exceeds the model's limit of {limit}"):
        tiny_bert.embed([BatchItem(too_long, "mean", 2, False)])


@pytest.mark.integration
def test_every_route_answers_422_for_a_max_length_the_model_cannot_honour(default_server):
    poison = {"specs": [{"code": "x = conv(x)\n" * 200}], "embedder": {"max_length": 1}}
    with default_server.client() as client:
        assert client.get("/info").json()["model"]["min_length"] == 3  # MiniLM adds [CLS] and [SEP]
        for max_length in (1, 2):
            embed = client.post("/embed", json={**poison, "embedder": {"max_length": max_length}})
            assert embed.status_code == 422 and f"max_length {max_length} is below the minimum of 3" in embed.text
            study = client.post("/studies", json={"name": "poison", "embedder": {"max_length": max_length}})
            assert study.status_code == 422 and "max_length" in study.text
        # The example, alongside an unrelated request: each gets its own answer.
        with default_server.client() as other, ThreadPoolExecutor(2) as pool:
            bad = pool.submit(client.post, "/embed", json=poison)
            good = pool.submit(other.post, "/embed", json={"specs": CELLS[:2]})
            assert bad.result().status_code == 422 and good.result().status_code == 200
        smallest = client.post("/embed", json={**poison, "embedder": {"max_length": 3}})
        assert smallest.status_code == 200
        item = smallest.json()["items"][0]
        assert item["n_tokens"] == 3 and item["truncated"] is True


# --- a forward that fails fails only the item at fault ---------------------------------------------
def _item(tag: int, length: int = 4) -> BatchItem:
    return BatchItem(Tokens([tag] + [0] * (length - 1), False), "mean", 0, False)


class PoisonModel:
    """Echoes each item's tag; raises whenever a forward holds a poison tag (or always, when broken)."""

    def __init__(self, poison=(), broken: bool = False, error=IndexError):
        self.poison, self.broken, self.error = set(poison), broken, error
        self.forwards: list[list[int]] = []

    def __call__(self, items):
        tags = [item.tokens.ids[0] for item in items]
        self.forwards.append(tags)
        if self.broken or self.poison & set(tags):
            raise self.error("index out of range in self")
        return np.array([[tag] for tag in tags], dtype=np.float32)


def _queue(model, **overrides) -> BatchQueue:
    options = {"max_batch_tokens": 10_000, "max_batch_size": 64, "batch_wait_ms": 20, "max_queue_items": 10_000}
    return BatchQueue(model, **{**options, **overrides})


async def test_a_poison_item_fails_only_its_own_request_in_a_shared_forward():
    model = PoisonModel(poison={7})
    queue = _queue(model)
    queue.start()
    outcomes = await asyncio.gather(
        queue.submit([_item(1), _item(2)]),
        queue.submit([_item(6), _item(7)]),
        queue.submit([_item(3)]),
        queue.submit([_item(8), _item(7), _item(9)], return_exceptions=True),
        return_exceptions=True,
    )
    assert sorted(model.forwards[0]) == [1, 2, 3, 6, 7, 7, 8, 9]  # all shared the failing forward
    assert [int(v[0]) for v in outcomes[0]] == [1, 2] and int(outcomes[2][0][0]) == 3
    assert isinstance(outcomes[1], ItemFailed) and isinstance(outcomes[1].cause, IndexError)
    assert "index out of range" in str(outcomes[1])
    eight, seven, nine = outcomes[3]
    assert int(eight[0]) == 8 and int(nine[0]) == 9 and isinstance(seven, ItemFailed)
    # Bisection: far fewer forwards than one per item, and every good item was embedded.
    assert len(model.forwards) < 2 * 8
    await queue.close()


@pytest.mark.parametrize("probe", [True, False])
async def test_a_lone_poison_item_is_told_from_a_broken_model(probe):
    model = PoisonModel(poison={7})
    queue = _queue(model)
    if probe:
        queue.probe_item = _item(1)
    queue.start()
    with pytest.raises((IndexError, ItemFailed)) as info:
        await queue.submit([_item(7)])
    # With a known-good item the model is shown to work, so the item is at fault; without one, nothing
    # shows the model works, and the failure stays the server's.
    assert isinstance(info.value, ItemFailed) == probe
    assert int((await queue.submit([_item(5)]))[0][0]) == 5
    assert isinstance(queue.probe_item, BatchItem)  # refreshed by every successful forward
    await queue.close()


@pytest.mark.parametrize("error", [RuntimeError, MemoryError])
async def test_a_broken_model_or_exhausted_memory_is_the_servers_fault(error):
    model = PoisonModel(broken=True, error=error)
    queue = _queue(model)
    queue.probe_item = _item(1)
    queue.start()
    outcomes = await asyncio.gather(*(queue.submit([_item(10 + i)]) for i in range(16)), return_exceptions=True)
    assert all(type(o) is error for o in outcomes)  # not ItemFailed: no input is to blame
    if error is RuntimeError:
        assert len(model.forwards) <= 4 + 1 + 1  # log2(16) halvings, one lone item, one probe; then stop
    await queue.close()


class _PoisonEmbed:
    """Wraps a backend's embed: raises like a model indexing past its table when a row holds the poison token."""

    def __init__(self, backend, poison_id: int):
        self.real, self.poison_id, self.forwards = backend.embed, poison_id, []

    def __call__(self, items):
        self.forwards.append(len(items))
        if any(self.poison_id in item.tokens.ids for item in items):
            raise IndexError("index out of range in self")
        return self.real(items)


@pytest.fixture
def settings(tmp_path, tiny_bert_dir):
    # A long wait, so that the concurrent requests below surely share one forward.
    return Settings(model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", batch_wait_ms=500)


async def _services(settings, backend) -> Services:
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, backend)
    assert services.pipeline is not None, services.startup_error
    return services


async def _embed(services, specs, **options):
    parsed = parse_specs(specs, "nb201", 200_000)
    return await services.pipeline.embed(parsed, RenderOptions(), EmbedOptions(**options))


async def test_in_the_pipeline_only_the_poisoned_request_fails(settings, tiny_bert, monkeypatch):
    poison_id = tiny_bert.tokenizer.convert_tokens_to_ids("poison")
    fake = _PoisonEmbed(tiny_bert, poison_id)
    monkeypatch.setattr(tiny_bert, "embed", fake)
    services = await _services(settings, tiny_bert)
    fake.forwards.clear()
    outcomes = await asyncio.gather(
        _embed(services, [CELLS[0], {"code": "x = poison(x)"}, CELLS[1]]),
        _embed(services, [CELLS[2]]),
        _embed(services, [{"code": "y = conv(y)"}, CELLS[3]]),
        _embed(services, [{"code": "x = poison(x)"}]),  # the same poison again: shares its flight and its fate
        return_exceptions=True,
    )
    assert fake.forwards[0] == 6  # every miss of every request was in the failing forward
    assert isinstance(outcomes[0], InvalidSpecs) and [e.index for e in outcomes[0].errors] == [1]
    assert "the model could not embed this item (IndexError" in outcomes[0].errors[0].reason
    assert isinstance(outcomes[3], InvalidSpecs) and [e.index for e in outcomes[3].errors] == [0]
    assert [i.source for i in outcomes[1].items] == ["computed"]
    assert [i.source for i in outcomes[2].items] == ["computed", "computed"]
    # The poisoned request's good items were embedded and kept.
    again = await _embed(services, [CELLS[0], CELLS[1]])
    assert [i.source for i in again.items] == ["memory", "memory"]
    await shutdown(services)


# --- tokenisation: exact, and bounded by what is kept ------------------------------------------------
class TokenizerSpy:
    """Counts the characters handed to the tokenizer; everything else goes to the real one."""

    def __init__(self, real):
        self.real, self.chars = real, 0

    def __call__(self, texts, *args, **kwargs):
        self.chars += sum(map(len, texts)) if isinstance(texts, list) else len(texts)
        return self.real(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _reference(tokenizer, text: str, max_length: int) -> tuple[list[int], bool]:
    """What the tokenizer itself keeps of the full text, and whether the full text is longer."""
    full = tokenizer(text, return_attention_mask=False)["input_ids"]
    kept = tokenizer(text, truncation=True, max_length=max_length, return_attention_mask=False)["input_ids"]
    return kept, len(full) > max_length


def _assert_exact(backend, texts, max_length):
    for text, got in zip(texts, backend.tokenize(texts, max_length)):
        kept, truncated = _reference(backend.tokenizer, text, max_length)
        assert (got.ids, got.truncated) == (kept, truncated), (max_length, text[:60])
        assert got.n_tokens == min(len(kept), max_length)


@pytest.mark.parametrize("max_length", [3, 4, 16, 64, 256])
def test_truncated_and_n_tokens_are_exact_around_the_limit(tiny_bert, monkeypatch, max_length):
    spy = TokenizerSpy(tiny_bert.tokenizer)
    monkeypatch.setattr(tiny_bert, "tokenizer", spy)
    keep = max_length - 2
    words = ["x", "y", "pool", "return", "self"]  # one token each
    for n_words in range(max(1, keep - 2), keep + 3):
        # Wide whitespace makes the text longer than the first prefix, so the prefix path decides.
        texts = [gap.join(words[i % 5] for i in range(n_words)) for gap in (" " * 40, "\n" + " " * 39, "\t\n")]
        _assert_exact(tiny_bert, texts, max_length)
        assert all(t.truncated == (n_words > keep) for t in tiny_bert.tokenize(texts, max_length))
    texts = [CODE_LINE * n for n in range(1, 12)]  # every length a line apart, around small limits
    _assert_exact(tiny_bert, texts, max_length)
    # Truncated code is tokenised only as far as needed, not in full.
    spy.chars = 0
    tiny_bert.tokenize([CODE_LINE * 400], max_length)
    assert spy.chars < len(CODE_LINE * 400)


def test_a_200k_character_text_is_exact_and_tokenised_only_as_far_as_needed(tiny_bert, monkeypatch):
    spy = TokenizerSpy(tiny_bert.tokenizer)
    monkeypatch.setattr(tiny_bert, "tokenizer", spy)
    for max_length in (3, 128, 256):
        spy.chars = 0
        got = tiny_bert.tokenize([BIG_CODE] * 4, max_length)
        work = spy.chars
        kept, truncated = _reference(tiny_bert.tokenizer, BIG_CODE, max_length)
        assert all((t.ids, t.truncated, t.n_tokens) == (kept, truncated, max_length) for t in got)
        assert truncated
        # Work per item is bounded by what is kept (old code tokenised all 200,000 characters, twice).
        assert work <= 4 * (16 * max_length + 64)


def _random_texts(seed: int, count: int):
    rng = random.Random(seed)
    words = ["x", "conv", "(x)", "self.edge_0_1", "=", "+", "nn.Conv2d(16,", "16);", "é", "naïve", "日本語", "#"]
    words += ["\u00a0", "'s", "a" * 150, "1234567", "!!", "[CLS]", "[SEP]", "<s>", "});", "x;\n"]
    gaps = [" ", "  ", "\n", "\n    ", "\t", " \n ", "        ", "\r\n"]
    for _ in range(count):
        max_length = rng.choice([3, 4, 5, 8, 17, 32, 64, 128, 256])
        parts = []
        for _ in range(rng.randint(1, 3 * max_length)):
            parts += [rng.choice(words), rng.choice(gaps) * rng.choice([1, 1, 1, 5, 40])]
        text = "".join(parts)
        yield (text.strip() or "x") if rng.random() < 0.3 else text, max_length


def test_prefix_tokenisation_matches_the_full_text_on_random_code_like_texts(tiny_bert):
    for text, max_length in _random_texts(0, 150):
        _assert_exact(tiny_bert, [text], max_length)


def test_prefix_tokenisation_is_exact_for_a_byte_level_bpe_with_a_bos_token(tiny_bert):
    """A second tokenizer family (GPT-2 style pre-tokenisation, a BOS-only template) built in place."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator([BIG_CODE[:5000]], trainer)
    bos = ("<s>", raw.token_to_id("<s>"))
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    identity = ModelIdentity("bpe", "r", "float32", 3, 1 << 20, 32, num_special_tokens=1)
    backend = TransformerBackend(tokenizer, tiny_bert.model, identity, torch.device("cpu"))
    assert backend._prefix_ok
    for text, max_length in _random_texts(1, 150):
        _assert_exact(backend, [text], max_length)
    _assert_exact(backend, [BIG_CODE], 256)


# --- a huge request does not hold up a tiny one -------------------------------------------------------
async def test_a_huge_request_does_not_hold_up_a_tiny_one(tmp_path, tiny_bert_dir, tiny_bert, monkeypatch):
    """8 code specs of 200k characters need 4 forwards of 2; a tiny request that arrives during the first
    runs in the next forward and completes while the huge one still has forwards to go."""
    real = tiny_bert.embed
    big_started, release, tiny_done = threading.Event(), threading.Event(), threading.Event()
    forwards: list[str] = []

    def gated(items):
        kind = "big" if items[0].tokens.n_tokens == tiny_bert.identity.max_positions else "tiny"
        if kind == "big" and forwards:
            tiny_done.wait(10)  # later forwards of the huge request: the tiny request must be able to finish
        forwards.append(kind)
        if kind == "big" and len(forwards) == 1:
            big_started.set()
            release.wait(30)  # hold the first forward until the tiny request is queued behind it
        return real(items)

    settings = Settings(
        model=str(tiny_bert_dir), data_dir=tmp_path, device="cpu", batch_wait_ms=1, max_batch_tokens=512
    )
    services = await _services(settings, tiny_bert)
    monkeypatch.setattr(services.queue.replicas[0], "embed_fn", gated)
    finished: list[str] = []

    big = asyncio.create_task(_embed(services, [{"code": BIG_CODE[:199_990] + f"\n# {i}"} for i in range(8)]))
    big.add_done_callback(lambda _: finished.append("big"))
    assert await asyncio.to_thread(big_started.wait, 60)
    tiny = asyncio.create_task(_embed(services, [{"code": "y = pool(y)"}]))
    tiny.add_done_callback(lambda _: (finished.append("tiny"), tiny_done.set()))
    for _ in range(3000):  # until the tiny item waits in the queue beside the 8 huge ones
        if services.queue.depth >= 9:
            break
        await asyncio.sleep(0.01)
    release.set()
    big_outcome, tiny_outcome = await asyncio.gather(big, tiny)
    assert forwards.count("big") == 4 and forwards.count("tiny") == 1
    assert forwards.index("tiny") < 4  # it ran before the huge request's last forward ...
    assert finished == ["tiny", "big"]  # ... and its request completed first
    assert all(i.record.truncated and i.record.n_tokens == 256 for i in big_outcome.items)
    assert tiny_outcome.items[0].source == "computed"
    await shutdown(services)


def test_the_whole_text_fallback_is_exact_too(tiny_bert, monkeypatch):
    """Tokenizers without offsets or a plain special-token template truncate inside the tokenizer, under its lock."""
    monkeypatch.setattr(tiny_bert, "_prefix_ok", False)
    for text, max_length in _random_texts(2, 40):
        _assert_exact(tiny_bert, [text], max_length)
    _assert_exact(tiny_bert, [BIG_CODE[:20_000], "x = 1"] * 9, 64)  # more texts than one locked chunk
