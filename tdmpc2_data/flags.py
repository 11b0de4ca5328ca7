"""Argparse ``type=`` functions shared by the CLIs: each refuses a bad value in argparse's one
line naming the flag (``argument --seed: ...``), before anything loads."""

from __future__ import annotations

import argparse
import math

#: numpy and torch seeds are unsigned 32-bit integers
SEED_LIMIT = 2**32


def finite_float(value: str) -> float:
    """A float flag: ``nan`` and ``inf``, which ``float()`` takes, are refused."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {value!r}")
    return number


def seed(value: str) -> int:
    """A ``--seed``: an integer in [0, 2**32), what numpy and torch take."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {value!r}") from None
    if not 0 <= number < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{value}: must be in [0, 2**32 - 1]")
    return number


def task_list(value: str) -> str:
    """A ``--tasks``-like flag: a task set or a comma list holding at least one name."""
    if not any(part.strip() for part in value.split(",")):
        raise argparse.ArgumentTypeError(
            f"expected a task set (mt80, mt30 ...) or a comma list of task names; got {value!r}"
        )
    return value
