"""tdmpc2_model: TD-MPC2 world models (1M-317M), MPPI planning, training and Hub IO."""

from importlib import import_module
from typing import Any

from tdmpc2_data import __version__

_LAZY = {"TDMPC2": "tdmpc2_model.agent", "TDMPC2Config": "tdmpc2_model.config"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdmpc2_model' has no attribute {name!r}")
