"""Load the original TD-MPC2's pickled TensorDict chunks without running their code.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` (the pickle) plus one raw record
per tensor storage (``<name>/data/<key>``, stored uncompressed). Unpickling a TensorDict
normally imports tensordict and lets the file name any callable; here a restricted
unpickler resolves exactly the globals such chunks use (``ALLOWED``) to inert stand-ins, so
a hostile file cannot execute anything, and neither torch's storages nor tensordict are
needed. Tensors come back as read-only numpy views of a memory map of the file, so a
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
    """The file references a global outside the allow-list (it could run code)."""


@dataclass
class TensorDictState:
    """What a pickled TensorDict holds: its entries (arrays or nested states) and batch size."""

    fields: dict[str, Any]
    batch_size: tuple[int, ...]


class _StorageType:
    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)


#: The ``__dict__`` keys of a tensordict <= 0.2 TensorDict (the 2023 published chunks).
OLD_TENSORDICT_KEYS = frozenset({
    "_tensordict", "_batch_size", "_device", "_is_shared", "_is_memmap", "_is_locked",
    "_td_dim_names", "_lock_id", "_locked_tensordicts", "_last_op", "_cache",
})  # fmt: skip


class _OldTensorDict:
    """Stand-in for ``tensordict.tensordict.TensorDict`` (tensordict <= 0.2): created with
    NEWOBJ and filled with BUILD, the state being its ``__dict__``, entries under
    ``_tensordict``. Only the known keys are accepted, and nothing is called."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"TensorDict state is a {type(state).__name__}")
        unknown = sorted(map(str, set(state) - OLD_TENSORDICT_KEYS))
        if unknown:
            raise pickle.UnpicklingError(f"TensorDict state with unexpected keys {unknown}")
        self.state = state


class _StringOnlyDict(dict):
    """Stand-in for ``tensordict.utils._StringOnlyDict`` (a dict subclass): string keys only;
    that its values are tensors is checked when the TensorDict state is read."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if not isinstance(key, str):
            raise pickle.UnpicklingError(f"_StringOnlyDict key {key!r} is not a string")
        super().__setitem__(key, value)


def _empty_set(items: Any = ()) -> frozenset:
    """Stand-in for ``set`` (a TensorDict's ``_lock_id``): only an empty one is accepted."""
    if list(items):
        raise pickle.UnpicklingError("a set in a data chunk must be empty")
    return frozenset()


class _NewTensorDictClass:
    """Marker for ``tensordict._td.TensorDict`` (only ever passed to ``_make_td``)."""


def _make_td(cls: Any, state: dict[str, Any]) -> TensorDictState:
    """Stand-in for ``tensordict._reductions._make_td`` (tensordict >= 0.5 pickles)."""
    return _td_state(state)


def _td_state(state: dict[str, Any]) -> TensorDictState:
    if not isinstance(state, dict) or "_tensordict" not in state:
        raise pickle.UnpicklingError("TensorDict state without '_tensordict' entries")
    fields = {k: _plain(k, v) for k, v in dict(state["_tensordict"]).items()}
    return TensorDictState(fields, tuple(state.get("_batch_size") or ()))


def _plain(key: str, value: Any) -> Any:
    """An entry of a TensorDict: an array, or a nested TensorDict; nothing else."""
    if isinstance(value, _OldTensorDict):
        return _td_state(value.state)
    if not isinstance(value, (np.ndarray, TensorDictState)):
        raise pickle.UnpicklingError(
            f"TensorDict entry {key!r} is a {type(value).__name__}, not a tensor"
        )
    return value


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a strided numpy view of the storage."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or len(size) != len(stride):
        raise pickle.UnpicklingError(f"invalid tensor geometry size={size} stride={stride}")
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if 0 in size:
        return np.zeros(size, storage.dtype)
    if storage_offset < 0 or last >= storage.shape[0]:
        raise pickle.UnpicklingError(
            f"tensor of size {size} at offset {storage_offset} overruns its storage "
            f"of {storage.shape[0]} elements"
        )
    item = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=tuple(size),
        strides=tuple(s * item for s in stride),
        writeable=False,
    )


#: (module, name) -> the object it resolves to. Everything else is refused.
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): OrderedDict,
    ("tensordict._reductions", "_make_td"): _make_td,
    ("tensordict._td", "TensorDict"): _NewTensorDictClass,
    ("tensordict.tensordict", "TensorDict"): _OldTensorDict,
    ("tensordict.utils", "_StringOnlyDict"): _StringOnlyDict,
    ("__builtin__", "set"): _empty_set,  # protocol-2 pickles name Python 2's module
    ("builtins", "set"): _empty_set,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, storage: Callable[[str, np.dtype, int], np.ndarray], where: str):
        super().__init__(file)
        self._storage = storage
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._where}: refuses to load {module}.{name}, which is not one of the "
                f"{len(ALLOWED)} classes a TD-MPC2 data chunk needs (this file may run code "
                "when unpickled)."
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._where}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._where}: storage of unknown type")
        return self._storage(str(key), storage_type.dtype, int(numel))


class TorchZip:
    """A ``torch.save`` zip archive opened read-only with its tensors memory-mapped."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not zipfile.is_zipfile(self.path):
            raise ValueError(
                f"{self.path}: not a torch zip archive (files from torch < 1.6 are not supported)"
            )
        self._zip = zipfile.ZipFile(self.path)
        names = self._zip.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{self.path}: no single data.pkl in the archive")
        self._prefix = pkl[0][: -len("data.pkl")]
        order = f"{self._prefix}byteorder"
        self._byteorder = self._zip.read(order).decode() if order in names else "little"
        self._file = open(self.path, "rb")
        self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def load(self) -> Any:
        """Unpickle the archive's object with the allow-list; tensors are numpy views."""
        with self._zip.open(f"{self._prefix}data.pkl") as f:
            try:
                return _RestrictedUnpickler(f, self._storage, str(self.path)).load()
            except UnsafePickleError:
                raise
            except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as exc:
                raise pickle.UnpicklingError(
                    f"{self.path}: not a TD-MPC2 data chunk ({exc or type(exc).__name__})"
                ) from None

    def _storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        info = self._zip.getinfo(f"{self._prefix}data/{key}")
        dtype = dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        if info.file_size != numel * dtype.itemsize:
            raise ValueError(
                f"{self.path}: storage {key} holds {info.file_size} bytes, expected "
                f"{numel} x {dtype.itemsize}"
            )
        if info.compress_type != zipfile.ZIP_STORED:  # never written by torch; read it whole
            return np.frombuffer(self._zip.read(info), dtype)
        header = self._mmap[info.header_offset : info.header_offset + 30]
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        return np.frombuffer(self._mmap, dtype, count=numel, offset=start)

    def drop_pages(self) -> None:
        """Release the file pages read so far from this process (they stay in the page cache)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Close the archive; arrays from ``load`` must not be used afterwards."""
        self._zip.close()
        try:
            self._mmap.close()
        except BufferError:  # numpy views still alive: the map closes when they are freed
            pass
        self._file.close()

    def __enter__(self) -> TorchZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_tensordict(obj: Any, where: str) -> TensorDictState:
    """The TensorDict state of an unpickled object (new or old tensordict layout, or a dict)."""
    if isinstance(obj, TensorDictState):
        return obj
    if isinstance(obj, _OldTensorDict):
        try:
            return _td_state(obj.state)
        except pickle.UnpicklingError as exc:
            raise pickle.UnpicklingError(f"{where}: not a TD-MPC2 data chunk ({exc})") from None
    if isinstance(obj, dict) and all(isinstance(v, np.ndarray) for v in obj.values()):
        return TensorDictState(dict(obj), ())
    raise ValueError(f"{where}: holds a {type(obj).__name__}, not a TensorDict of tensors")
