"""The contract every search space keeps, checked on a sample of its architectures.

Used by each space's own test module and by the parametrised test over all registered spaces:
round trip through the spelling, valid samples and mutations, canonical representatives that
keep the class, and rendered code that really builds and runs a forward pass in PyTorch.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from colecache_client.spaces.base import OpGraph, SearchSpace

RENDER_NAMESPACE_IMPORTS = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def build_rendered(space: SearchSpace, arch, *, primitives: str = "exclude_helper", context: str = "none"):
    """exec the rendered text (with helpers defined when they are only referenced), build, return (module, inputs)."""
    import torch

    code = space.render(arch, primitives=primitives, context=context)
    namespace: dict = {}
    exec(RENDER_NAMESPACE_IMPORTS, namespace)
    if primitives == "exclude_helper":
        exec(space.helper_source(), namespace)
    exec(code, namespace)
    expression, shape = space.example_call(arch, context)
    module = eval(expression, namespace)
    torch.manual_seed(0)
    if shape and isinstance(shape[0], (tuple, list)):  # several inputs (e.g. a DARTS cell's two states)
        return module, tuple(torch.randn(*s) for s in shape)
    return module, (torch.randn(*shape),)


def run_rendered(space: SearchSpace, arch, **options):
    """The output tensor of one forward pass of the rendered module (eval mode, no grad)."""
    import torch

    module, inputs = build_rendered(space, arch, **options)
    module.eval()
    with torch.no_grad():
        out = module(*inputs)
    assert torch.isfinite(out).all(), f"non-finite output for {space.to_string(arch)}"
    return out


def check_space_contract(space: SearchSpace, n: int = 25, seed: int = 0, forward: int = 6) -> None:
    """Assert the space's contract on `n` sampled architectures; run `forward` of them in torch per variant."""
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    for arch in archs:
        text = space.to_string(arch)
        assert space.parse(text) == arch, f"round trip failed for {text}"
        assert space.parse(arch) == arch
        rep = space.canonical_arch(arch)
        assert space.parse(space.to_string(rep)) == rep, f"representative of {text} is not a valid architecture"
        assert space.canonical(rep) == space.canonical(arch), f"representative left the class of {text}"
        assert space.canonical_arch(rep) == rep, f"representative of {text} is not a fixed point"
        for edits in (1, 2):
            child = space.mutate(arch, rng, edits)
            assert space.parse(space.to_string(child)) == child
            assert child != arch
        for kind in space.encodings:
            vectors = {len(space.encode(a, kind)) for a in archs[:5]}
            assert len(vectors) == 1, f"encoding {kind} has varying length"
        for neighbour in space.neighbours(arch)[:5]:
            assert space.parse(space.to_string(neighbour)) == neighbour
        if space.has_op_graph():
            graph = space.op_graph(arch)
            assert isinstance(graph, OpGraph) and graph.ops, f"op graph of {text} is empty"
            assert all(0 <= s < len(graph.ops) and 0 <= t < len(graph.ops) for s, t in graph.edges)
            assert space.op_graph(space.parse(text)) == graph, f"op graph of {text} is not a function of the arch"
    if space.has_op_graph():  # a graph head can only tell apart what the graphs tell apart
        assert len({space.op_graph(a) for a in archs}) > 1, "every sampled architecture has the same op graph"
    for arch in archs[:forward]:
        for primitives in space.render_choices.get("primitives", ("exclude_helper",)):
            for context in space.render_choices.get("context", ("none",)):
                run_rendered(space, arch, primitives=primitives, context=context)
    if space.proxy_network() is not None:
        for arch in archs[:2]:
            check_proxy_network(space, arch)


def check_proxy_network(space: SearchSpace, arch) -> None:
    """The network zero-cost proxies score builds from the rendered code and maps inputs to class logits."""
    import torch

    network = space.proxy_network()
    options = dict(network.render_options)
    namespace: dict = {}
    exec(RENDER_NAMESPACE_IMPORTS, namespace)
    if options.get("primitives", "exclude_helper") == "exclude_helper":
        exec(space.helper_source(), namespace)
    exec(space.render(space.canonical_arch(arch), **options), namespace)
    module = eval(network.constructor, namespace).eval()
    with torch.no_grad():
        out = module(torch.randn(2, *network.input_shape))
    assert tuple(out.shape) == (2, network.num_classes), f"proxy network of {space.to_string(arch)}: {out.shape}"


def naslib_subset(filename: str) -> Path | None:
    """A NASLib subset file (e.g. zc_nasbench101.json) under $COLECACHE_NB201_DATA or ../shared/data/nb201."""
    roots = [os.environ.get("COLECACHE_NB201_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201"]
    for root in roots:
        if root and (Path(root) / "extra_naslib_zc_subsets" / filename).is_file():
            return Path(root) / "extra_naslib_zc_subsets" / filename
    return None


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny forward passes are dominated by thread start-up and contention; one thread keeps them fast."""
    try:
        import torch
    except ImportError:  # the pure-Python tests still run
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pip_install_package(files: dict[str, str], folder: Path) -> str:
    """Write a package's files (dedented) under `folder`, pip-install it into `folder/site` (no deps, no build
    isolation) and return a PYTHONPATH that puts it first: a real install, as a user would make one."""
    source, target = folder / "pkg-src", folder / "site"
    for relative, text in files.items():
        path = source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, source],
        check=True,
        capture_output=True,
    )
    return os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
