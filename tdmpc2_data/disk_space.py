"""A full disk in one line: refuse work that would fill it, before starting, with the numbers;
name the work that found it full anyway."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NoRoomError", "naming_full_disk", "require_room"]

GB = 1e9


class NoRoomError(OSError):
    """Not enough free space for what is (about to be) written."""


def _existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor (what ``disk_usage`` can be asked about)."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def require_room(what: str, needs: dict[Path, int], hint: str = "") -> None:
    """Raise ``NoRoomError`` unless each filesystem holding a directory of ``needs``
    (directory -> bytes to be written there) has the sum of its directories' bytes free
    (``shutil.disk_usage``: the space available to this user). The message names ``what``,
    the numbers in GB and the directories, then ``hint``."""
    by_device: dict[int, tuple[list[Path], int]] = {}
    for directory, nbytes in needs.items():
        dev = _existing(directory).stat().st_dev
        dirs, total = by_device.get(dev, ([], 0))
        by_device[dev] = ([*dirs, directory], total + nbytes)
    for dirs, total in by_device.values():
        free = shutil.disk_usage(_existing(dirs[0])).free
        if total > free:
            named = [d for d in dirs if not any(o in d.parents for o in dirs)]  # outermost
            raise NoRoomError(
                f"{what} needs {total / GB:.3g} GB free on the filesystem of "
                f"{' and '.join(map(str, named))}, which has {free / GB:.3g} GB free{hint}"
            )


@contextmanager
def naming_full_disk(what: str, hint: str = "") -> Iterator[None]:
    """A full disk inside (``ENOSPC``) is raised again as ``NoRoomError`` naming ``what`` and
    the file being written, then ``hint``."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise NoRoomError(
            f"{what}: no space left on the device writing {exc.filename}{hint}"
        ) from exc
