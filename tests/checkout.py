"""The checkout's root directory, for tests that read its files or run subprocesses from it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
