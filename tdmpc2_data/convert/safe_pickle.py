"""Load the original TD-MPC2's pickled TensorDict chunks without running their code.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` (the pickle) plus one raw record
per tensor storage (``<name>/data/<key>``, stored uncompressed, ZIP64 past 4 GiB). Unpickling
a TensorDict normally imports tensordict and lets the file name any callable; here a
restricted unpickler resolves exactly the globals such chunks use (``ALLOWED``) to inert
stand-ins that accept only what the known TensorDict layouts pass them (``LAYOUTS``: the
published chunks' 2023 layouts with ``_device = torch.device('cpu')``, and those of files
re-saved with tensordict 0.1 to 0.8), and rebuild the TensorDict here, so a hostile file
cannot execute anything, and neither torch's storages nor tensordict are needed. Tensors
come back as read-only numpy views of a memory map of the file, so a 19 GB chunk costs no
RAM until its pages are read (and ``drop_pages`` releases them).
"""

from __future__ import annotations

import mmap
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.schema import DatasetError

#: torch storage class name -> numpy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside the allow-list, or uses an allowed one in a way no
    data chunk does (it could run code, or it is not a chunk); the message says which."""


class _Refused(Exception):
    """Raised by a stand-in: the global it stands for and why; ``TorchZip.load`` adds the file."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name, why)
        self.name, self.why = name, why


@dataclass(frozen=True)
class _Device:
    """Stand-in for a ``torch.device``: ``cpu``, ``cuda`` or ``cuda:<index>``."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __setstate__(self, state: Any) -> None:
        raise _Refused(DEVICE, "given a BUILD state; chunks only create one")


@dataclass
class TensorDictState:
    """What a pickled TensorDict holds: its entries (arrays or nested states), batch size and
    device ("cpu", "cuda", "cuda:<index>"; None: not set)."""

    fields: dict[str, Any]
    batch_size: tuple[int, ...]
    device: str | None = None


# ------------------------------------------------------------------ stand-ins
# Each allowed global resolves to one of these. They accept exactly the arguments the chunk
# layouts pass (README of the legacy fixtures) and refuse everything else, so the unpickled
# object is plain data whatever the file says.
OLD_TD = "tensordict.tensordict.TensorDict"
STRING_ONLY_DICT = "tensordict.utils._StringOnlyDict"
NEW_TD = "tensordict._td.TensorDict"
MAKE_TD = "tensordict._reductions._make_td"
DEVICE = "torch.device"


@dataclass(frozen=True)
class _Layout:
    """A TensorDict state some tensordict version pickles: its keys (a subset may be given;
    ``_tensordict`` and ``_batch_size`` are required) and the type of its ``_tensordict``."""

    keys: frozenset[str]
    entries: type


_BASE = {"_tensordict", "_batch_size", "_device"}
_FLAGS = {"_is_shared", "_is_memmap"}


class _StringOnlyDict(dict):
    """Stand-in for ``tensordict.utils._StringOnlyDict``: a TensorDict's entries, filled by
    SETITEMS; it takes only string keys and tensors or nested TensorDicts as values."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StringOnlyDict:
        _device_free(STRING_ONLY_DICT, (args, kwargs))
        if args or kwargs:
            raise _Refused(STRING_ONLY_DICT, "built with arguments; chunks build it empty")
        return super().__new__(cls)

    def __init__(self) -> None:
        super().__init__()

    def __setitem__(self, key: Any, value: Any) -> None:
        _device_free(STRING_ONLY_DICT, (key, value))
        if not isinstance(key, str):
            raise _Refused(STRING_ONLY_DICT, f"key {key!r:.80} is not a string")
        _entry(STRING_ONLY_DICT, key, value)
        super().__setitem__(key, value)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(STRING_ONLY_DICT, "given a BUILD state; chunks only fill its items")


#: Stand-in name -> the layouts of the states it is given.
LAYOUTS = {
    OLD_TD: (
        # tensordict <= 0.1.2 (and nightlies <= 2023-06-08): dim names under ``_names``
        _Layout(frozenset(_BASE | _FLAGS | {"_is_locked", "_names"}), dict),
        # tensordict main of June 2023 (7 keys: the published mt80 chunks) and 0.2.x (9 keys)
        _Layout(
            frozenset(
                _BASE | _FLAGS | {"_is_locked", "_td_dim_names", "_lock_id", "_locked_tensordicts"}
            ),
            _StringOnlyDict,
        ),
    ),
    # tensordict 0.3.x and 0.4.x: the instance's ``__dict__``
    NEW_TD: (_Layout(frozenset(_BASE | _FLAGS | {"_td_dim_names"}), _StringOnlyDict),),
    # tensordict 0.8.x: the state passed to ``_make_td``
    MAKE_TD: (_Layout(frozenset(_BASE | {"_td_dim_names"}), dict),),
}


class _StorageType:
    def __init__(self, name: str, dtype: type) -> None:
        self.name, self.dtype = name, np.dtype(dtype)

    def __call__(self, *args: Any) -> None:
        raise _Refused(f"torch.{self.name}", "a storage class is only named, never called")


def _device_free(name: str, value: Any) -> None:
    """Refuse a ``torch.device`` anywhere in ``value`` (what the file passed to ``name``):
    a TensorDict's ``_device`` is the only place chunks put one."""
    todo, seen = [value], set()
    while todo:
        v = todo.pop()
        if isinstance(v, _Device):
            raise _Refused(DEVICE, f"passed to {name}; a device may only be a TensorDict's _device")
        if isinstance(v, (tuple, list, set, frozenset, dict)) and id(v) not in seen:
            seen.add(id(v))
            todo.extend(v.items() if isinstance(v, dict) else v)


def _torch_device(*args: Any) -> _Device:
    """Stand-in for ``torch.device``: ``('cpu',)``, ``('cuda',)`` or ``('cuda', index)``."""
    kind = args[0] if args else None
    if not (
        (len(args) == 1 and type(kind) is str and kind in ("cpu", "cuda"))
        or (len(args) == 2 and type(kind) is str and kind == "cuda" and _is_dim(args[1]))
    ):
        raise _Refused(DEVICE, f"expected ('cpu',), ('cuda',) or ('cuda', index), got {args!r:.80}")
    return _Device(*args)


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    """Stand-in for ``torch.Size``: a tuple of non-negative ints."""
    _device_free("torch.Size", dims)
    if not isinstance(dims, (tuple, list)) or not all(_is_dim(d) for d in dims):
        raise _Refused("torch.Size", f"expected a tuple of non-negative ints, got {dims!r:.80}")
    return tuple(dims)


def _is_dim(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d >= 0


def _ordered_dict(*args: Any) -> OrderedDict:
    """Stand-in for ``collections.OrderedDict``: a tensor's (empty) backward hooks."""
    _device_free("collections.OrderedDict", args)
    if args:
        raise _Refused("collections.OrderedDict", "only an empty one (a tensor's hooks)")
    return OrderedDict()


def _empty_set(items: Any = ()) -> set:
    """Stand-in for ``__builtin__.set``: a TensorDict's (empty) ``_lock_id``."""
    _device_free("__builtin__.set", items)
    if not isinstance(items, (list, tuple)) or items:
        raise _Refused("__builtin__.set", f"a set may only be empty, got {items!r:.80}")
    return set()


class _TensorDict:
    """A TensorDict stand-in created empty (NEWOBJ), then filled by BUILD with its state,
    from which ``td`` is rebuilt here."""

    name: str
    td: TensorDictState

    def __new__(cls, *args: Any, **kwargs: Any) -> _TensorDict:
        _device_free(cls.name, (args, kwargs))
        if args or kwargs:
            raise _Refused(cls.name, "created with arguments; chunks create it empty")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if hasattr(self, "td"):
            raise _Refused(self.name, "built twice")
        self.td = _rebuilt(self.name, state)


class _OldTensorDict(_TensorDict):
    """Stand-in for ``tensordict.tensordict.TensorDict`` (tensordict <= 0.2.x)."""

    name = OLD_TD


class _NewTensorDict(_TensorDict):
    """Stand-in for ``tensordict._td.TensorDict``: built by BUILD (0.3.x, 0.4.x), or only
    passed to ``_make_td`` (0.8.x)."""

    name = NEW_TD


def _make_td(cls: Any, state: Any) -> _NewTensorDict:
    """Stand-in for ``tensordict._reductions._make_td`` (tensordict 0.8.x pickles)."""
    _device_free(MAKE_TD, cls)
    if cls is not _NewTensorDict:
        raise _Refused(MAKE_TD, f"called with {cls!r:.80}, expected tensordict._td.TensorDict")
    td = _NewTensorDict()
    td.td = _rebuilt(MAKE_TD, state)  # built: a BUILD of it is refused
    return td


def _entry(name: str, key: str, value: Any) -> np.ndarray | TensorDictState:
    """A TensorDict entry: a tensor, or a nested TensorDict (built) as its state."""
    if isinstance(value, _TensorDict):
        if not hasattr(value, "td"):
            raise _Refused(name, f"entry {key!r} is a TensorDict used before it is built")
        return value.td
    if not isinstance(value, np.ndarray):
        raise _Refused(
            name, f"entry {key!r} holds a {type(value).__name__}, expected a tensor or a TensorDict"
        )
    return value


def _rebuilt(name: str, state: Any) -> TensorDictState:
    """The TensorDict of a state ``name`` was given, checked against its layout."""
    if not isinstance(state, dict):
        raise _Refused(name, f"state is a {type(state).__name__}, expected a dict")
    device = state.get("_device")
    _device_free(name, [item for item in state.items() if item[0] != "_device"])
    if device is not None and type(device) is not _Device:
        _device_free(name, device)
        raise _Refused(name, f"_device is {device!r:.80}, expected None or a torch.device")
    fits = [layout for layout in LAYOUTS[name] if set(state) <= layout.keys]
    if not fits:
        unexpected = min((set(state) - layout.keys for layout in LAYOUTS[name]), key=len)
        raise _Refused(
            name, f"state has unexpected key(s) {', '.join(sorted(map(repr, unexpected)))}"
        )
    missing = {"_tensordict", "_batch_size"} - set(state)
    if missing:
        raise _Refused(name, f"state lacks {sorted(missing)}")
    entries = state["_tensordict"]
    if not any(type(entries) is layout.entries for layout in fits) or not all(
        isinstance(k, str) for k in entries
    ):
        raise _Refused(
            name,
            f"_tensordict is a {type(entries).__name__}, expected a "
            f"{fits[0].entries.__name__} with string keys",
        )
    for key in ("_is_shared", "_is_memmap", "_is_locked"):
        if not isinstance(state.get(key, False), bool):
            raise _Refused(name, f"{key} is {state[key]!r:.80}, expected a bool")
    lock_id, locked = state.get("_lock_id", set()), state.get("_locked_tensordicts", [])
    if type(lock_id) is not set or lock_id:
        raise _Refused(name, f"_lock_id is {lock_id!r:.80}, expected an empty set")
    if type(locked) is not list or locked:
        raise _Refused(name, f"_locked_tensordicts is {locked!r:.80}, expected []")
    batch_size = state["_batch_size"]
    if not isinstance(batch_size, tuple) or not all(_is_dim(d) for d in batch_size):
        raise _Refused(name, f"_batch_size is {batch_size!r:.80}, expected a torch.Size")
    for key in ("_td_dim_names", "_names"):
        dim_names = state.get(key)
        if dim_names is not None and not (
            isinstance(dim_names, list) and all(n is None or isinstance(n, str) for n in dim_names)
        ):
            raise _Refused(name, f"{key} is {dim_names!r:.80}, expected None or a list of names")
    fields = {key: _entry(name, key, value) for key, value in entries.items()}
    return TensorDictState(fields, batch_size, None if device is None else str(device))


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a strided numpy view of the storage."""
    name = "torch._utils._rebuild_tensor_v2"
    _device_free(name, (storage_offset, size, stride, requires_grad, backward_hooks, metadata))
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise _Refused(name, "the tensor is not rebuilt from a storage")
    if not (
        _is_dim(storage_offset)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(map(_is_dim, size + stride))
    ):
        raise _Refused(name, f"invalid tensor geometry size={size!r:.80} stride={stride!r:.80}")
    if not isinstance(requires_grad, bool) or backward_hooks or metadata is not None:
        raise _Refused(name, "a tensor with grad, hooks or metadata (a chunk holds plain data)")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.shape[0]:
        raise _Refused(
            name,
            f"a tensor of size {size} at offset {storage_offset} overruns its storage "
            f"of {storage.shape[0]} elements",
        )
    item = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=size,
        strides=tuple(s * item for s in stride),
        writeable=False,
    )


#: (module, name) -> the stand-in it resolves to. Everything else is refused.
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("collections", "OrderedDict"): _ordered_dict,
    ("__builtin__", "set"): _empty_set,
    ("tensordict._reductions", "_make_td"): _make_td,
    ("tensordict._td", "TensorDict"): _NewTensorDict,
    ("tensordict.tensordict", "TensorDict"): _OldTensorDict,
    ("tensordict.utils", "_StringOnlyDict"): _StringOnlyDict,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, storage: Callable[[str, np.dtype, int], np.ndarray]):
        super().__init__(file)
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(
                f"{module}.{name}",
                f"not one of the {len(ALLOWED)} globals a TD-MPC2 data chunk names "
                "(unpickling it could run code)",
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        _device_free("a persistent id", pid)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused("persistent id", f"{pid!r:.80} is not a torch storage record")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType) or not _is_dim(numel):
            raise _Refused("persistent id", f"{pid!r:.80} is not a torch storage record")
        return self._storage(str(key), storage_type.dtype, numel)


class TorchZip:
    """A ``torch.save`` zip archive opened read-only with its tensors memory-mapped (members
    stored uncompressed, as torch writes them; a compressed one is refused unread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # a missing file is an OSError naming it
        try:
            self._zip = zipfile.ZipFile(self._file)
        except zipfile.BadZipFile:
            self._file.close()
            raise DatasetError(
                f"{self.path}: not a torch zip archive (truncated, e.g. by an interrupted "
                "download, or written by torch < 1.6, which is not supported)"
            ) from None
        packed = [i for i in self._zip.infolist() if i.compress_type != zipfile.ZIP_STORED]
        if packed:  # a few MB could inflate to gigabytes: refused before reading any
            self.close()
            raise DatasetError(
                f"{self.path}: archive member {packed[0].filename} is compressed (zip method "
                f"{packed[0].compress_type}); torch.save stores every member uncompressed, so "
                "this is not a chunk torch wrote"
            )
        names = self._zip.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            self.close()
            raise DatasetError(f"{self.path}: no single data.pkl in the archive")
        self._prefix = pkl[0][: -len("data.pkl")]
        order = f"{self._prefix}byteorder"
        self._byteorder = self._zip.read(order).decode() if order in names else "little"
        self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def load(self) -> Any:
        """Unpickle the archive's object with the allow-list; tensors are numpy views.

        A refused global or use of one is an ``UnsafePickleError`` naming it and why; any
        other failure to decode is a ``DatasetError`` (a damaged file); both name the file."""
        try:
            with self._zip.open(f"{self._prefix}data.pkl") as f:
                obj = _RestrictedUnpickler(f, self._storage).load()
            _device_free("the top level", obj)
            return obj
        except _Refused as exc:
            raise UnsafePickleError(f"{self.path}: refuses to load {exc.name}: {exc.why}") from None
        except (DatasetError, OSError):
            raise
        except Exception as exc:  # anything else untrusted bytes can make the unpickler raise
            raise DatasetError(
                f"{self.path}: damaged pickle ({type(exc).__name__}: {exc}); download it again"
            ) from None

    def _storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self._prefix}data/{key}"
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise DatasetError(f"{self.path}: the archive lacks the tensor record {name}") from None
        dtype = dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        if info.file_size != numel * dtype.itemsize:
            raise DatasetError(
                f"{self.path}: storage {key} holds {info.file_size} bytes, expected "
                f"{numel} x {dtype.itemsize}"
            )
        # the local header's extra field (ZIP64 sizes, torch's alignment padding) differs from
        # the central directory's, which gave the offset and sizes: the data follows it
        header = self._mmap[info.header_offset : info.header_offset + 30]
        if header[:4] != b"PK\x03\x04":
            raise DatasetError(f"{self.path}: no local header for tensor record {name}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > len(self._mmap):
            raise DatasetError(f"{self.path}: tensor record {name} runs past the end of the file")
        return np.frombuffer(self._mmap, dtype, count=numel, offset=start)

    def drop_pages(self) -> None:
        """Release the file pages read so far from this process (they stay in the page cache)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Close the archive; arrays from ``load`` must not be used afterwards."""
        self._zip.close()
        try:
            if hasattr(self, "_mmap"):
                self._mmap.close()
        except BufferError:  # numpy views still alive: the map closes when they are freed
            pass
        self._file.close()

    def __enter__(self) -> TorchZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_tensordict(obj: Any, where: str) -> TensorDictState:
    """The TensorDict state of an unpickled object (any tensordict layout, or a dict)."""
    if isinstance(obj, _TensorDict) and hasattr(obj, "td"):
        return obj.td
    if type(obj) in (dict, _StringOnlyDict) and all(
        isinstance(v, np.ndarray) for v in obj.values()
    ):
        return TensorDictState(dict(obj), ())
    raise DatasetError(f"{where}: holds a {type(obj).__name__}, not a TensorDict of tensors")
