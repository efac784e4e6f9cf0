"""NB201 cell -> PyTorch source text, in every COLE variant.

The text is what the frozen language model reads, so every byte matters: output is a pure
function of (cell, options), and any change to the templates below must bump
RENDERER_VERSION, which is part of every cache key.
"""

from __future__ import annotations

from colecache_client.spaces.nb201 import N_NODES, NB201Cell

from .options import Dataset, RenderOptions

RENDERER_VERSION = "nb201-pytorch/1"

_DATASETS: dict[Dataset, dict[str, str | int]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "classes": 10,
        "images": "32x32 RGB images",
        "train": "50,000 training images (train and validation splits together)",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "classes": 100,
        "images": "32x32 RGB images",
        "train": "50,000 training images",
    },
    "imagenet16-120": {
        "title": "ImageNet16-120",
        "classes": 120,
        "images": "16x16 RGB images (ImageNet downsampled, first 120 classes)",
        "train": "about 151,700 training images",
    },
}

_HELPER_CLASS = """\
class ReLUConvBN(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding):
        super().__init__()
        self.ops = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        return self.ops(x)"""

_RESIDUAL_BLOCK = '''\
class ResidualReduction(nn.Module):
    """Halves the resolution and changes the width between stages."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv_a = {conv_a}
        self.conv_b = {conv_b}
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.shortcut(x) + self.conv_b(self.conv_a(x))'''

_NETWORK_CLASS = '''\
class Network(nn.Module):
    """NAS-Bench-201 macro skeleton: stem, three stages of five cells, classifier."""

    def __init__(self, channels=16, cells_per_stage=5, num_classes={classes}):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(width, width * 2))
                width *= 2
            layers.extend(Cell(width) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, images):
        x = self.head(self.cells(self.stem(images)))
        return self.classifier(self.pool(x).flatten(1))'''

_CONTEXT_DOCSTRING = '''\
"""Search cell for {title} image classification ({classes} classes, {images}).

Network: a 3x3 convolution stem with 16 channels, then three stages of five copies of this
Cell at 16, 32 and 64 channels; a residual block between stages halves the resolution and
doubles the width; the classifier is BatchNorm, ReLU, global average pooling and a linear
layer to {classes} classes. Every op inside the cell keeps the resolution and the width.

Training on {train}: 200 epochs of SGD with Nesterov momentum 0.9,
weight decay 5e-4, batch size 256, learning rate 0.1 with cosine annealing to 0, random
crop and horizontal flip.
"""'''


def _relu_conv_bn(c_in: str, c_out: str, kernel: int, stride: int, primitives: str) -> str:
    """A pre-activation conv, spelled inline or through the ReLUConvBN helper."""
    padding = kernel // 2
    if primitives == "inline":
        return (
            "nn.Sequential(nn.ReLU(inplace=False), "
            f"nn.Conv2d({c_in}, {c_out}, kernel_size={kernel}, stride={stride}, padding={padding}, bias=False), "
            f"nn.BatchNorm2d({c_out}))"
        )
    return f"ReLUConvBN({c_in}, {c_out}, kernel_size={kernel}, stride={stride}, padding={padding})"


def _op_module(op: str, primitives: str) -> str | None:
    """The module expression for one edge, or None when the edge needs no module."""
    if op in ("none", "skip_connect"):
        return None
    if op == "avg_pool_3x3":
        return "nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)"
    kernel = 3 if op == "nor_conv_3x3" else 1
    return _relu_conv_bn("channels", "channels", kernel, 1, primitives)


def render_cell_class(cell: NB201Cell, primitives: str) -> str:
    """The `Cell(nn.Module)` definition: one attribute per non-trivial edge, one sum per node."""
    lines = [
        "class Cell(nn.Module):",
        "    def __init__(self, channels):",
        "        super().__init__()",
    ]
    for source, target, op in cell.edges():
        module = _op_module(op, primitives)
        if module is not None:
            lines.append(f"        self.edge_{source}_{target} = {module}")
    lines += ["", "    def forward(self, x0):"]
    for target in range(1, N_NODES):
        terms = []
        for source, op in cell.incoming(target):
            if op == "none":
                continue
            terms.append(f"x{source}" if op == "skip_connect" else f"self.edge_{source}_{target}(x{source})")
        rhs = " + ".join(terms) if terms else "torch.zeros_like(x0)"
        lines.append(f"        x{target} = {rhs}")
    lines.append(f"        return x{N_NODES - 1}")
    return "\n".join(lines)


def render_nb201(cell: NB201Cell, options: RenderOptions) -> str:
    """The full text for one cell under `options` (primitives x context x dataset)."""
    parts: list[str] = []
    facts = _DATASETS[options.dataset]
    if options.context == "comment":
        parts.append(_CONTEXT_DOCSTRING.format(**facts))
    if options.primitives == "helper":
        parts.append(_HELPER_CLASS)
    if options.context == "backbone":
        parts.append(
            _RESIDUAL_BLOCK.format(
                conv_a=_relu_conv_bn("in_channels", "out_channels", 3, 2, options.primitives),
                conv_b=_relu_conv_bn("out_channels", "out_channels", 3, 1, options.primitives),
            )
        )
    parts.append(render_cell_class(cell, options.primitives))
    if options.context == "backbone":
        parts.append(_NETWORK_CLASS.format(classes=facts["classes"]))
    return "\n\n\n".join(parts) + "\n"
