"""tdmpc2_model: TD-MPC2 world models (1M-317M), MPPI planning, training and Hub IO.

Where things live: the one update (paper Sec. 3.2) is `update.py`, run by `TDMPC2.update`
(`agent.py`, used by online RL in `online.py`) and by Lightning pretraining (`lightning.py`);
it takes a `tdmpc2_data.Batch` from the shard loader or the online buffer (`replay.py`);
checkpoints are `checkpoint.py`, acting and evaluation `evaluation.py` (over a task set with
the paper's normalized score: `taskset_eval.py`), and model Hub IO
`hub.py` on the shared layer `tdmpc2_data/hub_api.py`.
"""

from importlib import import_module
from typing import Any

from tdmpc2_data import __version__

_LAZY = {
    "TDMPC2": "tdmpc2_model.agent",
    "TDMPC2Config": "tdmpc2_model.config",
    "evaluate_tasks": "tdmpc2_model.taskset_eval",
    "TaskSetResult": "tdmpc2_model.taskset_eval",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdmpc2_model' has no attribute {name!r}")
