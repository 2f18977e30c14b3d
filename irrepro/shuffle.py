"""Streaming shuffle buffer (as `tf.data.Dataset.shuffle(buffer_size)`), vectorized."""

from __future__ import annotations

import numpy as np


def shuffle_order(n: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """Order in which a shuffle buffer of size `window` emits the indices 0..n-1.

    The buffer holds `window` slots. At step t a uniformly random slot r_t emits its
    element and takes the next element of the stream (index window + t). So the element
    emitted at step t is the one that entered slot r_t at that slot's previous step, or
    the slot's initial element. Once the stream is exhausted the remaining elements leave
    in random order. Window 1 keeps the order; window >= n is a full shuffle.
    """
    window = min(window, n)
    streaming = n - window
    slots = rng.integers(0, window, size=streaming)
    order = np.empty(n, dtype=np.int64)
    # Previous step at which the same slot was drawn: stable sort by slot, then by step
    # (a radix sort when the slots fit in 16 bits).
    by_slot = np.argsort(slots.astype(np.min_scalar_type(window - 1)), kind="stable")
    sorted_slots = slots[by_slot]
    first_of_slot = np.ones(streaming, dtype=bool)
    first_of_slot[1:] = sorted_slots[1:] != sorted_slots[:-1]
    previous = np.empty(streaming, dtype=np.int64)
    previous[by_slot[1:]] = by_slot[:-1]
    previous[by_slot[first_of_slot]] = -1
    order[:streaming] = np.where(previous >= 0, window + previous, slots)
    # What each slot holds when the stream ends: its last arrival, or its initial element.
    remaining = np.arange(window, dtype=np.int64)
    last_of_slot = np.ones(streaming, dtype=bool)
    last_of_slot[:-1] = sorted_slots[1:] != sorted_slots[:-1]
    last_steps = by_slot[last_of_slot]
    remaining[slots[last_steps]] = window + last_steps
    order[streaming:] = rng.permutation(remaining)
    return order


def shuffle_order_stepwise(n: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """The same buffer one element at a time, from the same draws: the specification that
    `shuffle_order` is tested and benchmarked against."""
    window = min(window, n)
    buffer, order = list(range(window)), []
    for step, slot in enumerate(rng.integers(0, window, size=n - window).tolist()):
        order.append(buffer[slot])
        buffer[slot] = window + step
    order.extend(rng.permutation(np.array(buffer, dtype=np.int64)).tolist())
    return np.array(order, dtype=np.int64)

