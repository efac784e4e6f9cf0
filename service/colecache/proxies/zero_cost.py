"""Zero-cost proxies: scores of an untrained network that correlate with its trained accuracy.

Every proxy here needs no data: inputs are seeded synthetic images and labels are seeded random
classes (the data-free variants; NASLib computes the same scores on a real CIFAR batch, see
benchmarks/results/proxies.md for how the two compare). One call builds the network once and
runs two passes: synflow on a linearised float64 copy, and one synthetic batch whose forward and
backward feed naswot, jacov, snip and grad_norm.

Inputs (`ProxyInputs.kind`): `power_law` (the default) is noise whose Fourier amplitude falls as
1/f^1.5 with spatial frequency f, i.e. spatially correlated like natural images (whose amplitude
falls as about 1/f: Field 1987, "Relations between the statistics of natural images and the
response properties of cortical cells"), with a luminance field shared by the channels, each image
and channel standardised like a normalised dataset; `gaussian` is white N(0, 1) noise. Measured on
362 of NASLib's NB201 cells (benchmarks/results/proxy_inputs.md): naswot on 16 such images ranks with
CIFAR-10 accuracy at Spearman rho 0.797 (exponent 1: 0.775; 64 images: 0.813), as NASLib's NASWOT on a
real CIFAR-10 batch does (0.803), against 0.674 on 16 Gaussian images.

Sources (formulas, not code):
- synflow: Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving
  synaptic flow"; as a NAS proxy: Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS".
  Sum over conv/linear weights of |theta * dR/dtheta| with all weights made positive, an all-ones
  input and R the sum of the outputs (BatchNorm in eval mode, i.e. the identity at init).
- naswot: Mellor et al. 2021, "Neural Architecture Search without Training" (v2): log|det K| with
  K[i, j] = number of ReLUs on which inputs i and j agree (active or inactive).
- jacov: Mellor et al. 2020 (v1 of the same paper): -sum(log(l + k) + 1 / (l + k)) over the eigen-
  values l of the correlation matrix of the per-input Jacobians d(sum of outputs)/d(input), k = 1e-5.
- snip: Lee et al. 2019, "SNIP: single-shot network pruning": sum |theta * dL/dtheta| (conv/linear).
- grad_norm: Abdelfattah et al. 2021: sum over conv/linear weights of ||dL/dtheta||_2.
- params: trainable parameters; flops: 2 x multiply-adds of the conv and linear layers for one
  input (the convention of NAS-Bench-201's own FLOPs column and of thop), counted by hooks during
  the batch forward.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import DEFAULT_INPUT_KIND, INPUT_KINDS, PROXIES

POWER_LAW_EXPONENT = 1.5  # of 1 and 1.5, the better naswot rho on NASLib's NB201 cells (module docstring)


@dataclass(frozen=True)
class ProxyInputs:
    """What the proxies see: a batch of seeded synthetic inputs (`kind`, see the module docstring) and
    seeded random labels."""

    input_shape: tuple[int, ...]  # one input, channels first, e.g. (3, 32, 32)
    num_classes: int
    batch_size: int = 16
    seed: int = 0
    kind: str = DEFAULT_INPUT_KIND

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"unknown proxy input kind {self.kind!r}; known: {', '.join(INPUT_KINDS)}")

    def batch(self, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, *input_shape) float32 inputs drawn from `generator`."""
        shape = (self.batch_size, *self.input_shape)
        if self.kind == "gaussian" or math.prod(self.input_shape[1:]) < 2:
            return torch.randn(shape, generator=generator)  # no spatial extent: 1/f has no meaning
        return power_law_noise(shape, generator)


def power_law_noise(
    shape: tuple[int, ...], generator: torch.Generator, exponent: float = POWER_LAW_EXPONENT
) -> torch.Tensor:
    """1/f^exponent noise over the spatial axes of (batch, channels, *spatial) inputs, float32.

    White noise whose Fourier amplitudes are divided by the radial frequency (floored at one cycle per
    input) to the power `exponent`; a luminance field shared by all channels plus 0.3 x a field of each
    channel's own (colour channels of natural images are strongly correlated); then each image's channel
    standardised to mean 0 and std 1. ValueError when the spatial axes hold fewer than 2 elements."""
    batch, channels, *spatial = shape
    if math.prod(spatial) < 2:
        raise ValueError(f"power-law noise needs a spatial extent of 2 or more, got shape {shape}")
    axes = tuple(range(2, len(shape)))
    radius = torch.zeros(spatial)
    for axis, size in enumerate(spatial):
        view = [1] * len(spatial)
        view[axis] = size
        radius = radius + torch.fft.fftfreq(size).abs().view(view) ** 2
    amplitude = radius.sqrt().clamp(min=1.0 / max(spatial)) ** -exponent

    def field(n_channels: int) -> torch.Tensor:
        white = torch.randn((batch, n_channels, *spatial), generator=generator)
        return torch.fft.ifftn(torch.fft.fftn(white, dim=axes) * amplitude, dim=axes).real

    x = field(1) + 0.3 * field(channels)
    x = x - x.mean(dim=axes, keepdim=True)
    return (x / x.std(dim=axes, keepdim=True).clamp(min=1e-6)).float()


def _weighted_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))]


def _synflow(net: nn.Module, inputs: ProxyInputs) -> float:
    model = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    out = model(torch.ones((1, *inputs.input_shape), dtype=torch.float64))
    out.sum().backward()
    total = 0.0
    for layer in _weighted_layers(model):
        if layer.weight.grad is not None:
            total += float((layer.weight * layer.weight.grad).abs().sum().detach())
    return total


def _logdet_agreement(codes: torch.Tensor) -> float:
    """log|det K| where K[i, j] counts units on which rows i and j agree (codes are 0/1, float64)."""
    k = codes @ codes.T + (1 - codes) @ (1 - codes).T
    sign, logdet = np.linalg.slogdet(k.numpy())
    return float(logdet) if sign != 0 else float("-inf")


def _jacov(jacobians: torch.Tensor) -> float:
    flat = jacobians.reshape(jacobians.shape[0], -1).double().numpy()
    corr = np.corrcoef(flat)
    if not np.all(np.isfinite(corr)):
        return float("nan")
    eigenvalues = np.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-np.sum(np.log(eigenvalues + k) + 1.0 / (eigenvalues + k)))


def _layer_flops(module: nn.Module, output: torch.Tensor) -> float:
    """2 x multiply-adds of one conv / linear layer for one input (output shape includes the batch)."""
    per_output = module.weight[0].numel()  # in_channels / groups x kernel elements, or in_features
    return 2.0 * per_output * output[0].numel()


def compute_proxies(
    build: Callable[[], nn.Module], inputs: ProxyInputs, names: Sequence[str] = PROXIES
) -> dict[str, float]:
    """Every requested proxy of the network `build()` returns, for the given inputs.

    `build` is called once, under `torch.manual_seed(inputs.seed)` so the initial weights are
    reproducible. Returns raw values (no log scaling), `nan` where a score is undefined (e.g. a
    network whose output does not depend on its input). Raises whatever building or running the
    network raises (the caller names the item).
    """
    unknown = set(names) - set(PROXIES)
    if unknown:
        raise ValueError(f"unknown proxies {sorted(unknown)}; known: {', '.join(PROXIES)}")
    torch.manual_seed(inputs.seed)
    net = build()
    net.train()
    out: dict[str, float] = {}
    if "params" in names:
        out["params"] = float(sum(p.numel() for p in net.parameters() if p.requires_grad))
    if "synflow" in names:
        out["synflow"] = _synflow(net, inputs)
    if not {"flops", "naswot", "jacov", "snip", "grad_norm"} & set(names):
        return out

    generator = torch.Generator().manual_seed(inputs.seed + 1)
    x = inputs.batch(generator).requires_grad_(True)
    labels = torch.randint(0, inputs.num_classes, (inputs.batch_size,), generator=generator)
    codes: list[torch.Tensor] = []
    flops = [0.0]

    def record_relu(_module, _inp, output):
        codes.append((output.detach().reshape(output.shape[0], -1) > 0).double())

    def record_flops(module, _inp, output):
        flops[0] += _layer_flops(module, output)

    hooks = [m.register_forward_hook(record_relu) for m in net.modules() if isinstance(m, nn.ReLU)]
    hooks += [m.register_forward_hook(record_flops) for m in _weighted_layers(net)]
    try:
        net.zero_grad()
        logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    if "flops" in names:
        out["flops"] = flops[0]
    if "naswot" in names:
        out["naswot"] = _logdet_agreement(torch.cat(codes, dim=1)) if codes else float("nan")
    if "jacov" in names:
        # A cell whose every path is `none` cuts the input off: no Jacobian, an undefined score.
        (jac,) = torch.autograd.grad(logits.sum(), x, retain_graph=True, allow_unused=True)
        out["jacov"] = _jacov(jac) if jac is not None else float("nan")
    if {"snip", "grad_norm"} & set(names):
        nn.functional.cross_entropy(logits, labels).backward()
        layers = [m for m in _weighted_layers(net) if m.weight.grad is not None]
        if "snip" in names:
            out["snip"] = float(sum(float((m.weight.grad * m.weight.detach()).abs().sum()) for m in layers))
        if "grad_norm" in names:
            out["grad_norm"] = float(sum(float(m.weight.grad.norm()) for m in layers))
    return out
