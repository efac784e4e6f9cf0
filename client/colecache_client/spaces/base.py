"""What every search space offers, so server, client and benchmarks treat them alike."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

Arch = TypeVar("Arch", bound=Hashable)


class SpecError(ValueError):
    """An architecture spec that cannot be parsed or is not valid in its space.

    The message names the offending token so a 4xx answer can be read without the docs.
    """


class SearchSpace(ABC, Generic[Arch]):
    """Parse, validate, canonicalise, sample, mutate and encode one family of architectures."""

    name: str

    @abstractmethod
    def parse(self, value: Any) -> Arch:
        """Turn a user-supplied spec (string, list, ...) into a validated architecture.

        Raises SpecError naming the bad token."""

    @abstractmethod
    def to_string(self, arch: Arch) -> str:
        """The space's own textual spelling; `parse(to_string(a)) == a`."""

    @abstractmethod
    def canonical(self, arch: Arch) -> str:
        """A string equal for all architectures that compute the same function."""

    @abstractmethod
    def sample(self, rng: random.Random) -> Arch:
        """One architecture drawn uniformly from the space."""

    @abstractmethod
    def mutate(self, arch: Arch, rng: random.Random, edits: int = 1) -> Arch:
        """A random architecture exactly `edits` elementary edits away from `arch`."""

    @abstractmethod
    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every architecture one elementary edit away, in a deterministic order."""

    @abstractmethod
    def encode(self, arch: Arch, kind: str) -> list[float]:
        """A fixed-length structural feature vector (e.g. 'onehot', 'path')."""

    @property
    @abstractmethod
    def encodings(self) -> tuple[str, ...]:
        """Names accepted by `encode`."""

    def all_cells(self) -> Iterator[Arch]:
        """Every architecture, for spaces small enough to enumerate (whole-space precompute)."""
        raise NotImplementedError(f"search space {self.name!r} cannot be enumerated")

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
