"""Write checkpoints in the layout of the published multitask files, ``{"model": state_dict,
"cfg": config}``: the Oct-2023 state dict (flat ``_Qs.params.N``) and the config pickled as
omegaconf 2.3 pickles a parsed ``DictConfig`` (every container and node made by NEWOBJ, then
filled by BUILD with its ``__dict__``), without omegaconf. ``test_model_legacy`` checks that
it rewrites the published fixture opcode for opcode."""

from __future__ import annotations

import pickle
import re
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


def to_flat_layout(state: dict) -> dict:
    """The older layout: `_Qs.params.N` / `_target_Qs.params.N` with N = 4*layer + k, no
    detached copy, no tensordict metadata, no log_std/action-mask buffers."""
    names = {"weight": 0, "bias": 1, "ln.weight": 2, "ln.bias": 3}
    flat = {}
    for key, value in state.items():
        m = re.match(r"^(_Qs\.params|_target_Qs_params)\.(\d+)\.(.+)$", key)
        if m:
            prefix = "_Qs.params" if m.group(1) == "_Qs.params" else "_target_Qs.params"
            flat[f"{prefix}.{4 * int(m.group(2)) + names[m.group(3)]}"] = value
        elif "Qs" not in key and key not in ("log_std_min", "log_std_dif", "_action_masks"):
            flat[key] = value
    return flat


def multitask_file(path: Path, tasks: list[str], size: str = "1M", name: str = "mt70") -> Path:
    """A multitask checkpoint of ``tasks`` in the published layout: a new model's weights
    (seed 0) and a config holding the task table as the original's does (``tasks``)."""
    from tdmpc2_model import TDMPC2, TDMPC2Config

    torch.manual_seed(0)
    model = TDMPC2(TDMPC2Config(size=size, tasks=tasks)).model
    config = {"task": name, "multitask": True, "tasks": list(tasks),
              "work_dir": PurePosixPath("/root/tdmpc2/logs", name, "1", "default")}  # fmt: skip
    return write_published(path, to_flat_layout(model.state_dict()), config)


def pre_release_state(width: int = 8) -> dict[str, torch.Tensor]:
    """A hand-made state dict in the reported pre-release key layout: Linear and LayerNorm as
    separate Sequential entries (``_encoder.state.{1,2,4,5}``, ``_dynamics.0.{0,1,3,4,6}``)."""
    state = {}
    for prefix, linears, norms in [("_encoder.state", (1, 4), (2, 5)),
                                   *((f"_{m}.0", (0, 3, 6), (1, 4)) for m in ("dynamics", "reward", "pi"))]:  # fmt: skip
        for i in linears:
            state[f"{prefix}.{i}.weight"] = torch.zeros(width, width)
            state[f"{prefix}.{i}.bias"] = torch.zeros(width)
        for i in norms:
            state[f"{prefix}.{i}.weight"] = torch.ones(width)
            state[f"{prefix}.{i}.bias"] = torch.zeros(width)
    return state
