"""tdmpc2_model: TD-MPC2 world models (1M-317M), MPPI planning, training and Hub IO."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {"TDMPC2": "tdmpc2_model.agent", "TDMPC2Config": "tdmpc2_model.config"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdmpc2_model' has no attribute {name!r}")
