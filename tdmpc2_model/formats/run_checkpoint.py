"""Checkpoints of a run: a model directory (``save_pretrained``) plus the trainer state
(optimizer states, step) written whole or not at all, and the newest of a run found (the
agent resumed from it: ``training/checkpoints.py``). Online runs write
``OUT/checkpoints/step-N``; online runs and pretraining write their final model with
``save_atomically``."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError

from tdmpc2_data.atomic import remove_tree, umask_mode, write_atomic

CHECKPOINTS_DIR, STATE_FILE = "checkpoints", "trainer_state.pt"


class Saved(Protocol):
    """What a checkpoint saves of the agent (``TDMPC2``): its model and optimizers."""

    optim: torch.optim.Optimizer
    pi_optim: torch.optim.Optimizer

    def save_pretrained(self, save_directory: Path, training_data: str | None = None) -> Path: ...


def save_torch_atomically(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` into memory, then ``write_atomic`` (fsynced): on a full disk
    ``torch.save`` to a file fails with an opaque "unexpected pos" error and leaves a torn
    file; this leaves the old file or none, and the error names ``path``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()), fsync=True)


@contextmanager
def safetensors_os_errors(path: Path) -> Iterator[None]:
    """A safetensors I/O failure (its errno only in the text: "No space left on device (os
    error 28)") as the ``OSError`` naming ``path`` that every command reports in one line."""
    try:
        yield
    except SafetensorError as exc:
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), os.fspath(path)) from exc


def save_atomically(
    agent: Saved, target: Path, training_data: str | None = None, extra: Any = None
) -> Path:
    """``save_pretrained`` (plus ``extra`` as ``trainer_state.pt``) into a temp dir next to
    ``target``, then swap it in: readers see the old directory or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    tmp.chmod(umask_mode(directory=True))  # mkdtemp makes it private; a checkpoint is not
    try:
        with safetensors_os_errors(target):
            agent.save_pretrained(tmp, training_data=training_data)
        if extra is not None:
            save_torch_atomically(extra, tmp / STATE_FILE)
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            remove_tree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_checkpoint(
    out: Path,
    agent: Saved,
    step: int,
    training_data: str | None = None,
    keep: int = 2,
    loop_state: dict[str, Any] | None = None,
) -> Path:
    """``out/checkpoints/step-N``: the model and the trainer state (both optimizers, the
    step, and ``loop_state``: what the online loop needs to continue exactly, e.g. the
    updates made and its random states); keeps the newest ``keep`` (0: all)."""
    state = {"optim": agent.optim.state_dict(), "pi_optim": agent.pi_optim.state_dict(),
             "step": step, **(loop_state or {})}  # fmt: skip
    path = save_atomically(agent, out / CHECKPOINTS_DIR / f"step-{step:09d}", training_data, state)
    if keep:
        for old in sorted((out / CHECKPOINTS_DIR).glob("step-*"))[:-keep]:
            remove_tree(old)
    return path


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint of a run directory (checkpoints appear by rename)."""
    found = sorted(Path(out, CHECKPOINTS_DIR).glob("step-*"))
    return found[-1] if found else None
