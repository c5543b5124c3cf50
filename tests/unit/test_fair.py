"""FairWaiters: the key served longest ago first, first in first out within a key."""

from __future__ import annotations

from corral.fair import FairWaiters


def test_the_key_served_longest_ago_goes_first() -> None:
    waiters: FairWaiters[str, int] = FairWaiters()
    waiters.served("a")
    waiters.served("b")
    for key, waiter in (("a", 1), ("a", 2), ("b", 3), ("c", 4)):
        waiters.add(key, waiter)
    assert len(waiters) == 4
    order = []
    while (next_one := waiters.pop()) is not None:
        order.append(next_one)
        waiters.served(next_one[0])
    assert order == [("c", 4), ("a", 1), ("b", 3), ("a", 2)]
    assert len(waiters) == 0 and not waiters


def test_a_removed_waiter_is_not_given_a_turn() -> None:
    waiters: FairWaiters[str, int] = FairWaiters()
    waiters.add("a", 1)
    waiters.add("a", 2)
    waiters.remove("a", 1)
    waiters.remove("a", 9)  # not waiting: nothing
    assert len(waiters) == 1 and waiters.pop() == ("a", 2) and waiters.pop() is None
