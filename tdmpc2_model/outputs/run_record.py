"""One record of how a run was made, in every run directory: ``OUT/run_config.json`` holds one
entry per invocation (a resume adds one): the command and its command line, the resolved
settings (recipe, flags and config fields merged), the seed, package and simulator versions,
torch threads and device. ``--print-config`` prints the same entry and exits."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdmpc2_data.atomic import write_text_atomic

RECORD_FILE = "run_config.json"


def command_record(
    prog: str, argv: Sequence[str] | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """What a command was asked to do: its name, command line and resolved settings."""
    from tdmpc2_data.versions import package_versions

    line = list(sys.argv[1:] if argv is None else argv)
    return {"command": prog, "argv": line,
            "settings": json.loads(json.dumps(settings, default=str)),  # paths as text
            "versions": package_versions()}  # fmt: skip


def print_record(record: dict[str, Any]) -> None:
    """The record as YAML (what ``--print-config`` shows)."""
    import yaml

    print(yaml.safe_dump(record, sort_keys=False).rstrip())


def append_record(out: str | os.PathLike, record: dict[str, Any] | None, **facts: Any) -> None:
    """Add ``record`` plus run facts (device, threads, start time) to ``out/run_config.json``;
    earlier entries (the run before a resume) are kept. None: nothing to record."""
    if record is None:
        return
    import torch

    path = Path(out) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        runs = json.loads(path.read_text())["runs"] if path.exists() else []
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a run record (expected {{'runs': [...]}}).") from None
    entry = {**record, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "torch_threads": torch.get_num_threads(), **facts}  # fmt: skip
    write_text_atomic(path, json.dumps({"runs": [*runs, entry]}, indent=2, default=str) + "\n")
