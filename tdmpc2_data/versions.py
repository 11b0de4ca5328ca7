"""Versions of this toolkit and of the libraries its numbers depend on: one place for
``--version`` on every command and for the version record of runs and evaluations."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

__version__ = "0.1.0"

#: Distributions whose versions change results (numerics, simulators, data IO).
RECORDED = ("torch", "numpy", "lightning", "zarr", "huggingface_hub", "gymnasium", "mujoco",
            "dm_control", "metaworld", "myosuite", "mani_skill2")  # fmt: skip


def package_versions() -> dict[str, str | None]:
    """``{"tdmpc2-toolkit": ..., "python": ..., <each of RECORDED>: version or None}``
    (None: not installed)."""
    versions: dict[str, str | None] = {
        "tdmpc2-toolkit": __version__,
        "python": platform.python_version(),
    }
    for name in RECORDED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: prints ``PROG (tdmpc2-toolkit) X.Y.Z`` and exits."""
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (tdmpc2-toolkit) {__version__}"
    )
