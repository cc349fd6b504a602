"""fanout: the family's one thread pool (library units, no lab)."""

from __future__ import annotations

import threading
import time

import pytest

from check_smtp_posture import fanout


def test_each_keeps_the_order_and_the_bound():
    running, most, lock = [0], [0], threading.Lock()

    def work(n):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 * (5 - n))  # the first items end last
        with lock:
            running[0] -= 1
        return n * n

    assert fanout.each(list(range(5)), work, 2) == [0, 1, 4, 9, 16]
    assert most[0] == 2


def test_one_item_runs_in_the_callers_thread_and_errors_reach_the_caller():
    assert fanout.each(["x"], lambda _: threading.current_thread(), 4) == [
        threading.current_thread()]

    def work(n):
        if n == 1:
            raise ValueError("item 1")
        return n

    with pytest.raises(ValueError, match="item 1"):
        fanout.each([0, 1, 2], work, 3)


def test_all_at_once_names_each_result():
    assert fanout.all_at_once({"a": lambda: 1, "b": lambda: 2}) == {"a": 1, "b": 2}
    assert fanout.all_at_once({}) == {}
