"""The sequence cursor (khoa.sequence): gaps held while a late commit may still come, given up after
their time, and no number ever ready twice, whichever way the cursor moves."""

from __future__ import annotations

import json
import random

from khoa.sequence import GapPolicy, SequenceCursor

POLICY = GapPolicy("test", give_up_seconds=10.0, max_gap=50, max_held=100)
T0 = 1000.0


# -- advance: rows as they come -------------------------------------------------------------------


def test_in_order_numbers_are_all_ready_and_nothing_is_held() -> None:
    cursor, ready = SequenceCursor().advance([1, 2, 3], T0, POLICY)
    assert ready == [1, 2, 3] and cursor == SequenceCursor(3, {})
    cursor, ready = cursor.advance([4, 5], T0, POLICY)
    assert ready == [4, 5] and cursor.position == 5 and not cursor.held


def test_a_gap_is_held_and_its_row_is_ready_when_it_commits() -> None:
    cursor, ready = SequenceCursor().advance([1, 2, 4], T0, POLICY)
    assert ready == [1, 2, 4] and cursor.position == 4 and cursor.held == {3: T0 + 10.0}
    assert cursor.wanted() == [3]
    cursor, ready = cursor.advance([], T0 + 1, POLICY)
    assert ready == [] and cursor.held == {3: T0 + 10.0}
    cursor, ready = cursor.advance([3, 5], T0 + 2, POLICY)
    assert ready == [3, 5] and cursor == SequenceCursor(5, {})


def test_a_gap_that_never_fills_is_given_up_after_its_time() -> None:
    cursor, _ = SequenceCursor().advance([1, 3], T0, POLICY)
    cursor, _ = cursor.advance([], T0 + 9.9, POLICY)
    assert cursor.held.keys() == {2}
    cursor, ready = cursor.advance([], T0 + 10.0, POLICY)
    assert ready == [] and cursor == SequenceCursor(3, {})
    cursor, ready = cursor.advance([2], T0 + 11, POLICY)  # too late: never ready
    assert ready == []


def test_a_held_row_found_after_its_time_is_still_ready() -> None:
    """The caller asked for it (it was held when read): better late than never."""
    cursor = SequenceCursor(3, {2: T0})
    cursor, ready = cursor.advance([2], T0 + 5, POLICY)
    assert ready == [2] and not cursor.held


def test_upto_holds_the_missing_numbers_at_the_top() -> None:
    cursor, ready = SequenceCursor(1).advance([2], T0, POLICY, upto=4)
    assert ready == [2] and cursor.position == 4 and cursor.held.keys() == {3, 4}


def test_a_jump_too_large_is_not_waited_for_and_the_oldest_held_are_dropped() -> None:
    cursor, _ = SequenceCursor(1).advance([2, 200], T0, POLICY)
    assert cursor.position == 200 and not cursor.held
    small = GapPolicy("test", 10.0, max_gap=50, max_held=3)
    cursor, _ = SequenceCursor().advance([1, 7], T0, small)
    assert cursor.wanted() == [4, 5, 6]


def test_a_found_row_can_be_held_again_until_its_own_time() -> None:
    cursor, ready = SequenceCursor().advance([1, 2], T0, POLICY)
    cursor = cursor.hold(2, T0 + 5)
    assert cursor.wanted() == [2]
    cursor, ready = cursor.advance([2], T0 + 6, POLICY)
    assert ready == [2] and not cursor.held


def test_the_persisted_form_round_trips_as_the_stored_json() -> None:
    cursor, _ = SequenceCursor(0).advance([1, 4], T0, POLICY)
    stored = json.dumps(cursor.held_pairs())
    assert stored == "[[2, 1010.0], [3, 1010.0]]"
    assert SequenceCursor.from_pairs(cursor.position, json.loads(stored)) == cursor


def test_repeated_reads_never_yield_a_number_twice() -> None:
    cursor = SequenceCursor()
    cursor, first = cursor.advance([1, 2, 4], T0, POLICY)
    again: list[int] = []
    for step in range(3):  # the same rows read again, and the late one twice
        cursor, ready = cursor.advance([1, 2, 3, 4], T0 + step, POLICY)
        again += ready
    assert first == [1, 2, 4] and again == [3]


# -- advance_in_order: an unbroken run ------------------------------------------------------------


def test_in_order_stops_at_a_gap_until_it_fills() -> None:
    cursor, ready = SequenceCursor().advance_in_order([1, 2, 4, 5], T0, POLICY)
    assert ready == [1, 2] and cursor.position == 2 and cursor.held == {3: T0 + 10.0}
    cursor, ready = cursor.advance_in_order([4, 5], T0 + 5, POLICY)
    assert ready == [] and cursor.position == 2
    cursor, ready = cursor.advance_in_order([3, 4, 5], T0 + 6, POLICY)
    assert ready == [3, 4, 5] and cursor == SequenceCursor(5, {})


def test_in_order_gives_up_a_gap_after_its_time_and_later_gaps_wait_together() -> None:
    cursor, _ = SequenceCursor().advance_in_order([1, 3, 5], T0, POLICY)
    assert cursor.position == 1 and cursor.held.keys() == {2, 4}
    cursor, ready = cursor.advance_in_order([3, 5], T0 + 9, POLICY)
    assert ready == []
    cursor, ready = cursor.advance_in_order([3, 5], T0 + 10, POLICY)
    assert ready == [3, 5] and cursor == SequenceCursor(5, {})  # 2 and 4 both given up, not one by one


def test_in_order_does_not_wait_for_a_jump_too_large() -> None:
    cursor, ready = SequenceCursor(1).advance_in_order([500, 501], T0, POLICY)
    assert ready == [500, 501] and cursor == SequenceCursor(501, {})


def test_in_order_readers_see_every_number_once_in_order_whatever_the_commit_order() -> None:
    """Numbers 1..300 become visible in a random order with bounded lateness; a reader polling
    between commits gets each exactly once, ascending."""
    rng = random.Random(12)
    order = list(range(1, 301))
    for i in range(len(order)):  # each number commits at most five places late
        j = min(len(order) - 1, i + rng.randrange(6))
        order[i], order[j] = order[j], order[i]
    visible: set[int] = set()
    cursor, got, now = SequenceCursor(), [], T0
    for seq in order:
        visible.add(seq)
        now += 0.01
        cursor, ready = cursor.advance_in_order(sorted(visible), now, POLICY)
        got += ready
    cursor, ready = cursor.advance_in_order(sorted(visible), now, POLICY)
    assert got + ready == list(range(1, 301))
