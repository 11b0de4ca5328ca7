"""ManiSkill2 0.5.3 tasks (state observations, end-effector delta control).

ManiSkill2 cannot live in this package's environment (it needs numpy<1.24 and sapien 2.2.2),
so it is imported only when a ManiSkill2 env is created, and a missing or unusable install
is reported with the steps that fix it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tdmpc2_data.envs.base import SimulatorUnavailableError, TaskEnv
from tdmpc2_data.tasks import MANISKILL_SPECS, Task

#: Env ids whose object models are a separate download.
ASSET_ENVS = ("PickSingleYCB-v0", "TurnFaucet-v0")

INSTALL_HELP = f"""\
ManiSkill2 0.5.3 needs numpy<1.24 and sapien==2.2.2, which conflict with this environment \
(zarr 3, current torch), so install it in a separate Python 3.8-3.10 environment:
    pip install "numpy<1.24" sapien==2.2.2 "gymnasium>=0.28.1" scipy h5py pyyaml tqdm GitPython \
tabulate "gdown>=4.6.0" transforms3d opencv-python "imageio[ffmpeg]" trimesh rtree
    pip install mani_skill2==0.5.3 --no-deps
It renders and simulates with SAPIEN, which needs a Vulkan-capable GPU driver. \
{" and ".join(ASSET_ENVS)} also need their object assets:
    python -m mani_skill2.utils.download_asset {ASSET_ENVS[0]}
    python -m mani_skill2.utils.download_asset {ASSET_ENVS[1]}"""


def _import_maniskill() -> None:
    try:
        import mani_skill2.envs  # noqa: F401  (registers the ManiSkill2 ids with gymnasium)
    except ImportError as error:  # also a broken install: wrong numpy, missing sapien, ...
        raise SimulatorUnavailableError(
            f"ManiSkill2 tasks need the package mani_skill2==0.5.3, which failed to import "
            f"({error}).\n{INSTALL_HELP}"
        ) from error


class ManiSkillEnv(TaskEnv):
    """A ManiSkill2 task with ``obs_mode="state"``, the dense reward and the control mode of
    the paper; success is ManiSkill2's ``info["success"]``. Its own time limit and
    success termination are bypassed (the bare env), as the paper's episodes are 100 steps."""

    def __init__(self, task: Task, seed: int = 0, render_mode: str | None = None):
        super().__init__(task, seed, render_mode)
        _import_maniskill()
        env_id, control_mode, _, _ = MANISKILL_SPECS[task.name]
        try:
            env = gym.make(
                env_id,
                obs_mode="state",
                control_mode=control_mode,
                reward_mode="dense",
                render_mode=render_mode,
                disable_env_checker=True,
            )
        except Exception as error:  # no Vulkan device, missing assets, ...
            raise SimulatorUnavailableError(
                f"ManiSkill2 could not create {env_id} for {task.name}: {error}\n{INSTALL_HELP}"
            ) from error
        self._env = env.unwrapped
        space = self._env.action_space
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)

    def _reset_sim(self, seed: int | None) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return obs

    def _step_sim(self, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, Any]]:
        # [-1, 1] to the controller's bounds (the identity for its normalized delta modes).
        scaled = self._low + (action + 1) / 2 * (self._high - self._low)
        obs, reward, _, _, info = self._env.step(scaled)
        return obs, reward, {"success": float(info["success"])}

    def _render_sim(self) -> np.ndarray:
        return self._env.render()
