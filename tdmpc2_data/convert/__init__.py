"""Converters from other data layouts into shard datasets, one module per source format.

A module exposes ``open_source(path, **options) -> merge.Source`` (one single-task buffer per
path; ``merge.convert_files`` does the rest), or, when a file holds many tasks, its own
``convert(sources, dst, *, tasks=None, task_set=None, progress=False, **options)``. Either
appends the episodes of ``sources`` to the shard dataset ``dst`` through ``ShardWriter``.
Register a new format with one line in ``CONVERTERS``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

#: source format -> (module implementing ``convert``, file suffixes that select it when
#: ``--from`` is not given).
CONVERTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "legacy-pt": ("tdmpc2_data.convert.legacy_pt", (".pt",)),
    "torchrl": ("tdmpc2_data.convert.from_torchrl", ()),
    "minari": ("tdmpc2_data.convert.from_minari", ()),
    "lerobot": ("tdmpc2_data.convert.from_lerobot", ()),
    "npz": ("tdmpc2_data.convert.from_npz", (".npz",)),
    "hdf5": ("tdmpc2_data.convert.from_hdf5", (".hdf5", ".h5")),
    "shards": ("tdmpc2_data.convert.from_shards", ()),
}


class LibraryUnavailableError(ImportError):
    """An optional library that a converter or exporter needs is missing or broken; the
    message says what to install."""


def import_library(module: str, install: str) -> Any:
    """``import_module(module)``, or `LibraryUnavailableError` naming it and ``install``."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise LibraryUnavailableError(f"this needs `{module}` ({exc}); {install}") from None


def guess_format(path: str | os.PathLike) -> str:
    """The source format of ``path`` from its suffix."""
    suffix = Path(path).suffix.lower()
    for name, (_, suffixes) in CONVERTERS.items():
        if suffix in suffixes:
            return name
    raise ValueError(
        f"Cannot tell the format of {path} from its suffix {suffix!r}; pass --from "
        f"({', '.join(CONVERTERS)})."
    )


def convert(
    sources: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    source_format: str | None = None,
    **options: Any,
) -> Any:
    """Convert ``sources`` (all of one format, guessed from the first if not given) into ``dst``."""
    if not sources:
        raise ValueError("No source files given.")
    source_format = source_format or guess_format(sources[0])
    if source_format not in CONVERTERS:
        raise ValueError(
            f"Source format {source_format!r} has no converter in this version "
            f"(available: {', '.join(CONVERTERS)})."
        )
    module = import_module(CONVERTERS[source_format][0])
    if hasattr(module, "convert"):
        return module.convert(sources, dst, **options)
    from tdmpc2_data.convert.merge import convert_files

    return convert_files(module.open_source, sources, dst, **options)
