"""Simulators for the 104 TD-MPC2 tasks behind one gymnasium interface (spec/tasks.md).

``make_env("walker-walk", seed=0)`` gives one task's env; ``PaddedEnv`` speaks a model's
widths to it; ``MultitaskEnv("mt80")`` pads many tasks to one interface. Simulator packages are imported only when a task needs them.
"""

from tdmpc2_data.envs.base import SimulatorUnavailableError, TaskEnv
from tdmpc2_data.envs.make import env_class, gym_id, make_env
from tdmpc2_data.envs.multitask import MultitaskEnv
from tdmpc2_data.envs.padded import PaddedEnv

__all__ = [
    "MultitaskEnv",
    "PaddedEnv",
    "SimulatorUnavailableError",
    "TaskEnv",
    "env_class",
    "gym_id",
    "make_env",
]
