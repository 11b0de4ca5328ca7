"""Reading JSON metadata a user or a download may have damaged (``config.json``, a dataset's
``zarr.json``): a file larger than its kind ever is, or nested too deeply for the parser
(a ``RecursionError``), is refused in one line naming the file, before it is read or parsed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def check_size(path: Path, limit: int, error: type[Exception], what: str) -> None:
    """Refuse ``path`` (if it exists) when it holds more than ``limit`` bytes."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size > limit:
        raise error(
            f"{path}: {size:,} bytes, more than a {what} ever holds ({limit:,}); refused to read it."
        )


@contextmanager
def refused_when_too_deep(where: object, error: type[Exception]) -> Iterator[None]:
    """JSON parsed in the block that nests too deeply for the parser is an ``error``."""
    try:
        yield
    except RecursionError:
        raise error(
            f"{where}: JSON nested too deeply to read; refused (a damaged file?)."
        ) from None


def read_json(path: Path, limit: int, error: type[Exception], what: str) -> Any:
    """The parsed JSON file ``path`` (a ``what`` of at most ``limit`` bytes); a file too
    large, too deeply nested or not JSON is an ``error`` naming it."""
    check_size(path, limit, error, what)
    with refused_when_too_deep(path, error):
        try:
            return json.loads(path.read_bytes())
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise error(f"{path}: not valid JSON ({exc}).") from None
