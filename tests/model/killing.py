"""Stopping a command from outside: SIGKILL as a crash or an OOM killer does (no cleanup),
SIGTERM as a scheduler or ``kill`` does, SIGINT as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import psutil
from checkout import ROOT


class Stopped(NamedTuple):
    returncode: int
    stderr: str
    seconds: float  # from the signal to the exit
    survivors: list[psutil.Process]  # its child processes still running 5 s after it ended


def signal_when(main: str, argv: Sequence[str], appears: Path | Callable[[], bool],
                sig: int = signal.SIGKILL, after_s: float = 0.0) -> Stopped:  # fmt: skip
    """Run ``tdmpc2_model.apps.cli.<main>(argv)`` in a subprocess (one thread) and send it ``sig``
    ``after_s`` seconds after ``appears`` exists (or returns True); fails if it exits or
    240 s pass first, or if it runs on 30 s after the signal. Its child processes still
    running 5 s after it ended are returned, then killed."""
    code = f"import sys; from tdmpc2_model.apps.cli import {main}; sys.exit({main}(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    ready = appears if callable(appears) else appears.exists
    with tempfile.TemporaryFile("w+") as err:
        # a shell that runs jobs in the background starts them with SIGINT ignored: restore it
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stderr=err,
                                stdout=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        children: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 240
            while not ready():
                assert proc.poll() is None and time.monotonic() < deadline, f"{appears}: never"
                time.sleep(0.02)
            time.sleep(after_s)
            children = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(sig)
            start = time.monotonic()
            proc.wait(timeout=30)
            seconds = time.monotonic() - start
        finally:  # nothing left running, whatever failed
            proc.kill()
            proc.wait()
            survivors = psutil.wait_procs(children, timeout=5)[1]
            for child in survivors:
                child.kill()
        err.seek(0)
        return Stopped(proc.returncode, err.read(), seconds, survivors)


def kill_when(main: str, argv: Sequence[str], appears: Path, after_s: float = 0.0) -> None:
    """``signal_when`` with SIGKILL."""
    signal_when(main, argv, appears, signal.SIGKILL, after_s)
