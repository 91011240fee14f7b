"""An attacker's audit of a published table: how far can each suppressed cell be narrowed down by
differencing the published relations (a total is the sum of its parts)?

Independent of how app/services/disclosure.py chooses its cells: it solves two linear programs
per suppressed cell (scipy's HiGHS), minimising and maximising the cell subject to every
published relation, with every cell a non-negative count. Two attackers:
- `exact`: knows every published cell's true value (the worst case: rates published from
  unrounded counts can give some counts away exactly);
- `rounded`: knows each published cell only as the counts that round to it outside the
  suppressed band (e.g. 10 is 8 to 12; 0 is exactly 0).
The relations of a table with margins form a network matrix (totally unimodular), and every bound
is an integer, so the linear programs' optima are integers: [low, high] is exactly the range of
whole counts the cell could hold, and low == high would mean the cell is pinned.
"""

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from scipy.optimize import linprog

from app.services.disclosure import Rule

K = TypeVar("K", bound=Hashable)
Relation = tuple[K, Sequence[K]]  # (total, parts)


def published_bounds(value: int, rule: Rule) -> tuple[int, int]:
    """The true counts a published (unsuppressed) count could stand for."""
    shown = rule.rounded(value)
    low = shown - rule.round_to // 2
    candidates = [
        x
        for x in range(max(0, low), low + max(rule.round_to, 1))
        if rule.rounded(x) == shown and not rule.sensitive(x)
    ]
    return min(candidates), max(candidates)


def _components(relations: Sequence[Relation[K]]) -> list[list[Relation[K]]]:
    """The relations grouped into independent systems (sharing no cell)."""
    parent: dict[K, K] = {}

    def find(key: K) -> K:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for total, parts in relations:
        for part in parts:
            parent[find(part)] = find(total)
    systems: dict[K, list[Relation[K]]] = {}
    for relation in relations:
        systems.setdefault(find(relation[0]), []).append(relation)
    return list(systems.values())


def feasible_ranges(
    values: Mapping[K, int],
    suppressed: set[K],
    relations: Sequence[Relation[K]],
    *,
    rule: Rule,
    exact: bool,
) -> dict[K, tuple[float, float]]:
    """{suppressed cell: (lowest, highest)} the attacker can work out."""
    ranges: dict[K, tuple[float, float]] = {}
    for system in _components(relations):
        cells = {system[0][0]} | {c for total, parts in system for c in (total, *parts)}
        if cells & suppressed:
            ranges |= _system_ranges(values, suppressed & cells, system, cells, rule, exact)
    for key in suppressed - ranges.keys():  # in no relation: nothing narrows it
        ranges[key] = (0, math.inf)
    return ranges


def _system_ranges(
    values: Mapping[K, int],
    suppressed: set[K],
    relations: Sequence[Relation[K]],
    cells: set[K],
    rule: Rule,
    exact: bool,
) -> dict[K, tuple[float, float]]:
    variables = sorted(suppressed if exact else cells, key=repr)
    index = {key: n for n, key in enumerate(variables)}
    rows: list[list[float]] = []
    rhs: list[float] = []
    for total, parts in relations:
        row = [0.0] * len(variables)
        constant = 0.0
        for key, sign in [(total, 1.0), *((p, -1.0) for p in parts)]:
            if key in index:
                row[index[key]] += sign
            else:
                constant += sign * values[key]
        if any(row):
            rows.append(row)
            rhs.append(-constant)
        else:
            assert constant == 0, f"relation {total} = sum{list(parts)} does not hold"
    bounds: list[tuple[float | None, float | None]] = []
    for key in variables:
        if key in suppressed:
            bounds.append((0, None))
        else:
            bounds.append(published_bounds(values[key], rule))
    ranges: dict[K, tuple[float, float]] = {}
    for key in suppressed:
        objective = [0.0] * len(variables)
        objective[index[key]] = 1.0
        ends = []
        for sign in (1.0, -1.0):
            result = linprog(
                [sign * c for c in objective],
                A_eq=rows or None,
                b_eq=rhs or None,
                bounds=bounds,
                method="highs",
            )
            if result.status == 3:  # unbounded
                ends.append(math.inf)
                continue
            assert result.status == 0, result.message
            ends.append(round(sign * result.fun, 6))
        ranges[key] = (ends[0], ends[1])
    return ranges


def grid_relations(rows: int, cols: int) -> list[Relation[tuple[int, int]]]:
    """The relations of a grid whose last row and last column are the margins."""
    relations: list[Relation[tuple[int, int]]] = [
        ((i, cols - 1), [(i, j) for j in range(cols - 1)]) for i in range(rows)
    ]
    relations += [((rows - 1, j), [(i, j) for i in range(rows - 1)]) for j in range(cols)]
    return relations


def assert_not_pinned(
    values: Mapping[K, int],
    suppressed: set[K],
    relations: Sequence[Relation[K]],
    *,
    rule: Rule,
    width: float = 2,
    unknown: frozenset[K] = frozenset(),
) -> None:
    """Every suppressed cell keeps a range of at least `width` (three whole counts) even for an
    attacker who knows every published cell exactly, and contains its true value. `unknown`
    cells are unpublished figures: unknown to the attacker, but not cells to protect."""
    for exact in (True, False):
        ranges = feasible_ranges(values, suppressed | unknown, relations, rule=rule, exact=exact)
        for key, (low, high) in ranges.items():
            if key in unknown:
                continue
            assert low <= values[key] <= high, (key, low, high, values[key])
            assert high - low >= width, (
                f"{key} ({values[key]}) narrowed to [{low}, {high}] "
                f"({'exact' if exact else 'rounded'} attacker)"
            )
