"""What each replica trains on, pass by pass: the rows of the training set it draws (every
row, a bootstrap, or a subsample) in the order its shuffle buffer emits them. A forked run
follows the fixed base streams up to its fork step and the seed's streams after it."""

from __future__ import annotations

import numpy as np
import torch

from irrepro.config import Config, random_sources
from irrepro.schedule import total_steps, training_rows
from irrepro.seeds import numpy_generator
from irrepro.shuffle import shuffle_order

BASE = frozenset()  # no source random: every stream at its fixed base


class TrainingStream:
    """The training rows of K replicas (one per seed), pass by pass."""

    def __init__(self, config: Config, seeds: list[int], n_train: int):
        randomness = config.randomness
        self.sources = random_sources(randomness)
        self.window = randomness.window
        self.fork_step = randomness.fork_step
        self.n_train = n_train
        self.subsample = randomness.subsample
        self.rows = training_rows(n_train, self.subsample)
        self.steps_per_pass = total_steps(self.rows, config.train.batch_size, passes=1)
        self.batch = config.train.batch_size
        # A source that forks has a base stream before the fork and the seed's after it;
        # any other keeps one stream throughout (the seed's, or the base if it is fixed).
        self.shufflers = [numpy_generator("shuffle", seed, self.sources) for seed in seeds]
        self.base_shufflers = ([numpy_generator("shuffle", seed, BASE) for seed in seeds]
                               if self._forks("shuffle") else None)
        self.resamples = self._resamples(seeds, self.sources)
        self.base_resamples = self._resamples(seeds, BASE) if self._forks("data") else None

    def _forks(self, source: str) -> bool:
        return self.fork_step > 0 and source in self.sources

    def _resamples(self, seeds: list[int], sources: frozenset[str]) -> np.ndarray | None:
        """Each replica's training rows [K, rows] in file order, drawn from its data stream:
        a bootstrap of n_train rows, or `subsample` of them without replacement; None (every
        row once) when the data source is fixed and no subsample is asked for."""
        if "data" not in self.sources and self.subsample is None:
            return None
        drawn = []
        for seed in seeds:
            rng = numpy_generator("data", seed, sources)
            if self.subsample is None:
                drawn.append(np.sort(rng.integers(self.n_train, size=self.n_train)))
            else:
                drawn.append(np.sort(rng.choice(self.n_train, self.rows, replace=False)))
        return np.stack(drawn)

    def fork_offset(self, pass_index: int) -> int | None:
        """Where in pass `pass_index` the fork falls, in rows: 0 at its start, None when the
        pass is wholly before the fork or there is no fork."""
        if self.fork_step == 0:
            return None
        first = pass_index * self.steps_per_pass
        if self.fork_step >= first + self.steps_per_pass:
            return None
        return max(0, (self.fork_step - first) * self.batch)

    def pass_rows(self, pass_index: int) -> torch.Tensor:
        """The training-set rows each replica visits in pass `pass_index`, [K, rows]; call
        once per pass, in order."""
        offset = self.fork_offset(pass_index)
        before_fork = self.fork_step > 0 and offset is None
        orders = []
        for index, shuffler in enumerate(self.shufflers):
            if self.base_shufflers is None or not (before_fork or offset):
                orders.append(shuffle_order(self.rows, self.window, shuffler))
                continue
            order = shuffle_order(self.rows, self.window, self.base_shufflers[index])
            if offset:  # the rest of the pass in the seed's order
                rest = order[offset:]
                order[offset:] = rest[shuffle_order(len(rest), self.window, shuffler)]
            orders.append(order)
        order = np.stack(orders)
        if self.resamples is None:
            return torch.from_numpy(order)
        rows = np.take_along_axis(self.resamples, order, axis=1)
        if self.base_resamples is not None and (before_fork or offset):
            end = self.rows if before_fork else offset
            rows[:, :end] = np.take_along_axis(self.base_resamples, order[:, :end], axis=1)
        return torch.from_numpy(rows)
