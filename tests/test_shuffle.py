import numpy as np
import pytest

from irrepro.shuffle import shuffle_order, shuffle_order_stepwise


@pytest.mark.parametrize("n, window", [(1, 1), (10, 1), (10, 3), (100, 7), (100, 100), (50, 500)])
def test_matches_the_step_by_step_buffer(n, window):
    fast = shuffle_order(n, window, np.random.default_rng(3))
    slow = shuffle_order_stepwise(n, window, np.random.default_rng(3))
    np.testing.assert_array_equal(fast, slow)


def test_window_one_keeps_the_order():
    np.testing.assert_array_equal(shuffle_order(1000, 1, np.random.default_rng(0)), np.arange(1000))


@pytest.mark.parametrize("window", [2, 16, 999, 5000])
def test_every_order_is_a_permutation(window):
    order = shuffle_order(1000, window, np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(order), np.arange(1000))
    assert not np.array_equal(order, np.arange(1000))


def test_an_element_never_leaves_before_it_enters():
    window = 8
    order = shuffle_order(10_000, window, np.random.default_rng(2))
    emitted_at = np.empty_like(order)
    emitted_at[order] = np.arange(order.size)
    # element i enters the buffer at step i - window + 1 (the first `window` at step 0)
    assert (emitted_at >= np.arange(order.size) - window + 1).all()


def test_each_pass_draws_a_new_order():
    rng = np.random.default_rng(4)
    assert not np.array_equal(shuffle_order(500, 32, rng), shuffle_order(500, 32, rng))
