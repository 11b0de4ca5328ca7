"""The original's parsed OmegaConf config, pickled next to ``"model"`` in the published
multitask checkpoints, read as plain data without omegaconf.

The Hub lists 14 imports for those files: torch's 3 of a state dict and 11 of the config.
Each of the 11 resolves to an inert stand-in below that accepts exactly how the pickle uses
it (omegaconf 2.3: containers and nodes are made empty by NEWOBJ and filled by BUILD with
their ``__dict__``; the metadata's resolver cache is ``defaultdict(dict)``; paths are
``PosixPath(*parts)``) and refuses anything else, naming the global. ``SAFE_GLOBALS`` adds
them to torch's own ``weights_only`` unpickler (``torch.serialization.safe_globals``) rather
than a restricted unpickler of ours, so tensors still come from torch's allowlist, memory-
mapped, and no other global can load. ``to_plain`` turns the result into dicts and lists.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

DICT_CONFIG = "omegaconf.dictconfig.DictConfig"
LIST_CONFIG = "omegaconf.listconfig.ListConfig"
ANY_NODE = "omegaconf.nodes.AnyNode"
CONTAINER_METADATA = "omegaconf.base.ContainerMetadata"
METADATA = "omegaconf.base.Metadata"
_NODE_STATE = {"_metadata", "_parent", "_val"}
_CONTAINER_STATE = {"_metadata", "_parent", "_content"}
_METADATA_STATE = {"ref_type", "object_type", "optional", "key", "flags", "flags_root",
                   "resolver_cache"}  # fmt: skip
_MAX_DEPTH = 32


class ConfigPickleError(ValueError):
    """A stand-in was used in a way the published files never do; names the global."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"refused {name}: {why}")


class _Marker:
    """A global the pickle only names as a value (``typing.Any``, ``dict`` ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigPickleError(self.name, "called; the config only names it")

    def __repr__(self) -> str:
        return self.name


ANY, DICT, LIST, INT = (_Marker(n) for n in ("typing.Any", "dict", "list", "int"))


class _EmptyCache(dict):
    """What ``defaultdict(dict)`` (a metadata's resolver cache) unpickles to."""


def _defaultdict(*args: Any) -> _EmptyCache:
    if args != (DICT,):
        raise ConfigPickleError("collections.defaultdict", f"made of {args!r:.80}, not (dict,)")
    return _EmptyCache()


def _posix_path(*parts: Any) -> PurePosixPath:
    if not all(isinstance(p, str) for p in parts):
        raise ConfigPickleError("pathlib.PosixPath", f"made of {parts!r:.80}, not strings")
    return PurePosixPath(*parts)


class _Built:
    """A stand-in class: made empty by NEWOBJ, then filled once by BUILD (``__setstate__``);
    calling it (REDUCE) or building it twice is refused."""

    NAME = ""
    STATE: set[str] = set()

    def __new__(cls, *args: Any, **kwargs: Any) -> _Built:
        if args or kwargs:
            raise ConfigPickleError(cls.NAME, f"created with {args!r:.80}; files create it empty")
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigPickleError(self.NAME, "called; files create it by NEWOBJ")

    def __setstate__(self, state: Any) -> None:
        if hasattr(self, "state"):
            raise ConfigPickleError(self.NAME, "built twice")
        if not isinstance(state, dict) or set(state) != self.STATE:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ConfigPickleError(
                self.NAME, f"built from {found!s:.120}, not {sorted(self.STATE)}"
            )
        self.check(state)
        self.state = state

    def check(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def refuse(self, key: str, value: Any) -> None:
        raise ConfigPickleError(self.NAME, f"{key} is {value!r:.80}")


class _Metadata(_Built):
    NAME, STATE = METADATA, _METADATA_STATE
    OBJECT_TYPES: tuple[Any, ...] = (None,)
    KEY_TYPES: tuple[Any, ...] = ()

    def check(self, state: dict[str, Any]) -> None:
        flags = state["flags"]
        checks = {
            "ref_type": state["ref_type"] is ANY,
            "object_type": any(state["object_type"] is t for t in self.OBJECT_TYPES),
            "optional": isinstance(state["optional"], bool),
            "key": state["key"] is None or type(state["key"]) in (str, int),
            "flags": type(flags) is dict
            and all(type(k) is str and v in (True, False, None) for k, v in flags.items()),
            "flags_root": isinstance(state["flags_root"], bool),
            "resolver_cache": type(state["resolver_cache"]) is _EmptyCache
            and not state["resolver_cache"],
            "key_type": any(state.get("key_type", ANY) is t for t in self.KEY_TYPES + (ANY,)),
            "element_type": state.get("element_type", ANY) is ANY,
        }
        for key, ok in checks.items():
            if not ok:
                self.refuse(key, state.get(key))


class _ContainerMetadata(_Metadata):
    NAME, STATE = CONTAINER_METADATA, _METADATA_STATE | {"key_type", "element_type"}
    OBJECT_TYPES, KEY_TYPES = (DICT, LIST), (INT,)


class _Node(_Built):
    """``AnyNode``: one value (str, int, float, bool, None or a path)."""

    NAME, STATE = ANY_NODE, _NODE_STATE

    def check(self, state: dict[str, Any]) -> None:
        _check_parent(self, state, _Metadata)
        if type(state["_val"]) not in (str, int, float, bool, type(None), PurePosixPath):
            self.refuse("_val", state["_val"])


class _DictConfig(_Built):
    NAME, STATE, OBJECT_TYPE = DICT_CONFIG, _CONTAINER_STATE, DICT

    def check(self, state: dict[str, Any]) -> None:
        _check_parent(self, state, _ContainerMetadata)
        content = state["_content"]
        if type(content) is not dict or not all(type(k) is str for k in content):
            self.refuse("_content", content)
        _check_children(self, content.values())


class _ListConfig(_Built):
    NAME, STATE, OBJECT_TYPE = LIST_CONFIG, _CONTAINER_STATE, LIST

    def check(self, state: dict[str, Any]) -> None:
        _check_parent(self, state, _ContainerMetadata)
        if type(state["_content"]) is not list:
            self.refuse("_content", state["_content"])
        _check_children(self, state["_content"])


_CONTAINERS = (_DictConfig, _ListConfig)


def _check_parent(obj: _Built, state: dict[str, Any], metadata: type) -> None:
    meta = state["_metadata"]
    if type(meta) is not metadata or not hasattr(meta, "state"):
        obj.refuse("_metadata", meta)
    if isinstance(obj, _CONTAINERS) and meta.state["object_type"] is not obj.OBJECT_TYPE:
        obj.refuse("_metadata.object_type", meta.state["object_type"])
    if state["_parent"] is not None and type(state["_parent"]) not in _CONTAINERS:
        obj.refuse("_parent", state["_parent"])


def _check_children(obj: _Built, children: Any) -> None:
    for child in children:
        if type(child) not in (_Node, *_CONTAINERS):
            obj.refuse("an entry", child)


#: torch.serialization.safe_globals entries: (stand-in, the name torch looks up; torch maps
#: protocol 2's ``__builtin__`` names, ``long`` included, to ``builtins``).
SAFE_GLOBALS: list[tuple[Any, str]] = [
    (_DictConfig, DICT_CONFIG),
    (_ListConfig, LIST_CONFIG),
    (_Node, ANY_NODE),
    (_ContainerMetadata, CONTAINER_METADATA),
    (_Metadata, METADATA),
    (_defaultdict, "collections.defaultdict"),
    (_posix_path, "pathlib.PosixPath"),
    (ANY, "typing.Any"),
    (DICT, "builtins.dict"),
    (LIST, "builtins.list"),
    (INT, "builtins.int"),
]


def is_config(obj: Any) -> bool:
    """Whether ``obj`` is an unpickled config (a ``DictConfig`` stand-in)."""
    return type(obj) is _DictConfig


def to_plain(obj: Any, depth: int = 0) -> Any:
    """The config as dicts, lists and values (paths stay ``PurePosixPath``)."""
    if depth > _MAX_DEPTH:  # a cycle (a container inside itself) or absurd nesting
        raise ConfigPickleError(DICT_CONFIG, f"nested deeper than {_MAX_DEPTH} levels")
    if not hasattr(obj, "state"):
        raise ConfigPickleError(type(obj).NAME, "used before it is built")
    if type(obj) is _Node:
        return obj.state["_val"]
    content = obj.state["_content"]
    if type(obj) is _ListConfig:
        return [to_plain(v, depth + 1) for v in content]
    return {k: to_plain(v, depth + 1) for k, v in content.items()}
