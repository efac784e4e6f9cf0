"""What every search space offers, so server, client and benchmarks treat them alike.

A search space is one pluggable unit: parsing and validation, canonical form, sampling,
mutation, neighbours, structural encodings and rendering to PyTorch source text all live in
one class (pure Python: the SDK installs without torch). Spaces register through the
`colecache.spaces` entry-point group (see `colecache_client.spaces`), the built-in ones too.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

Arch = TypeVar("Arch", bound=Hashable)

PRIMITIVES = ("exclude_helper", "helper", "inline")
"""How ops are spelled: a helper class referenced but not defined (COLE's default), defined in the
text, or written inline from torch.nn layers."""


class SpecError(ValueError):
    """An architecture spec that cannot be parsed or is not valid in its space.

    The message names the offending token so a 4xx answer can be read without the docs.
    """


@dataclass(frozen=True)
class ProxyNetwork:
    """The full-size network a space's zero-cost proxies measure (see the service's `proxies` package).

    `render_options` render the architecture as code that defines it (exec'd with `torch`, `nn`
    and `F`, plus `helper_source()` when `primitives='exclude_helper'`); `constructor` builds it
    in that namespace; it takes a batch of `input_shape` tensors and returns `num_classes` logits.
    """

    render_options: Mapping[str, str] = field(default_factory=dict)
    constructor: str = "Network()"
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 10

    def describe(self) -> dict[str, Any]:
        return {
            "render_options": dict(sorted(self.render_options.items())),
            "constructor": self.constructor,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }


@dataclass(frozen=True)
class OpGraph:
    """An architecture as a directed graph with one op label per node: what graph heads (GIN) read.

    Ops sit on nodes; spaces that put ops on edges (NB201, DARTS) give each edge its own node, as
    graph predictors for those spaces do (BRP-NAS, Dudziak et al. 2020; NASLib's GIN). `edges` are
    (source, target) indices into `ops`. Labels are free strings (`'nor_conv_3x3'`, `'Conv2d(k=3)'`): a
    head one-hot encodes the labels it saw when fitted and pools any other into one "unseen" slot.

    Raises SpecError when the graph has no node or an edge names a node that does not exist.
    """

    ops: tuple[str, ...]
    edges: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(str(op) for op in self.ops))
        object.__setattr__(self, "edges", tuple((int(s), int(t)) for s, t in self.edges))
        if not self.ops:
            raise SpecError("an op graph needs at least one node")
        for source, target in self.edges:
            if not (0 <= source < len(self.ops) and 0 <= target < len(self.ops)):
                raise SpecError(f"op graph edge ({source}, {target}) names a node outside 0..{len(self.ops) - 1}")


class SearchSpace(ABC, Generic[Arch]):
    """Parse, validate, canonicalise, sample, mutate, encode and render one family of architectures.

    Subclasses set the class attributes and implement the abstract methods; architectures are
    immutable and hashable (frozen dataclasses or tuples), so they can key dicts and caches.
    """

    name: ClassVar[str]
    """Registry name, e.g. 'nb201'; what `{"space": NAME}` refers to."""

    renderer_version: ClassVar[str]
    """Version of `render`'s templates, part of every cache key: bump it on any change to the text."""

    encodings: ClassVar[tuple[str, ...]] = ()
    """Names accepted by `encode` (e.g. 'adjacency', 'path')."""

    default_encodings: ClassVar[tuple[str, ...]] = ()
    """Structural encodings a default study appends to the COLE features (a subset of `encodings`)."""

    render_choices: ClassVar[Mapping[str, tuple[str, ...]]] = {"primitives": PRIMITIVES, "context": ("none",)}
    """Values `render` accepts for each option; `/info` lists them and the server refuses others with 422."""

    description: ClassVar[str] = ""
    """One line for `/info`: what the space is and how its architectures are spelled."""

    # --- parse / print -----------------------------------------------------------------------
    @abstractmethod
    def parse(self, value: Any) -> Arch:
        """Turn a user-supplied spec (string, list, JSON object, or an Arch) into a validated architecture.

        Raises SpecError naming the bad token or item."""

    @abstractmethod
    def to_string(self, arch: Arch) -> str:
        """The space's own textual spelling; `parse(to_string(a)) == a`."""

    # --- identity ----------------------------------------------------------------------------
    @abstractmethod
    def canonical(self, arch: Arch) -> str:
        """A string equal for all architectures that compute the same function (isomorphic variants)."""

    def canonical_arch(self, arch: Arch) -> Arch:
        """The representative of `arch`'s class, rendered under `canonical: true`.

        Isomorphic architectures must map to the *same* representative (equal, so equal code and
        one cache key). The default parses nothing and returns `arch`: override it.
        """
        return arch

    # --- search moves ------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: random.Random) -> Arch:
        """One valid architecture drawn at random from the space."""

    @abstractmethod
    def mutate(self, arch: Arch, rng: random.Random, edits: int = 1) -> Arch:
        """A valid architecture `edits` elementary edits away from `arch` (different from it)."""

    @abstractmethod
    def neighbours(self, arch: Arch) -> list[Arch]:
        """Valid architectures one elementary edit away, in a deterministic order."""

    # --- features ----------------------------------------------------------------------------
    def encode(self, arch: Arch, kind: str) -> list[float]:
        """A fixed-length structural feature vector of encoding `kind` (one of `encodings`)."""
        raise ValueError(f"unknown encoding {kind!r} for {self.name} (expected one of {', '.join(self.encodings)})")

    def op_graph(self, arch: Arch) -> OpGraph | None:
        """`arch` as an op-labelled graph for graph heads (`surrogate.head.kind = 'gin_ensemble'`), or None
        when this space has no graph form (the server then refuses graph heads for it with 422)."""
        return None

    # --- code --------------------------------------------------------------------------------
    @abstractmethod
    def render(
        self, arch: Arch, *, primitives: str = "exclude_helper", context: str = "none", dataset: str = "cifar10"
    ) -> str:
        """PyTorch source text for `arch`: what the frozen language model reads.

        A pure function of its arguments. The text assumes `torch`, `torch.nn as nn` and
        `torch.nn.functional as F` are imported; with `primitives='exclude_helper'` it calls
        helper classes that `helper_source()` defines, with 'helper' it defines them itself.
        """

    def helper_source(self) -> str:
        """Python source defining every helper class that `exclude_helper` renders reference."""
        return ""

    def example_call(self, arch: Arch, context: str = "none") -> tuple[str, tuple]:
        """(expression that builds the rendered module, input shape) for a smoke forward pass.

        Evaluated in the namespace where the rendered text (and `helper_source()`) was exec'd;
        the module is called on `torch.randn(*shape)`, or on one tensor per shape when `shape` is a
        tuple of shapes (a DARTS cell takes two states). Tests use it to prove the code runs.
        """
        raise NotImplementedError(f"search space {self.name!r} gives no example call")

    def proxy_network(self) -> ProxyNetwork | None:
        """How to build the network zero-cost proxies score, or None when this space has none.

        Proxies run the rendered code, so a space offers them only when its code defines a whole
        trainable network (a backbone context) for every architecture it accepts."""
        return None

    def has_op_graph(self) -> bool:
        """Whether `op_graph` is implemented (graph heads need it)."""
        return type(self).op_graph is not SearchSpace.op_graph

    # --- enumeration and helpers -------------------------------------------------------------
    def all_cells(self) -> Iterator[Arch]:
        """Every architecture, for spaces small enough to enumerate (whole-space precompute)."""
        raise NotImplementedError(f"search space {self.name!r} cannot be enumerated")

    def check_render_options(self, **options: str) -> None:
        """SpecError naming the option and the accepted values when this space cannot render them."""
        for option, value in options.items():
            allowed = self.render_choices.get(option)
            if allowed is not None and value not in allowed:
                raise SpecError(
                    f"search space {self.name!r} cannot render {option}={value!r} (accepted: {', '.join(allowed)})"
                )

    def describe(self) -> dict[str, Any]:
        """What `/info` says about this space."""
        return {
            "name": self.name,
            "description": self.description,
            "renderer_version": self.renderer_version,
            "encodings": list(self.encodings),
            "default_encodings": list(self.default_encodings),
            "render_options": {k: list(v) for k, v in self.render_choices.items()},
            "enumerable": type(self).all_cells is not SearchSpace.all_cells,
            "op_graph": self.has_op_graph(),
            "proxy_network": None if (network := self.proxy_network()) is None else network.describe(),
        }

    def dedupe(self, archs: Iterable[Arch], seen: Iterable[str] = ()) -> list[Arch]:
        """Keep the first architecture of each canonical class, skipping classes in `seen`."""
        taken = set(seen)
        kept: list[Arch] = []
        for arch in archs:
            key = self.canonical(arch)
            if key not in taken:
                taken.add(key)
                kept.append(arch)
        return kept

    def parse_many(self, values: Sequence[Any]) -> list[Arch]:
        """Parse a batch, prefixing any error with the item index."""
        out = []
        for index, value in enumerate(values):
            try:
                out.append(self.parse(value))
            except SpecError as exc:
                raise SpecError(f"item {index}: {exc}") from None
        return out
