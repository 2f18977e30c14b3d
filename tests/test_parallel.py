"""fork_map: a function over items on every core, in order, its errors raised."""

import os

import pytest

from irrepro import parallel


def test_results_come_back_in_order_computed_in_other_processes():
    items = list(range(7))
    results = parallel.fork_map(lambda item: (item * item, os.getpid()), items, workers=2)
    assert [square for square, _ in results] == [item * item for item in items]
    assert os.getpid() not in {pid for _, pid in results}


def test_one_worker_or_one_item_computes_here():
    assert parallel.fork_map(lambda item: os.getpid(), [0, 1], workers=1) == [os.getpid()] * 2
    assert parallel.fork_map(lambda item: os.getpid(), [0]) == [os.getpid()]


def test_an_error_in_a_worker_is_raised_here():
    def fail_on_three(item):
        if item == 3:
            raise ValueError(f"item {item}")
        return item

    with pytest.raises(ValueError, match="item 3"):
        parallel.fork_map(fail_on_three, range(5), workers=2)
