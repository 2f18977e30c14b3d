"""Hydra sweeper ``hydra/sweeper=irrepro_batch``: the seed axis of a multirun as replica jobs."""
