"""Statistical disclosure control for published statistics (pure functions, no database).

Who sees what: `admin` sees exact counts; `icb-analyst` sees its own ICB under the small-number
rule; every other role is refused (403).

The rule (defaults, configurable with PHARMREF_SUPPRESS_FROM, PHARMREF_SUPPRESS_TO and
PHARMREF_ROUND_TO):
- a count from 1 to 7 is suppressed (primary suppression): published as null and named in the
  row's `suppressed` list ("[c]" in CSV), never as zero; 0 is published as 0;
- every other count is rounded to the nearest 5 (halves up);
- rates are computed from the unrounded counts and suppressed where their numerator or their
  denominator is; percentiles where the count they describe is;
- secondary suppression: a published table is a set of linear relations (a total is the sum of its
  parts). Further cells are suppressed so that no suppressed cell can be recovered by differencing
  in the same response, even by a reader who knew every published cell exactly.

How the secondary suppression is chosen, and why it holds. Write the cells of a two-way table
with its margins as a grid: rows are the groups plus a margin row (the totals), columns are the
parts (e.g. referral sources) plus a margin column (the group's whole). Each row and each column
of the grid is one relation. A suppressed pattern is a bipartite graph whose vertices are the
grid's rows and columns and whose edges are the suppressed cells. A reader who knows every other
cell can move values round any cycle of that graph (+s, -s alternately) without changing a
single relation, so a suppressed cell that lies on a cycle whose cells are all at least 1 can be
any of v-1, v, v+1 at least: it is not pinned. A suppressed cell on no cycle (a bridge) is pinned.
So `protect_grid`:
1. suppresses the sensitive cells;
2. completes every relation left with exactly one suppressed cell with the smallest non-zero cell
   of that relation (an inner cell before a margin, a margin before the grand total);
3. finds the remaining bridges (Tarjan) and closes each with the cheapest rectangle of non-zero
   cells through it (one always exists: through the margins).
No zero is ever suppressed, so every suppressed cell ends on a cycle of non-zero cells.
A one-way table (groups and their total) is one relation: `protect_line` makes sure it never
holds exactly one suppressed cell.

Limits (stated in the README): the guarantee is per response. Figures from different questions
(another date range, another grouping) can be differenced against each other; rounding blurs that
by up to ±2 per count, but rates are published from unrounded counts, as the rule requires.
"""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from app.core.errors import Forbidden
from app.models.enums import Role
from app.models.stats import Disclosure
from app.models.user import User

STATS_ROLES = (Role.ICB_ANALYST, Role.ADMIN)
SUPPRESSED_MARK = "[c]"

Cell = tuple[int, int]
R = TypeVar("R", bound=Hashable)
C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Rule:
    """The small-number rule applied to one response."""

    exact: bool
    suppress_from: int = 1
    suppress_to: int = 7
    round_to: int = 5

    def sensitive(self, count: int) -> bool:
        return not self.exact and self.suppress_from <= count <= self.suppress_to

    def rounded(self, count: int) -> int:
        if self.exact or self.round_to <= 1:
            return count
        return (count + self.round_to // 2) // self.round_to * self.round_to

    def describe(self) -> str:
        if self.exact:
            return "Exact counts (admin): nothing is suppressed or rounded."
        return (
            f"Counts from {self.suppress_from} to {self.suppress_to} are suppressed (null, named "
            f'in "suppressed"; "{SUPPRESSED_MARK}" in CSV) and other counts are rounded to the '
            f"nearest {self.round_to}; rates use unrounded counts and are suppressed with their "
            "numerator or denominator, percentiles with the count they describe; further cells "
            "are suppressed so that no suppressed cell can be recovered by differencing a total "
            "against its parts in this response. Rounded parts need not add up to the rounded total."
        )

    def public(self) -> Disclosure:
        return Disclosure(
            exact=self.exact,
            suppress_from=self.suppress_from,
            suppress_to=self.suppress_to,
            round_to=self.round_to,
            description=self.describe(),
        )


EXACT = Rule(exact=True, suppress_from=0, suppress_to=-1, round_to=1)


def rule_for(caller: User, *, suppress_from: int, suppress_to: int, round_to: int) -> Rule:
    """The rule for a caller: exact for admin, suppressed for icb-analyst, refused otherwise."""
    if caller.role is Role.ADMIN:
        return EXACT
    if caller.role is Role.ICB_ANALYST:
        return Rule(
            exact=False, suppress_from=suppress_from, suppress_to=suppress_to, round_to=round_to
        )
    raise Forbidden(f"The {caller.role} role may not read statistics.")


def icb_scope(caller: User) -> str | None:
    """The ICB an analyst is limited to (its token's organisation); None (everything) for admin."""
    if caller.role is Role.ADMIN:
        return None
    if caller.role is Role.ICB_ANALYST:
        return caller.org
    raise Forbidden(f"The {caller.role} role may not read statistics.")


def publish(count: int, *, suppressed: bool, rule: Rule) -> int | None:
    return None if suppressed else rule.rounded(count)


# ---- one relation: parts and their total -----------------------------------------------------


def protect_line(values: Sequence[int], rule: Rule) -> set[int]:
    """Suppressed positions in `values`, whose last item is the total of the others."""
    total = len(values) - 1
    suppressed = {i for i, v in enumerate(values) if rule.sensitive(v)}
    if len(suppressed) != 1:
        return suppressed
    (only,) = suppressed
    candidates = [i for i in range(total) if i != only and values[i] > 0]
    if candidates:
        suppressed.add(min(candidates, key=lambda i: (values[i], i)))
    elif only != total:
        suppressed.add(total)
    return suppressed


# ---- a two-way table with margins --------------------------------------------------------------


def _margins(cell: Cell, rows: int, cols: int) -> int:
    """0 for an inner cell, 1 for a margin, 2 for the grand total (the cost of suppressing it)."""
    return (cell[0] == rows - 1) + (cell[1] == cols - 1)


def _complete_lines(values: Sequence[Sequence[int]], suppressed: set[Cell]) -> None:
    rows, cols = len(values), len(values[0])
    lines: list[list[Cell]] = [[(i, j) for j in range(cols)] for i in range(rows)]
    lines += [[(i, j) for i in range(rows)] for j in range(cols)]
    row_line = list(range(rows))
    col_line = [rows + j for j in range(cols)]
    hits = [sum(cell in suppressed for cell in line) for line in lines]
    pending = [n for n, count in enumerate(hits) if count == 1]
    while pending:
        n = pending.pop()
        if hits[n] != 1:
            continue
        candidates = [c for c in lines[n] if c not in suppressed and values[c[0]][c[1]] > 0]
        pick = min(
            candidates, key=lambda c: (_margins(c, rows, cols), values[c[0]][c[1]], c), default=None
        )
        if pick is None:  # the one suppressed cell is zero: nothing to protect in this line
            continue
        suppressed.add(pick)
        for line in (row_line[pick[0]], col_line[pick[1]]):
            hits[line] += 1
            if hits[line] == 1:
                pending.append(line)


def bridges(rows: int, cells: set[Cell]) -> set[Cell]:
    """The cells that lie on no cycle of the bipartite graph rows-columns (Tarjan, iterative)."""
    adjacency: dict[int, list[tuple[int, Cell]]] = {}
    for cell in cells:
        r, c = cell[0], rows + cell[1]
        adjacency.setdefault(r, []).append((c, cell))
        adjacency.setdefault(c, []).append((r, cell))
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    found: set[Cell] = set()
    for root in adjacency:
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack: list[tuple[int, Cell | None, int]] = [(root, None, 0)]
        while stack:
            vertex, via, index = stack[-1]
            edges = adjacency[vertex]
            if index < len(edges):
                stack[-1] = (vertex, via, index + 1)
                neighbour, cell = edges[index]
                if cell == via:
                    continue
                if neighbour in order:
                    low[vertex] = min(low[vertex], order[neighbour])
                else:
                    order[neighbour] = low[neighbour] = len(order)
                    stack.append((neighbour, cell, 0))
                continue
            stack.pop()
            if stack and via is not None:
                parent = stack[-1][0]
                low[parent] = min(low[parent], low[vertex])
                if low[vertex] > order[parent]:
                    found.add(via)
    return found


def _rectangle(values: Sequence[Sequence[int]], suppressed: set[Cell], cell: Cell) -> list[Cell]:
    """The cheapest three cells closing a cycle of non-zero cells through `cell`."""
    rows, cols = len(values), len(values[0])
    i, j = cell
    best: list[Cell] = []
    best_cost: tuple[int, int] | None = None
    for i2 in range(rows):
        for j2 in range(cols):
            if i2 == i or j2 == j:
                continue
            trio = [(i, j2), (i2, j), (i2, j2)]
            if any(values[a][b] == 0 for a, b in trio):
                continue
            new = [c for c in trio if c not in suppressed]
            cost = (sum(_margins(c, rows, cols) for c in new), sum(values[a][b] for a, b in new))
            if best_cost is None or cost < best_cost:
                best, best_cost = trio, cost
    return best


def protect_grid(values: Sequence[Sequence[int]], rule: Rule) -> set[Cell]:
    """Suppressed cells of a table whose last row holds the column totals and whose last column
    holds the row totals (so the bottom-right cell is the grand total)."""
    rows, cols = len(values), len(values[0])
    suppressed = {(i, j) for i in range(rows) for j in range(cols) if rule.sensitive(values[i][j])}
    if not suppressed:
        return suppressed
    _complete_lines(values, suppressed)
    for cell in sorted(bridges(rows, suppressed)):
        if cell in bridges(rows, suppressed):
            trio = _rectangle(values, suppressed, cell)
            if not trio:
                raise ValueError("The margins do not add up: no cycle closes through a cell.")
            suppressed.update(trio)
    return suppressed


def protect(
    cells: Mapping[tuple[R | None, C | None], int], rule: Rule
) -> set[tuple[R | None, C | None]]:
    """Suppressed keys of a table given as {(row, column): count} with its margins: row None holds
    the column totals, column None the row totals. With no column but None the table is one
    relation (the rows and their total (None, None)). Missing inner cells count as zero."""
    if rule.exact or not any(rule.sensitive(v) for v in cells.values()):
        return set()
    all_rows: list[R | None] = [*sorted({r for r, _ in cells if r is not None}, key=repr), None]
    all_cols: list[C | None] = [*sorted({c for _, c in cells if c is not None}, key=repr), None]
    if len(all_cols) == 1:
        line = protect_line([cells.get((r, None), 0) for r in all_rows], rule)
        return {(all_rows[n], None) for n in line}
    grid = [[cells.get((r, c), 0) for c in all_cols] for r in all_rows]
    return {(all_rows[i], all_cols[j]) for i, j in protect_grid(grid, rule)}
