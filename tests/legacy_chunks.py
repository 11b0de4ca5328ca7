"""The legacy data fixtures (original TD-MPC2 chunks) and hostile variants of them, for tests.

Hostile variants are the real tensordict 0.2.x fixture with its pickle edited at the byte
level, so everything but the one edit is the real 2023 layout (see the fixture README).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from legacy_fixtures import FIXTURES

#: The tensordict 0.2.x (2023) layout of the tiny chunks.
TD02 = {name: FIXTURES / f"{name}_chunk_tiny_td02.pt" for name in ("mt80", "mt30")}


def expected(name: str) -> dict[str, np.ndarray]:
    """The arrays a tiny chunk must convert to (filler removed), chunk order."""
    with np.load(FIXTURES / f"{name}_chunk_tiny_expected.npz") as z:
        return dict(z)


def stored_episodes(root: Path) -> dict[str, np.ndarray]:
    """All episodes of a dataset, concatenated over shards in storage order."""
    from tdmpc2_data import open_dataset

    ds = open_dataset(root)
    parts = [ds.read_shard(i) for i in range(len(ds.shards))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def in_expected_order(got: dict, expected_task: np.ndarray) -> dict:
    """Reorder stored episodes (task-sorted) to the chunk's order (stable within a task)."""
    order = np.argsort(expected_task, kind="stable")
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return {k: v[back] for k, v in got.items()}


def assert_matches(root: Path, name: str, copies: int = 1) -> None:
    """The dataset at ``root`` holds exactly ``copies`` conversions of tiny chunk ``name``
    (episodes compared as a multiset: shards group them by chunk and task)."""
    want, got = expected(name), stored_episodes(root)
    for k in ("obs", "action", "reward", "task"):
        assert got[k].dtype == want[k].dtype, k

    def episodes(d: dict, n: int) -> list[bytes]:
        keys = ("task", "obs", "action", "reward")
        return sorted(b"".join(d[k][e].tobytes() for k in keys) for e in range(n))

    assert len(got["task"]) == copies * len(want["task"])
    assert episodes(got, len(got["task"])) == sorted(episodes(want, len(want["task"])) * copies)


def _text(s: str) -> bytes:
    """A pickle BINUNICODE opcode pushing ``s``."""
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


#: The td02 pickle's ``"_lock_id": set([])``: GLOBAL, BINPUT 55, EMPTY_LIST, BINPUT 56, TUPLE1,
#: BINPUT 57, REDUCE.
_SET = b"c__builtin__\nset\nq7]q8\x85q9R"
#: End of the _StringOnlyDict's SETITEMS (BINPUT 43 of the last tensor, SETITEMS).
_ENTRIES_END = b"q+u"
#: End of the BUILD state (BINPUT 60 of ``[]``, SETITEMS, BUILD, STOP).
_STATE_END = b"q<ub."


def hostile_edits(marker: Path) -> dict[str, tuple[bytes, bytes, str]]:
    """kind -> (bytes of the td02 pickle, their replacement, what the refusal must say)."""
    return {
        "non-empty set": (
            _SET,
            b"c__builtin__\nset\nq7](K\x01eq8\x85q9R",
            r"refuses to load __builtin__\.set: a set may only be empty",
        ),
        "non-empty set without the global": (  # protocol 4 opcodes EMPTY_SET, ADDITEMS
            _SET,
            b"\x8f(K\x01\x90q8",
            r"refuses to load tensordict\.tensordict\.TensorDict: _lock_id is \{1\}, "
            r"expected an empty set",
        ),
        "_StringOnlyDict holding a str": (
            _ENTRIES_END,
            b"q+" + _text("note") + _text("not a tensor") + b"u",
            r"refuses to load tensordict\.utils\._StringOnlyDict: entry 'note' holds a str, "
            r"expected a tensor or a TensorDict",
        ),
        "unexpected BUILD key": (
            _STATE_END,
            b"q<" + _text("__class__") + b"N" + b"ub.",
            r"refuses to load tensordict\.tensordict\.TensorDict: state has unexpected "
            r"key\(s\) '__class__'",
        ),
        "os.system": (
            _SET,
            b"cos\nsystem\nq7" + _text(f"touch {marker}") + b"q8\x85q9R",
            r"refuses to load os\.system: not one of the \d+ globals a TD-MPC2 data chunk names",
        ),
    }


def rewrite_pickle(src: Path, dst: Path, edit: Callable[[bytes], bytes]) -> Path:
    """A copy of the torch zip ``src`` whose data.pkl is ``edit(data.pkl)``."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            data = z.read(info)
            out.writestr(info.filename, edit(data) if info.filename.endswith("/data.pkl") else data)
    return dst


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, f"{old!r} is not in the pickle exactly once"
    return data.replace(old, new)


def hostile_chunk(dst: Path, kind: str, marker: Path) -> tuple[Path, str]:
    """The mt80 td02 fixture with one hostile edit, and the refusal it must get."""
    old, new, refusal = hostile_edits(marker)[kind]
    return rewrite_pickle(TD02["mt80"], dst, lambda p: _replace_once(p, old, new)), refusal


def truncated_chunk(dst: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` of the mt80 td02 fixture's bytes (an interrupted download)."""
    data = TD02["mt80"].read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def truncated_pickle_chunk(dst: Path) -> Path:
    """A complete zip whose data.pkl stops halfway (damaged inside the archive)."""
    return rewrite_pickle(TD02["mt80"], dst, lambda p: p[: len(p) // 2])
