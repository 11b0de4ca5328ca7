"""Killing a command the way a crash or an OOM killer does: SIGKILL, no cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kill_when(main: str, argv: Sequence[str], appears: Path, after_s: float = 0.0) -> None:
    """Run ``tdmpc2_model.cli.<main>(argv)`` in a subprocess (one thread) and SIGKILL it
    ``after_s`` seconds after ``appears`` exists (fails if it exits or 240 s pass first)."""
    code = f"import sys; from tdmpc2_model.cli import {main}; sys.exit({main}(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while not appears.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"{appears} never appeared"
        time.sleep(0.02)
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
