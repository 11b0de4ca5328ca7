"""Write checkpoints in the layout of the published multitask files, ``{"model": state_dict,
"cfg": config}``, with the config pickled as omegaconf 2.3 pickles a parsed ``DictConfig``
(every container and node made by NEWOBJ, then filled by BUILD with its ``__dict__``), without
omegaconf. ``test_model_legacy`` checks that it rewrites the published fixture byte for byte."""

from __future__ import annotations

import pickle
import typing
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import torch


class DictConfig:
    pass


class ListConfig:
    pass


class AnyNode:
    pass


class ContainerMetadata:
    pass


class Metadata:
    pass


#: the fakes above -> the global the pickle names; anything else may be added (hostile files)
NAMES: dict[Any, tuple[str, str]] = {
    DictConfig: ("omegaconf.dictconfig", "DictConfig"),
    ListConfig: ("omegaconf.listconfig", "ListConfig"),
    AnyNode: ("omegaconf.nodes", "AnyNode"),
    ContainerMetadata: ("omegaconf.base", "ContainerMetadata"),
    Metadata: ("omegaconf.base", "Metadata"),
    PurePosixPath: ("pathlib", "PosixPath"),
}


class _Pickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj not in NAMES:
            return super().save_global(obj, name)
        module, qualname = NAMES[obj]
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


class PickleModule:
    """What ``torch.save(pickle_module=...)`` needs."""

    Pickler = _Pickler


def _new(cls: type, **state: Any) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _metadata(key: Any, object_type: Any = None, key_type: Any = None) -> Any:
    state = dict(ref_type=typing.Any, object_type=object_type, optional=True, key=key, flags={},
                 flags_root=False, resolver_cache=defaultdict(dict))  # fmt: skip
    if object_type is None:
        return _new(Metadata, **state)
    return _new(ContainerMetadata, **state, key_type=key_type, element_type=typing.Any)


def omegaconf_like(value: Any, key: Any = None, parent: Any = None) -> Any:
    """Plain config data (dicts, lists, values, paths) as omegaconf's objects would pickle."""
    if isinstance(value, (dict, list)):
        is_dict = isinstance(value, dict)
        meta = _metadata(key, dict if is_dict else list, typing.Any if is_dict else int)
        node = _new(DictConfig if is_dict else ListConfig, _metadata=meta, _parent=parent)
        items = value.items() if is_dict else enumerate(value)
        content = {k: omegaconf_like(v, k, node) for k, v in items}
        node._content = content if is_dict else list(content.values())
        return node
    return _new(AnyNode, _metadata=_metadata(key), _parent=parent, _val=value)


def write_published(path: Path, state: dict[str, torch.Tensor], config: Any) -> Path:
    """``torch.save`` of ``{"model": state, "cfg": config}``, ``config`` as plain data or an
    already built object (``omegaconf_like``, possibly tampered with)."""
    if isinstance(config, dict):
        config = omegaconf_like(config)
    torch.save({"model": state, "cfg": config}, path, pickle_module=PickleModule)
    return path
