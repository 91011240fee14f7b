"""Hypothesis strategies that break a valid JSON document at a random place: drop a member or an
item, null it, give it another JSON type, duplicate it (an array item, or an object key written
twice in the raw text) or make it oversized."""

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Path = tuple[str | int, ...]
KINDS = ("drop", "null", "retype", "duplicate", "oversize")


class DuplicatedKeys(dict[str, Any]):
    """An object whose text repeats some of its keys: `{"a": 1, "a": <again>}`."""

    def __init__(self, base: dict[str, Any], again: dict[str, Any]) -> None:
        super().__init__(base)
        self.again = again


class RawNumber(str):
    """A number written as its digits, longer than Python's json module would write or read."""


def dumps(value: Any) -> bytes:
    """JSON text of `value`, writing a DuplicatedKeys object's repeated keys twice."""
    return _text(value).encode()


def _text(value: Any) -> str:
    if isinstance(value, RawNumber):
        return str.__str__(value)
    if isinstance(value, DuplicatedKeys):
        pairs = [*value.items(), *value.again.items()]
        return "{" + ",".join(f"{json.dumps(k)}:{_text(v)}" for k, v in pairs) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return json.dumps(value)


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every member and item below the root, depth first."""
    children: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def _parent(document: Any, path: Path) -> Any:
    node = document
    for key in path[:-1]:
        node = node[key]
    return node


# One value of each JSON type; retyping picks one whose type differs from the original's.
OTHER_TYPES: tuple[Any, ...] = (0, -1, 2.5, "", "x", True, False, [], {}, ["x"], {"x": "y"})


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _oversized(value: Any, size: int) -> Any:
    if isinstance(value, list):
        item = value[0] if value else "x"
        # Many items, but never much more text than the body limit (the item may be huge already).
        count = min(size, 5000, max(1, 2_000_000 // len(dumps(item))))
        return [copy.deepcopy(item) for _ in range(count)]
    if isinstance(value, dict):
        return {**value, **{f"extra{i}": "x" for i in range(min(size, 5000))}}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 10**size if size < 400 else RawNumber("9" * min(size, 100_000))
    return "x" * size


@dataclass(frozen=True)
class Mutation:
    kind: str
    path: Path
    detail: Any = None

    def __str__(self) -> str:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        shown = repr(self.detail)[:40] if self.detail is not None else ""
        return f"{self.kind} {where} {shown}".strip()


def apply(document: Any, mutation: Mutation) -> Any:
    """A mutated copy of `document` (the original is left as it was)."""
    changed = copy.deepcopy(document)
    parent = _parent(changed, mutation.path)
    key = mutation.path[-1]
    if mutation.kind == "drop":
        del parent[key]
    elif mutation.kind == "null":
        parent[key] = None
    elif mutation.kind == "retype":
        parent[key] = copy.deepcopy(mutation.detail)
    elif mutation.kind == "oversize":
        parent[key] = _oversized(parent[key], mutation.detail)
    elif isinstance(parent, list):
        index = int(key)
        parent.insert(index, copy.deepcopy(parent[index]))
    else:
        again = {str(key): mutation.detail if mutation.detail is not None else parent[key]}
        replacement = DuplicatedKeys(parent, again)
        if len(mutation.path) == 1:
            return replacement
        _parent(changed, mutation.path[:-1])[mutation.path[-2]] = replacement
    return changed


@st.composite
def mutations(draw: st.DrawFn, document: Any) -> Mutation:
    """One mutation at one of the document's paths."""
    path = draw(st.sampled_from(list(paths(document))))
    kind = draw(st.sampled_from(KINDS))
    value = _parent(document, path)[path[-1]]
    if kind == "retype":
        others = [v for v in OTHER_TYPES if _json_type(v) != _json_type(value)]
        return Mutation(kind, path, draw(st.sampled_from(others)))
    if kind == "oversize":
        return Mutation(kind, path, draw(st.sampled_from([300, 5_000, 200_000, 2_000_000])))
    if kind == "duplicate" and not isinstance(path[-1], int):
        return Mutation(kind, path, draw(st.sampled_from([None, *OTHER_TYPES])))
    return Mutation(kind, path)


@dataclass(frozen=True)
class Mutated:
    """A broken document as JSON text, shown in Hypothesis's reports by what was done to it."""

    body: bytes
    done: tuple[Mutation, ...]

    def __repr__(self) -> str:
        return "; ".join(map(str, self.done))


@st.composite
def mutated(draw: st.DrawFn, document: Any, max_mutations: int = 3) -> Mutated:
    """The document broken by one to `max_mutations` mutations."""
    done: list[Mutation] = []
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        if not list(paths(document)):
            break
        mutation = draw(mutations(document))
        document = apply(document, mutation)
        done.append(mutation)
    return Mutated(dumps(document), tuple(done))
