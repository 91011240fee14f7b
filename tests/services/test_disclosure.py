"""Small-number suppression, rounding and secondary suppression (pure functions)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import Forbidden
from app.models.enums import Role
from app.services import disclosure
from app.services.disclosure import EXACT, Rule
from tests.disclosure_audit import assert_not_pinned, grid_relations
from tests.factories import caller

RULE = Rule(exact=False, suppress_from=1, suppress_to=7, round_to=5)


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, 0), (1, None), (7, None), (8, 10), (12, 10), (13, 15), (17, 15), (18, 20), (1002, 1000)],
)
def test_counts_from_1_to_7_are_suppressed_and_others_rounded_to_5(
    count: int, shown: int | None
) -> None:
    published = disclosure.publish(count, suppressed=RULE.sensitive(count), rule=RULE)

    assert published == shown


def test_the_rule_is_configurable() -> None:
    rule = Rule(exact=False, suppress_from=1, suppress_to=9, round_to=10)

    assert [rule.sensitive(n) for n in (0, 1, 9, 10)] == [False, True, True, False]
    assert [rule.rounded(n) for n in (10, 14, 15, 24)] == [10, 10, 20, 20]


def test_exact_rule_changes_nothing() -> None:
    assert [EXACT.sensitive(n) for n in range(10)] == [False] * 10
    assert EXACT.rounded(13) == 13
    assert disclosure.protect_line([3, 10, 13], EXACT) == set()
    assert disclosure.protect({("a", None): 3, (None, None): 3}, EXACT) == set()


def test_rule_by_role() -> None:
    settings_ = {"suppress_from": 1, "suppress_to": 7, "round_to": 5}

    assert disclosure.rule_for(caller(Role.ADMIN, "X26"), **settings_) is EXACT
    assert disclosure.rule_for(caller(Role.ICB_ANALYST, "QXX"), **settings_) == RULE
    assert disclosure.icb_scope(caller(Role.ICB_ANALYST, "QXX")) == "QXX"
    assert disclosure.icb_scope(caller(Role.ADMIN, "X26")) is None
    for role in (Role.GP_PRACTICE, Role.PHARMACY, Role.TRUST, Role.NHS111):
        with pytest.raises(Forbidden):
            disclosure.rule_for(caller(role, "A81001"), **settings_)
        with pytest.raises(Forbidden):
            disclosure.icb_scope(caller(role, "A81001"))


def test_description_states_the_rule() -> None:
    text = RULE.public().description

    assert "from 1 to 7" in text
    assert "nearest 5" in text
    assert "[c]" in text
    assert EXACT.public().exact is True


# ---- one relation ----------------------------------------------------------------------------


def test_a_lone_suppressed_part_takes_the_smallest_other_non_zero_part_with_it() -> None:
    # parts 3, 0, 40, 12 and their total 55
    assert disclosure.protect_line([3, 0, 40, 12, 55], RULE) == {0, 3}


def test_a_lone_part_with_only_zeros_beside_it_takes_the_total() -> None:
    assert disclosure.protect_line([0, 5, 0, 5], RULE) == {1, 3}


def test_two_suppressed_parts_need_nothing_more() -> None:
    assert disclosure.protect_line([3, 6, 40, 49], RULE) == {0, 1}


def test_nothing_sensitive_nothing_suppressed() -> None:
    assert disclosure.protect_line([0, 8, 40, 48], RULE) == set()


# ---- two-way tables --------------------------------------------------------------------------


def with_margins(inner: list[list[int]]) -> list[list[int]]:
    rows = [[*row, sum(row)] for row in inner]
    return [*rows, [sum(column) for column in zip(*rows, strict=True)]]


def test_bridges_are_the_cells_on_no_cycle() -> None:
    square = {(0, 0), (0, 1), (1, 0), (1, 1)}
    other = {(2, 2), (2, 3), (3, 2), (3, 3)}

    assert disclosure.bridges(4, square | other) == set()
    assert disclosure.bridges(4, square | other | {(1, 2)}) == {(1, 2)}
    assert disclosure.bridges(4, {(0, 0), (0, 1)}) == {(0, 0), (0, 1)}


def test_a_cell_between_two_protected_blocks_is_closed_into_a_cycle() -> None:
    # every row and column of the suppressed cells has two of them, yet (1, 2) joins two
    # separate squares: row and column sums would give it away
    grid = with_margins(
        [
            [3, 9, 20, 30, 50],
            [9, 3, 4, 40, 50],
            [20, 30, 3, 9, 50],
            [30, 40, 9, 3, 50],
        ]
    )

    suppressed = disclosure.protect_grid(grid, RULE)

    assert {(0, 0), (1, 1), (1, 2), (2, 2), (3, 3)} <= suppressed
    assert disclosure.bridges(len(grid), suppressed) == set()
    assert_not_pinned(_cells(grid), suppressed, grid_relations(5, 6), rule=RULE)


def test_a_lone_small_margin_is_protected_through_its_parts() -> None:
    grid = with_margins([[2, 1, 0], [20, 30, 40], [30, 30, 30]])

    suppressed = disclosure.protect_grid(grid, RULE)

    assert {(0, 0), (0, 1), (0, 3)} <= suppressed
    assert_not_pinned(_cells(grid), suppressed, grid_relations(4, 4), rule=RULE)


def test_protect_maps_keys_onto_the_grid() -> None:
    cells = {
        ("A", "x"): 3,
        ("A", "y"): 20,
        ("B", "x"): 30,
        ("B", "y"): 40,
        ("A", None): 23,
        ("B", None): 70,
        (None, "x"): 33,
        (None, "y"): 60,
        (None, None): 93,
    }

    hidden = disclosure.protect(cells, RULE)

    assert ("A", "x") in hidden
    assert len(hidden) == 4


def _cells(grid: list[list[int]]) -> dict[tuple[int, int], int]:
    return {(i, j): v for i, row in enumerate(grid) for j, v in enumerate(row)}


counts = st.one_of(st.just(0), st.integers(1, 7), st.integers(8, 60))


@settings(max_examples=60, deadline=None)
@given(st.lists(counts, min_size=1, max_size=9))
def test_no_suppressed_part_of_a_line_can_be_recovered(parts: list[int]) -> None:
    values = [*parts, sum(parts)]

    suppressed = disclosure.protect_line(values, RULE)

    assert {n for n, v in enumerate(values) if RULE.sensitive(v)} <= suppressed
    assert all(values[n] > 0 for n in suppressed)
    keyed = dict(enumerate(values))
    assert_not_pinned(keyed, suppressed, [(len(parts), range(len(parts)))], rule=RULE)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda cols: st.lists(
            st.lists(counts, min_size=cols, max_size=cols), min_size=1, max_size=7
        )
    )
)
def test_no_suppressed_cell_of_a_table_can_be_recovered(inner: list[list[int]]) -> None:
    grid = with_margins(inner)

    suppressed = disclosure.protect_grid(grid, RULE)

    cells = _cells(grid)
    assert {c for c, v in cells.items() if RULE.sensitive(v)} <= suppressed
    assert all(cells[c] > 0 for c in suppressed)
    assert_not_pinned(cells, suppressed, grid_relations(len(grid), len(grid[0])), rule=RULE)
