"""The legacy data fixtures (original TD-MPC2 chunks), hostile variants of them, and chunks
written opcode by opcode in the layouts no fixture holds, for tests (and ``bench/convert.py``).

Hostile variants are a real fixture with its pickle edited at the byte level, so everything
but the one edit is the real layout (see the fixture README).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from legacy_fixtures import FIXTURES

#: The tensordict 0.2.x (2023) layout of the tiny chunks.
TD02 = {name: FIXTURES / f"{name}_chunk_tiny_td02.pt" for name in ("mt80", "mt30")}
#: The layouts of the published chunks (device cpu): 7-key state (mt80), 0.2.1 protocol 4 (mt30).
PUBLISHED = {
    "mt80": FIXTURES / "mt80_chunk_tiny_published.pt",
    "mt30": FIXTURES / "mt30_chunk_tiny_published_p4.pt",
}


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


def hostile_published_edits() -> dict[str, tuple[bytes, bytes, str]]:
    """kind -> (bytes of the published mt80 pickle, their replacement, the refusal it gets):
    ``torch.device`` with other arguments, or anywhere but a TensorDict's ``_device``."""
    device = b"ctorch\ndevice\n" + _text("cpu") + b"\x85R"  # torch.device('cpu')
    refused = r"refuses to load torch\.device: "
    elsewhere = refused + r"passed to (.+); a device may only be a TensorDict's _device"
    return {
        **{
            f"device{args!r}": (
                _DEVICE_ARGS,
                b"".join(_text(a) if isinstance(a, str) else _int(a) for a in args)
                + b"\x85\x86\x87"[len(args) - 1 : len(args)],
                refused + r"expected \('cpu',\), \('cuda',\) or \('cuda', index\)",
            )
            for args in (("cpu", "x"), ("meta",), ("cuda", "0"), ("cuda", -1), ("cuda:0",))
        },
        "device with no argument": (_DEVICE_ARGS, b")", refused + r"expected"),
        "device as a tensor entry": (
            _ENTRIES_END,
            b"q+" + _text("where") + device + b"u",
            elsewhere.replace("(.+)", r"tensordict\.utils\._StringOnlyDict"),
        ),
        "device in the batch size": (
            _BATCH_SIZE,
            b"K\x06" + device + b"\x86",
            elsewhere.replace("(.+)", r"torch\.Size"),
        ),
        "device in the dim names": (
            _DIM_NAMES,
            _DIM_NAMES[:-1] + b"]" + device + b"a",
            elsewhere.replace("(.+)", r"tensordict\.tensordict\.TensorDict"),
        ),
        "device at the top level": (
            b"ub.",
            b"ub" + device + b"\x86.",
            elsewhere.replace("(.+)", "the top level"),
        ),
        "device as a storage location": (
            _FIRST_LOCATION,
            device,
            elsewhere.replace("(.+)", "a persistent id"),
        ),
        "device given a BUILD state": (
            _DEVICE_ARGS,
            _DEVICE_ARGS + b"Rq7}b",  # REDUCE, then BUILD with {} (the old REDUCE is dropped)
            refused + "given a BUILD state",
        ),
        "_device as a string": (
            b"ctorch\ndevice\nq4" + _DEVICE_ARGS + b"R",
            _text("cpu"),
            r"refuses to load tensordict\.tensordict\.TensorDict: _device is 'cpu', expected "
            r"None or a torch\.device",
        ),
        "unexpected BUILD key": (
            b"Nub.",
            b"N" + _text("_lock") + b"\x89ub.",
            r"refuses to load tensordict\.tensordict\.TensorDict: state has unexpected "
            r"key\(s\) '_lock'",
        ),
        "_names beside _td_dim_names": (
            b"Nub.",
            b"N" + _text("_names") + b"Nub.",
            r"refuses to load tensordict\.tensordict\.TensorDict: state has unexpected key",
        ),
    }


#: In the published mt80 pickle: the arguments of ``torch.device('cpu')`` (with its BINPUTs)
#: up to its REDUCE, the batch size's (6, 101), the dim names, the first storage's location.
_DEVICE_ARGS = b"X\x03\x00\x00\x00cpuq5\x85q6"
_BATCH_SIZE = b"K\x06Ke\x86q."
_DIM_NAMES = b"X\r\x00\x00\x00_td_dim_namesq9N"
_FIRST_LOCATION = b"X\x03\x00\x00\x00cpuq\x0b"


def hostile_published_chunk(dst: Path, kind: str) -> tuple[Path, str]:
    """The published mt80 fixture with one hostile edit, and the refusal it must get."""
    old, new, refusal = hostile_published_edits()[kind]
    return rewrite_pickle(PUBLISHED["mt80"], dst, lambda p: _replace_once(p, old, new)), refusal


# ------------------------------------------------------------------ chunks written by hand
# A pickle is written opcode by opcode from a tree of these nodes and plain values (None,
# bools, ints, strs, tuples, lists, dicts), with no memo, exactly as the layout says.
@dataclass(frozen=True)
class Global:
    """GLOBAL ``module name``."""

    module: str
    name: str


@dataclass(frozen=True)
class Reduce:
    """``func(*args)``: func, the args tuple, REDUCE."""

    func: Any
    args: tuple


@dataclass(frozen=True)
class NewObj:
    """``cls.__new__(cls)`` (EMPTY_TUPLE, NEWOBJ), then SETITEMS of ``items`` (a dict
    subclass) or BUILD with ``state``."""

    cls: Global
    state: Any = None
    items: Mapping | None = None


@dataclass(frozen=True)
class Storage:
    """A torch storage record (BINPERSID of ``('storage', torch.<kind>, key, 'cpu', numel)``)."""

    kind: str
    key: str
    numel: int


class Opcodes:
    """Writes a node tree as pickle opcodes; ``long1``: every int as LONG1 (as torch pickles
    ints beyond 32 bits, e.g. the element count of a storage over 2^31 elements)."""

    def __init__(self, protocol: int = 2, long1: bool = False) -> None:
        self.protocol, self.long1 = protocol, long1

    def dumps(self, tree: Any) -> bytes:
        return b"\x80" + bytes([self.protocol]) + self.write(tree) + b"."

    def write(self, x: Any) -> bytes:
        if x is None:
            return b"N"
        if isinstance(x, bool):
            return b"\x88" if x else b"\x89"
        if isinstance(x, int):
            return _long1(x) if self.long1 else _int(x)
        if isinstance(x, str):
            return _text(x)
        if isinstance(x, tuple):
            return b"(" + b"".join(map(self.write, x)) + b"t" if x else b")"
        if isinstance(x, list):
            return b"](" + b"".join(map(self.write, x)) + b"e"
        if isinstance(x, set):
            assert not x and self.protocol >= 4, "only set() (EMPTY_SET, protocol 4)"
            return b"\x8f"
        if isinstance(x, Global):
            return f"c{x.module}\n{x.name}\n".encode()
        if isinstance(x, Reduce):
            return self.write(x.func) + self.write(x.args) + b"R"
        if isinstance(x, NewObj):
            new = self.write(x.cls) + b")\x81"
            if x.items is not None:
                return new + b"(" + self._items(x.items) + b"u"
            return new + self.write(x.state) + b"b"
        if isinstance(x, Storage):
            return self.write(("storage", Global("torch", x.kind), x.key, "cpu", x.numel)) + b"Q"
        if isinstance(x, dict):
            return b"}(" + self._items(x) + b"u"
        raise TypeError(f"no opcodes for {type(x).__name__}")

    def _items(self, d: Mapping) -> bytes:
        return b"".join(self.write(k) + self.write(v) for k, v in d.items())


def _int(x: int) -> bytes:
    if 0 <= x < 256:
        return b"K" + bytes([x])
    if 0 <= x < 65536:
        return b"M" + struct.pack("<H", x)
    if -(2**31) <= x < 2**31:
        return b"J" + struct.pack("<i", x)
    return _long1(x)


def _long1(x: int) -> bytes:
    data = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True) if x else b""
    return b"\x8a" + bytes([len(data)]) + data


def tensor(storage: Storage, shape: tuple[int, ...], offset: int = 0) -> Reduce:
    """``_rebuild_tensor_v2`` of a C-contiguous tensor ``shape`` at ``offset`` of ``storage``."""
    stride = tuple(int(s) for s in np.cumprod((1, *shape[:0:-1]))[::-1]) if shape else ()
    hooks = Reduce(Global("collections", "OrderedDict"), ())
    args = (storage, offset, shape, stride, False, hooks)
    return Reduce(Global("torch._utils", "_rebuild_tensor_v2"), args)


#: The 7-key state's other keys (tensordict main of June 2023); 0.2.x adds two.
_JUNE_2023 = {
    "_is_shared": False,
    "_is_memmap": False,
    "_device": None,
    "_is_locked": False,
    "_td_dim_names": None,
}
#: Layout name -> (TensorDict class, type of ``_tensordict``, the state's other keys and
#: values with ``_device`` last, pickle protocol). README of the legacy fixtures.
LAYOUTS = {
    "td01": (
        "tensordict.tensordict",
        dict,
        {
            "_is_shared": False,
            "_is_memmap": False,
            "_device": None,
            "_is_locked": False,
            "_names": None,
        },
        2,
    ),  # fmt: skip
    "published-mt80": ("tensordict.tensordict", "sod", _JUNE_2023, 2),
    "published-mt30": (
        "tensordict.tensordict",
        "sod",
        {**_JUNE_2023, "_lock_id": set(), "_locked_tensordicts": []},
        4,
    ),  # fmt: skip
    "td03": (
        "tensordict._td",
        "sod",
        {"_td_dim_names": None, "_is_shared": False, "_is_memmap": False, "_device": None},
        2,
    ),  # fmt: skip
}

_DTYPE_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int32): "IntStorage",
                   np.dtype(np.int64): "LongStorage"}  # fmt: skip


def chunk_pickle(
    layout: str,
    fields: Mapping[str, tuple[np.dtype, tuple[int, ...]]],
    device: tuple | None = ("cpu",),
    long1: bool = False,
) -> bytes:
    """The data.pkl of a TensorDict of ``fields`` (name -> dtype, shape; storage i holds
    field i, contiguous) in ``layout``, with ``_device = torch.device(*device)``."""
    module, entries_type, rest, protocol = LAYOUTS[layout]
    entries = {}
    for i, (name, (dtype, shape)) in enumerate(fields.items()):
        storage = Storage(_DTYPE_STORAGES[np.dtype(dtype)], str(i), int(np.prod(shape)))
        entries[name] = tensor(storage, tuple(shape))
    batch = tuple(next(iter(fields.values()))[1][:2])
    state = {
        "_tensordict": entries
        if entries_type is dict
        else NewObj(Global("tensordict.utils", "_StringOnlyDict"), items=entries),
        "_batch_size": Reduce(Global("torch", "Size"), (batch,)),
        **rest,
        "_device": None if device is None else Reduce(Global("torch", "device"), device),
    }
    if layout == "td03":  # its ``__dict__`` order
        state = {
            k: state[k] for k in ("_device", "_tensordict", "_batch_size", *rest) if k in state
        }
    return Opcodes(protocol, long1).dumps(NewObj(Global(module, "TensorDict"), state))


def write_torch_zip(
    path: Path,
    pickle_bytes: bytes,
    storages: Iterable[tuple[int, Iterable[bytes]]],
    zip64: bool = False,
) -> Path:
    """A torch zip archive (ZIP_STORED, as a 2023 torch wrote it: no format version records)
    holding ``pickle_bytes`` and the storages (size in bytes, blocks; written as they come),
    each one's data 64-byte aligned like torch's; ``zip64``: ZIP64 local headers for all
    storages (else only for those over 4 GiB)."""
    stem = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", pickle_bytes)
        z.writestr(f"{stem}/byteorder", "little")
        for i, (size, blocks) in enumerate(storages):
            info = zipfile.ZipInfo(f"{stem}/data/{i}", (2023, 10, 24, 0, 0, 0))
            info.file_size = size
            big = zip64 or size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule
            start = z.fp.tell() + 30 + len(info.filename) + 4 + (20 if big else 0)
            info.extra = b"FB" + struct.pack("<H", -start % 64) + bytes(-start % 64)
            with z.open(info, "w", force_zip64=zip64) as member:
                for block in blocks:
                    member.write(block)
        z.writestr(f"{stem}/version", "3\n")
    return path


def handwritten_chunk(
    dst: Path, name: str, layout: str, zip64: bool = False, long1: bool = False, **kw: Any
) -> Path:
    """Tiny chunk ``name``'s tensors (from its tensordict 0.8 fixture) written in ``layout``."""
    from tdmpc2_data.convert.safe_pickle import TorchZip, as_tensordict

    with TorchZip(FIXTURES / f"{name}_chunk_tiny.pt") as z:
        fields = {k: np.array(v) for k, v in as_tensordict(z.load(), name).fields.items()}
    pkl = chunk_pickle(
        layout, {k: (v.dtype, v.shape) for k, v in fields.items()}, long1=long1, **kw
    )
    return write_torch_zip(dst, pkl, ((v.nbytes, [v.tobytes()]) for v in fields.values()), zip64)
