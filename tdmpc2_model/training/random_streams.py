"""Counter-based random streams for the online loop: every draw is seeded from (run seed,
what it is for, its number), so a draw depends on nothing that came before it. A resumed run
then needs no saved generator states (CPU or CUDA) and can redo the updates made after its
checkpoint without redoing the planning that was interleaved with them: the result is the
uninterrupted run's, bit for bit, wherever the kernels are deterministic."""

from __future__ import annotations

import enum

import numpy as np
import torch


class Stream(enum.IntEnum):
    """What a draw is for; its number is the environment step, update or episode."""

    PLAN = 0  # MPPI's noise and policy samples while acting in training (per env step)
    UPDATE = 1  # the policy's samples inside one gradient update (per update)
    REPLAY = 2  # which windows one update trains on (per update)
    SEED_ACTIONS = 3  # the seed phase's uniform random actions (per episode)
    EVALUATE = 4  # an evaluation's planning (per env step at which it runs)


class RandomStreams:
    """Seeds torch's default generator for ``device`` (and the replay sampler's) from
    ``(seed, stream, index)``. Seeding the one generator costs ~1 us where
    ``torch.manual_seed`` costs ~130 us (it walks every backend)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed = seed
        self.generators = [torch.default_generator]
        if device.type == "cuda":
            index = torch.cuda.current_device() if device.index is None else device.index
            self.generators.append(torch.cuda.default_generators[index])

    def value(self, stream: Stream, index: int) -> int:
        """A 64-bit seed for draw ``index`` of ``stream`` (SeedSequence mixes the three)."""
        sequence = np.random.SeedSequence([self.seed, int(stream), index])
        return int(sequence.generate_state(1, np.uint64)[0])

    def use(self, stream: Stream, index: int) -> None:
        """Make torch's next draws on the run's device those of ``(stream, index)``."""
        value = self.value(stream, index)
        for generator in self.generators:
            generator.manual_seed(value)

    def numpy(self, stream: Stream, index: int) -> np.random.Generator:
        """A numpy generator for ``(stream, index)`` (the seed phase's actions)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(stream), index]))
