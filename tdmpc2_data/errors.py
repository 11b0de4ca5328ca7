"""The failures a user can cause (bad files, flags, tasks, paths, Hub answers), shared by
every command line (``tdmpc2-data`` and the model CLIs): one table, ``expected_errors``, maps
them to one line on stderr and an exit code; each CLI puts its own rows (Ctrl-C: what it
kept) in front. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import errno
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class CLIError(Exception):
    """A bad combination of arguments; the message starts with the argument it is about."""


#: errno of an OSError on a path the user gave -> what was expected of that path.
PATH_PROBLEMS = {
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "exists and is not a directory (expected a directory, or a path that does "
    "not exist yet)",
    errno.ENOTDIR: "a part of it is not a directory",
    errno.EISDIR: "is a directory (expected a file)",
    errno.EACCES: "permission denied",
    errno.ENOSPC: "no space left on the device",
}


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    if exc.filename is None:  # raised with a message of ours, which names the path
        return f"error: {exc}"
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"error: {where}: {PATH_PROBLEMS.get(exc.errno, exc.strerror)}"


def message_line(exc: BaseException, args: argparse.Namespace) -> str:
    """``error: <the exception's message>`` (a KeyError's key unquoted)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError repr()s
    return f"error: {text}"


#: (exception classes, exit code, the line for it) rows; the first match wins
ErrorTable = list[tuple[tuple[type[BaseException], ...], int, Callable[..., str]]]


def expected_errors() -> ErrorTable:
    """Every failure a user can cause: (classes, exit code, its line); the first row matching
    wins. Messages name the file, flag or repo and what was expected there. Anything else is
    a bug and keeps its traceback. (Imported here: ``--help`` stays fast.)"""
    from tdmpc2_data.convert import LibraryUnavailableError
    from tdmpc2_data.convert.safe_pickle import UnsafePickleError
    from tdmpc2_data.envs import SimulatorUnavailableError
    from tdmpc2_data.hub_api import HubError
    from tdmpc2_data.schema import DatasetError
    from tdmpc2_data.tasks import UnknownTaskError

    return [
        ((OSError,), 2, _os_error),  # the path and what was wrong with it
        ((UnsafePickleError,), 2, message_line),  # file: refuses to load <class>: why
        ((DatasetError,), 2, message_line),  # file (and field): what was expected
        ((UnknownTaskError,), 2, message_line),  # the task name and the closest known ones
        ((HubError,), 2, message_line),  # what failed on which repo@revision, what to do
        ((SimulatorUnavailableError,), 2, message_line),  # the task and what to install
        ((LibraryUnavailableError,), 2, message_line),  # the missing library and how to install it
        ((CLIError, ValueError, KeyError), 2, message_line),  # a bad argument, named
    ]


def one_line_error(
    exc: BaseException, args: argparse.Namespace, table: ErrorTable
) -> tuple[int, str] | None:
    """(exit code, one line) for an expected error: the first row of ``table`` (a CLI's own
    rows, e.g. Ctrl-C: what it kept, in front of ``expected_errors()``) that matches; None for
    anything else (a bug: keep its traceback)."""
    for classes, code, explain in table:
        if isinstance(exc, classes):
            return code, " ".join(explain(exc, args).split())  # one line, whatever the message
    return None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises KeyboardInterrupt as Ctrl-C
    does: a terminated command ends its workers, keeps what is finished and says so, instead
    of dying silently with its workers still running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
