"""Renderer: golden texts for every COLE variant, determinism, and the code actually runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from colecache.render import NB201_RENDERER_VERSION, RAW_CODE_VERSION, RenderOptions, render, representative
from colecache.specs import ArchSpec, CodeSpec, parse_spec
from colecache_client.spaces import get_space
from torch import nn

GOLDEN = Path(__file__).parent / "golden" / "render"
SPACE = get_space("nb201")
# Every op appears, node 2 has a `none` input, and node 3 mixes skip and modules.
CELL = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
VARIANTS = [(p, c) for p in ("inline", "helper", "exclude_helper") for c in ("none", "backbone", "comment")]


def _render(cell: str, **options) -> str:
    return render(ArchSpec("nb201", SPACE.parse(cell)), RenderOptions(**options)).code


@pytest.mark.parametrize(("primitives", "context"), VARIANTS)
def test_golden_texts(primitives, context):
    text = _render(CELL, primitives=primitives, context=context, dataset="cifar100")
    golden = GOLDEN / f"{primitives}-{context}.py.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "renderer output changed: review, bump RENDERER_VERSION, UPDATE_GOLDEN=1"


def test_dataset_only_matters_where_it_is_mentioned():
    assert _render(CELL, dataset="cifar10") == _render(CELL, dataset="imagenet16-120")
    comment = {d: _render(CELL, context="comment", dataset=d) for d in ("cifar10", "cifar100", "imagenet16-120")}
    assert "CIFAR-100 image classification (100 classes" in comment["cifar100"]
    assert "ImageNet16-120" in comment["imagenet16-120"] and "16x16" in comment["imagenet16-120"]
    assert len(set(comment.values())) == 3
    assert "num_classes=120" in _render(CELL, context="backbone", dataset="imagenet16-120")


def test_deterministic_and_versioned():
    spec = ArchSpec("nb201", SPACE.parse(CELL))
    first = render(spec, RenderOptions())
    assert first == render(spec, RenderOptions())
    assert first.renderer_version == NB201_RENDERER_VERSION
    assert render(CodeSpec("x = 1"), RenderOptions()).renderer_version == RAW_CODE_VERSION


def test_canonical_option_renders_the_class_representative():
    a = "|skip_connect~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
    b = "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
    assert _render(a) != _render(b)
    assert _render(a, canonical=True) == _render(b, canonical=True)
    rep = representative(SPACE.parse(a))
    assert rep.canonical() == SPACE.parse(a).canonical() and rep.to_string() == min(a, b)


class ReLUConvBN(nn.Module):
    """Stand-in for the helper that `exclude_helper` texts reference without defining."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding):
        super().__init__()
        self.ops = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        return self.ops(x)


def _exec(code: str) -> dict:
    namespace = {"torch": torch, "nn": nn, "ReLUConvBN": ReLUConvBN}
    exec(compile(code, "<rendered>", "exec"), namespace)  # the text is our own renderer's output
    return namespace


@pytest.mark.parametrize(("primitives", "context"), VARIANTS)
def test_rendered_code_runs(primitives, context):
    namespace = _exec(_render(CELL, primitives=primitives, context=context, dataset="cifar100"))
    cell = namespace["Cell"](4).eval()
    # One module per edge that is neither `none` nor `skip_connect`.
    assert len([n for n, _ in cell.named_children()]) == 4
    assert cell(torch.randn(2, 4, 8, 8)).shape == (2, 4, 8, 8)
    if context == "backbone":
        logits = namespace["Network"](num_classes=100).eval()(torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 100)


def test_rendered_cell_computes_the_dag():
    x = torch.randn(1, 2, 4, 4)
    all_skip = _exec(
        _render("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|")
    )
    assert torch.allclose(all_skip["Cell"](2)(x), 4 * x)  # x1 = x, x2 = 2x, x3 = x + x + 2x
    dead = _exec(_render("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    assert torch.equal(dead["Cell"](2)(x), torch.zeros_like(x))
    pool_then_skip = _exec(_render("|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"))
    expected = nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x)
    assert torch.allclose(pool_then_skip["Cell"](2)(x), expected)


def test_code_spec_is_verbatim_and_bounded():
    code = "class Net(nn.Module):\n    pass\n"
    assert render(parse_spec({"code": code}, "nb201", 1000), RenderOptions()).code == code
    with pytest.raises(ValueError, match="over the limit"):
        parse_spec({"code": "x" * 11}, "nb201", 10)
