"""Atomic file replacement: write to a temporary sibling, then rename over the target, so a
crash leaves the old file or the new one, never a torn one. Every file the toolkit replaces in
place (dataset root metadata, download records, model weights and cards, run records) goes
through here."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def naming_path(path: str | os.PathLike) -> Iterator[None]:
    """An OSError that names no file is raised again naming ``path``: a full disk fails in
    ``write()`` or ``close()`` of an open file, whose error says only "[Errno 28] No space
    left on device"."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or directory (0777) gets under the process umask, for
    temporary files made private (``mkstemp``, ``mkdtemp``, or a writer such as safetensors
    that creates its file 0600) before they are renamed into place."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def write_atomic(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    fsync: bool = False,
    tmp: Path | None = None,
) -> None:
    """``write(tmp)`` a temporary file next to ``path``, then rename it to ``path``.

    The file gets the umask's mode (``umask_mode``) before the rename, whatever mode
    ``write`` made it with (safetensors makes 0600); ``tmp`` chooses the temporary name (the
    shard writer's names say which process made them). ``fsync``: flush the file to disk
    before the rename (for metadata that indexes data already on disk)."""
    path = Path(path)
    tmp = tmp or path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with naming_path(path):
            write(tmp)
            tmp.chmod(umask_mode())
            if fsync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(
    path: str | os.PathLike, text: str, fsync: bool = False, tmp: Path | None = None
) -> None:
    """``write_atomic`` of a text file."""
    write_atomic(path, lambda t: t.write_text(text), fsync=fsync, tmp=tmp)


def write_dir_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a temporary sibling directory (not created yet), then rename it to
    ``path``, replacing what was there: a crash or Ctrl-C midway leaves ``path`` as it was and
    no half-written directory under its name (the temporary one is removed on any error).

    An existing ``path`` is first renamed aside and deleted after the swap, so the window in
    which ``path`` is missing is two renames long; callers decide whether replacing is allowed.
    """
    path = Path(path)
    stamp = uuid.uuid4().hex
    tmp = path.with_name(f".{path.name}.{stamp}.tmp")
    old = path.with_name(f".{path.name}.{stamp}.old")
    moved = False
    try:
        write(tmp)
        if not tmp.is_dir():
            raise RuntimeError(f"{tmp}: the writer did not create the directory.")
        if path.exists() or path.is_symlink():
            os.replace(path, old)
            moved = True
        os.replace(tmp, path)
    except BaseException:
        if moved and not (path.exists() or path.is_symlink()):
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif moved:
        old.unlink(missing_ok=True)


class SymlinkRefusedError(OSError):
    """A directory to delete is a symbolic link; nothing was deleted."""


def remove_tree(path: str | os.PathLike) -> None:
    """``shutil.rmtree(path)``, refusing a symbolic link in one line naming it (rmtree
    itself raises "Cannot call rmtree on a symbolic link", naming nothing); the link is
    never followed, so what it points to is never deleted."""
    path = Path(path)
    if path.is_symlink():
        raise SymlinkRefusedError(
            f"{path}: is a symbolic link (to {os.readlink(path)}), expected a directory to "
            "delete; refused to delete it. Replace the link by the directory itself or remove it."
        )
    shutil.rmtree(path)
