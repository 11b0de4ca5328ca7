"""tdmpc2_model: TD-MPC2 world models (1M-317M), MPPI planning, training and Hub IO.

Layers, bottom to top (a module imports only its own layer or lower ones): `core/` the paper
(config, world model, losses, planner, the one update of Sec. 3.2), `outputs/` what runs log,
`formats/` the checkpoint files (one reader: `formats/read.py`), `hub/` model Hub IO on the
shared `tdmpc2_data/hub_api.py`, `agent.py` (``TDMPC2``), `evaluation/`, `training/` (online
RL, Lightning pretraining) and `apps/` (the CLIs, plots, quickstart).
"""

from importlib import import_module
from typing import Any

from tdmpc2_data.versions import __version__

_LAZY = {
    "TDMPC2": "tdmpc2_model.agent",
    "TDMPC2Config": "tdmpc2_model.core.config",
    "evaluate_tasks": "tdmpc2_model.evaluation.taskset",
    "TaskSetResult": "tdmpc2_model.evaluation.taskset",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdmpc2_model' has no attribute {name!r}")
