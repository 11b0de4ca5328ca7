"""Fixtures of the system tests. Each fixture below is self-contained; add new ones after them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


# ---------------------------------------------------------------- a small real disk
@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at ``tmp_path/disk`` (mounting needs root or CAP_SYS_ADMIN; elsewhere the
    test skips): a disk to fill for real (``test_full_disk.fill``)."""
    import subprocess

    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
