"""Per-source random generators: `seed` drives a source only if the randomness mode says so."""

from __future__ import annotations

import numpy as np
import torch

from irrepro.config import NAMED_SOURCES, SOURCES

_SOURCE_IDS = {name: index for index, name in enumerate(SOURCES)}


def seed_sequence(source: str, seed: int, mode: str | frozenset[str], member: int = 0
                  ) -> np.random.SeedSequence:
    """The seed sequence of one source: from `seed` if the mode (a randomness option, or the
    set of sources `seed` drives) randomizes it, else fixed.

    `member` > 0 names another model trained beside the seed's own (co-distillation): its
    stream derives from the same seed, and member 0's is the seed's own stream.
    """
    source_id = _SOURCE_IDS[source]
    # A leading 1 or 0 keeps the two domains apart: SeedSequence ignores trailing zeros,
    # so [source_id, seed] for seed 0 would equal the fixed [source_id], and a trailing
    # member 0 leaves the seed's own stream as it was.
    if source in (NAMED_SOURCES[mode] if isinstance(mode, str) else mode):
        return np.random.SeedSequence([source_id, 1, seed, member])
    return np.random.SeedSequence([source_id, 0, member])


def numpy_generator(source: str, seed: int, mode: str | frozenset[str], member: int = 0
                    ) -> np.random.Generator:
    """A numpy generator for one source (see `seed_sequence`)."""
    return np.random.default_rng(seed_sequence(source, seed, mode, member))


def torch_generator(source: str, seed: int, mode: str | frozenset[str], member: int = 0
                    ) -> torch.Generator:
    """A CPU torch generator for one source (see `seed_sequence`)."""
    state = seed_sequence(source, seed, mode, member).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state & np.uint64(2**63 - 1)))
