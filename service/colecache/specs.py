"""Request specs -> typed architecture or code specs; every error names the item and the reason."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from colecache_client.spaces import SpecError, get_space


@dataclass(frozen=True, slots=True)
class ArchSpec:
    """An architecture of a registered search space (rendered to code by the server)."""

    space: str
    arch: Hashable


@dataclass(frozen=True, slots=True)
class CodeSpec:
    """Code the client rendered itself; embedded verbatim, so any architecture can be embedded."""

    code: str


Spec = ArchSpec | CodeSpec


@dataclass(frozen=True, slots=True)
class ItemError:
    index: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason}


class InvalidSpecs(ValueError):
    """One or more items of a request are invalid; carries all of them, not only the first."""

    def __init__(self, errors: Sequence[ItemError]):
        self.errors = list(errors)
        shown = "; ".join(f"item {e.index}: {e.reason}" for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} invalid spec(s): {shown}{more}")


def code_text_problem(code: Any, max_code_chars: int) -> str | None:
    """Why `code` cannot be embedded verbatim, or None: one rule for `{"code": ...}` specs and /v1/embeddings inputs."""
    if not isinstance(code, str) or not code.strip():
        return "must be a non-empty string (not only whitespace)"
    if len(code) > max_code_chars:
        return f"is {len(code)} characters, over the limit of {max_code_chars}"
    return None


def _parse_arch(space_name: str, value: Any) -> Hashable:
    """The space's parser; anything it raises on bad input (a plugin's TypeError too) becomes a SpecError."""
    space = get_space(space_name)
    try:
        return space.parse(value)
    except SpecError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise SpecError(f"not a valid {space_name} architecture: {type(exc).__name__}: {exc}") from None


def parse_spec(value: Any, default_space: str, max_code_chars: int) -> Spec:
    """One spec: `default_space`'s own spelling (string, list or object), `{"arch": .., "space": ..}` or `{"code": ..}`.

    Raises SpecError naming the reason; the space's parser validates the architecture."""
    if isinstance(value, dict):
        if "code" in value:
            extra = set(value) - {"code"}
            if extra:
                raise SpecError(f"a code spec takes only 'code', got extra field(s) {sorted(extra)}")
            code = value["code"]
            problem = code_text_problem(code, max_code_chars)
            if problem:
                raise SpecError(f"'code' {problem}")
            return CodeSpec(code)
        if "arch" in value:
            extra = set(value) - {"arch", "space"}
            if extra:
                raise SpecError(f"an arch spec takes 'arch' and 'space', got extra field(s) {sorted(extra)}")
            space_name = value.get("space", default_space)
            if not isinstance(space_name, str):
                raise SpecError("'space' must be a string")
            return ArchSpec(space_name, _parse_arch(space_name, value["arch"]))
        # Spaces spelled as JSON objects (graph, einspace, nb101's {"matrix", "ops"}) can be sent bare.
        try:
            return ArchSpec(default_space, _parse_arch(default_space, value))
        except SpecError as exc:
            if "dict" not in str(exc):  # the space read the object and found it invalid: its reason is the answer
                raise
            raise SpecError(
                f"{exc} (an object spec is {{'arch': ..., 'space': ...}}, {{'code': ...}} "
                f"or an architecture of search space {default_space!r})"
            ) from None
    if isinstance(value, (str, list)):
        return ArchSpec(default_space, _parse_arch(default_space, value))
    raise SpecError(f"a spec is a string, a list or an object, got {type(value).__name__}")


def parse_specs(values: Sequence[Any], default_space: str, max_code_chars: int) -> list[Spec]:
    """Parse a batch; raise InvalidSpecs listing every bad item, or return specs in request order."""
    specs: list[Spec] = []
    errors: list[ItemError] = []
    for index, value in enumerate(values):
        try:
            specs.append(parse_spec(value, default_space, max_code_chars))
        except SpecError as exc:
            errors.append(ItemError(index, str(exc)))
    if errors:
        raise InvalidSpecs(errors)
    return specs
