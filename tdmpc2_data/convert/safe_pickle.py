"""Load the original TD-MPC2's pickled TensorDict chunks without running their code.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` (the pickle) plus one raw record
per tensor storage (``<name>/data/<key>``, stored uncompressed). Unpickling a TensorDict
normally imports tensordict and lets the file name any callable; here a restricted
unpickler resolves exactly the globals such chunks use (``ALLOWED``) to inert stand-ins that
accept only what the two known layouts pass them (tensordict 0.2.x: a TensorDict object filled
by BUILD, an empty set, a ``_StringOnlyDict`` of tensors; tensordict 0.8.x: ``_make_td``), and
rebuild the TensorDict here, so a hostile file cannot execute anything, and neither torch's
storages nor tensordict are needed. Tensors come back as read-only numpy views of a memory map of the file, so a
1.7 GB chunk costs no RAM until its pages are read (and ``drop_pages`` releases them).
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


@dataclass
class TensorDictState:
    """What a pickled TensorDict holds: its entries (arrays or nested states) and batch size."""

    fields: dict[str, Any]
    batch_size: tuple[int, ...]


# ------------------------------------------------------------------ stand-ins
# Each allowed global resolves to one of these. They accept exactly the arguments the two
# chunk layouts pass (README of the legacy fixtures) and refuse everything else, so the
# unpickled object is plain data whatever the file says.
OLD_TD = "tensordict.tensordict.TensorDict"
STRING_ONLY_DICT = "tensordict.utils._StringOnlyDict"
NEW_TD = "tensordict._td.TensorDict"
MAKE_TD = "tensordict._reductions._make_td"
#: The state tensordict 0.2.x pickles for a TensorDict (its ``__getstate__``: the slots
#: but the caches); ``_tensordict`` and ``_batch_size`` are required.
OLD_TD_STATE = {
    "_tensordict", "_batch_size", "_is_shared", "_is_memmap", "_device", "_is_locked",
    "_td_dim_names", "_lock_id", "_locked_tensordicts",
}  # fmt: skip
#: The state ``tensordict._reductions._make_td`` receives (tensordict 0.8.x).
NEW_TD_STATE = {"_tensordict", "_batch_size", "_device", "_td_dim_names"}


class _StorageType:
    def __init__(self, name: str, dtype: type) -> None:
        self.name, self.dtype = name, np.dtype(dtype)

    def __call__(self, *args: Any) -> None:
        raise _Refused(f"torch.{self.name}", "a storage class is only named, never called")


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    """Stand-in for ``torch.Size``: a tuple of non-negative ints."""
    if not isinstance(dims, (tuple, list)) or not all(_is_dim(d) for d in dims):
        raise _Refused("torch.Size", f"expected a tuple of non-negative ints, got {dims!r:.80}")
    return tuple(dims)


def _is_dim(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d >= 0


def _ordered_dict(*args: Any) -> OrderedDict:
    """Stand-in for ``collections.OrderedDict``: a tensor's (empty) backward hooks."""
    if args:
        raise _Refused("collections.OrderedDict", "only an empty one (a tensor's hooks)")
    return OrderedDict()


def _empty_set(items: Any = ()) -> set:
    """Stand-in for ``__builtin__.set``: a TensorDict's (empty) ``_lock_id``."""
    if not isinstance(items, (list, tuple)) or items:
        raise _Refused("__builtin__.set", f"a set may only be empty, got {items!r:.80}")
    return set()


class _StringOnlyDict(dict):
    """Stand-in for ``tensordict.utils._StringOnlyDict``: a TensorDict's entries, filled by
    SETITEMS; it takes only string keys and tensors or nested TensorDicts as values."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StringOnlyDict:
        if args or kwargs:
            raise _Refused(STRING_ONLY_DICT, "built with arguments; chunks build it empty")
        return super().__new__(cls)

    def __init__(self) -> None:
        super().__init__()

    def __setitem__(self, key: Any, value: Any) -> None:
        if not isinstance(key, str):
            raise _Refused(STRING_ONLY_DICT, f"key {key!r:.80} is not a string")
        if not isinstance(value, (np.ndarray, _OldTensorDict)):
            raise _Refused(
                STRING_ONLY_DICT,
                f"entry {key!r} holds a {type(value).__name__}, expected a tensor or a TensorDict",
            )
        super().__setitem__(key, value)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(STRING_ONLY_DICT, "given a BUILD state; chunks only fill its items")


class _OldTensorDict:
    """Stand-in for ``tensordict.tensordict.TensorDict`` (tensordict 0.2.x): created empty
    (NEWOBJ), then BUILD passes its slot values, from which ``td`` is rebuilt here."""

    td: TensorDictState

    def __new__(cls, *args: Any, **kwargs: Any) -> _OldTensorDict:
        if args or kwargs:
            raise _Refused(OLD_TD, "created with arguments; chunks create it empty")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if hasattr(self, "td"):
            raise _Refused(OLD_TD, "built twice")
        if not isinstance(state, dict):
            raise _Refused(OLD_TD, f"BUILD state is a {type(state).__name__}, expected a dict")
        _check_keys(OLD_TD, state, OLD_TD_STATE)
        entries = state["_tensordict"]
        if type(entries) is not _StringOnlyDict:
            raise _Refused(
                OLD_TD, f"_tensordict is a {type(entries).__name__}, expected a _StringOnlyDict"
            )
        for key in ("_is_shared", "_is_memmap", "_is_locked"):
            if not isinstance(state.get(key, False), bool):
                raise _Refused(OLD_TD, f"{key} is {state[key]!r:.80}, expected a bool")
        lock_id, locked = state.get("_lock_id", set()), state.get("_locked_tensordicts", [])
        if type(lock_id) is not set or lock_id:
            raise _Refused(OLD_TD, f"_lock_id is {lock_id!r:.80}, expected an empty set")
        if type(locked) is not list or locked:
            raise _Refused(OLD_TD, f"_locked_tensordicts is {locked!r:.80}, expected []")
        fields = {}
        for key, value in entries.items():
            if isinstance(value, _OldTensorDict):
                if not hasattr(value, "td"):
                    raise _Refused(OLD_TD, f"entry {key!r} is a TensorDict used before it is built")
                value = value.td
            fields[key] = value
        self.td = _rebuilt(OLD_TD, state, fields)


class _NewTensorDictClass:
    """Marker for ``tensordict._td.TensorDict``: only ever passed to ``_make_td``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> None:
        raise _Refused(NEW_TD, "created; chunks only pass the class to _make_td")


def _make_td(cls: Any, state: Any) -> TensorDictState:
    """Stand-in for ``tensordict._reductions._make_td`` (tensordict 0.8.x pickles)."""
    if cls is not _NewTensorDictClass:
        raise _Refused(MAKE_TD, f"called with {cls!r:.80}, expected tensordict._td.TensorDict")
    if not isinstance(state, dict):
        raise _Refused(MAKE_TD, f"state is a {type(state).__name__}, expected a dict")
    _check_keys(MAKE_TD, state, NEW_TD_STATE)
    entries = state["_tensordict"]
    if type(entries) is not dict or not all(isinstance(k, str) for k in entries):
        raise _Refused(MAKE_TD, "_tensordict is not a dict with string keys")
    for key, value in entries.items():
        if not isinstance(value, (np.ndarray, TensorDictState)):
            raise _Refused(
                MAKE_TD,
                f"entry {key!r} holds a {type(value).__name__}, expected a tensor or a TensorDict",
            )
    return _rebuilt(MAKE_TD, state, dict(entries))


def _check_keys(name: str, state: dict, allowed: set[str]) -> None:
    unexpected = sorted(map(repr, set(state) - allowed))
    if unexpected:
        raise _Refused(name, f"state has unexpected key(s) {', '.join(unexpected)}")
    missing = {"_tensordict", "_batch_size"} - set(state)
    if missing:
        raise _Refused(name, f"state lacks {sorted(missing)}")


def _rebuilt(name: str, state: dict, fields: dict[str, Any]) -> TensorDictState:
    """The TensorDict of a checked state; device (CPU only) and dim names are checked too."""
    batch_size = state["_batch_size"]
    if not isinstance(batch_size, tuple) or not all(_is_dim(d) for d in batch_size):
        raise _Refused(name, f"_batch_size is {batch_size!r:.80}, expected a torch.Size")
    if state.get("_device") is not None:
        raise _Refused(name, f"_device is {state['_device']!r:.80}, expected None (CPU)")
    names = state.get("_td_dim_names")
    if names is not None and not (
        isinstance(names, list) and all(n is None or isinstance(n, str) for n in names)
    ):
        raise _Refused(name, f"_td_dim_names is {names!r:.80}, expected None or a list of names")
    return TensorDictState(fields, batch_size)


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
    ("collections", "OrderedDict"): _ordered_dict,
    ("__builtin__", "set"): _empty_set,
    ("tensordict._reductions", "_make_td"): _make_td,
    ("tensordict._td", "TensorDict"): _NewTensorDictClass,
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
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused("persistent id", f"{pid!r:.80} is not a torch storage record")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType) or not _is_dim(numel):
            raise _Refused("persistent id", f"{pid!r:.80} is not a torch storage record")
        return self._storage(str(key), storage_type.dtype, numel)


class TorchZip:
    """A ``torch.save`` zip archive opened read-only with its tensors memory-mapped."""

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
                return _RestrictedUnpickler(f, self._storage).load()
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
        if info.compress_type != zipfile.ZIP_STORED:  # never written by torch; read it whole
            return np.frombuffer(self._zip.read(info), dtype)
        header = self._mmap[info.header_offset : info.header_offset + 30]
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
    """The TensorDict state of an unpickled object (either tensordict layout, or a dict)."""
    if isinstance(obj, TensorDictState):
        return obj
    if isinstance(obj, _OldTensorDict) and hasattr(obj, "td"):
        return obj.td
    if type(obj) in (dict, _StringOnlyDict) and all(
        isinstance(v, np.ndarray) for v in obj.values()
    ):
        return TensorDictState(dict(obj), ())
    raise DatasetError(f"{where}: holds a {type(obj).__name__}, not a TensorDict of tensors")
