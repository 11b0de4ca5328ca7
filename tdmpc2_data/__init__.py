"""tdmpc2_data: tasks, simulators, zarr shard datasets, converters, Hub IO and the loader.

Where things live: the training batch is `tdmpc2_data/batch.py` (``Batch``, made by the
loader `tdmpc2_data/loader.py` and the online replay buffer `tdmpc2_model/training/replay.py`), the
update that consumes it is `tdmpc2_model/core/update.py`, checkpoints are
`tdmpc2_model/formats/run_checkpoint.py`, and Hub IO is `tdmpc2_data/hub_api.py` (repo ids, revisions,
errors; shared) under `tdmpc2_data/hub.py` for data and `tdmpc2_model/hub/mixin.py` for models.

Heavy submodules (simulators, zarr, torch) are imported on first use so that
``import tdmpc2_data`` and ``tdmpc2-data list`` stay fast.
"""

from importlib import import_module
from typing import Any

from tdmpc2_data.tasks import TASK_SETS, TASKS, Task, get_task, resolve_task_name
from tdmpc2_data.versions import __version__

_LAZY = {
    "Batch": "tdmpc2_data.batch",
    "make_env": "tdmpc2_data.envs",
    "open_dataset": "tdmpc2_data.reader",
    "ShardWriter": "tdmpc2_data.writer",
    "WindowSampler": "tdmpc2_data.loader",
    "WindowDataModule": "tdmpc2_data.datamodule",
    "to_hf_dataset": "tdmpc2_data.hf_datasets",
    "DatasetView": "tdmpc2_data.curate",
    "select": "tdmpc2_data.curate",
    "stats": "tdmpc2_data.curate",
}

__all__ = ["__version__", "TASKS", "TASK_SETS", "Task", "get_task", "resolve_task_name", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdmpc2_data' has no attribute {name!r}")
