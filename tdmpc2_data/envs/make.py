"""``make_env``: one gymnasium env for any of the 104 registry tasks.

Each simulator family lives in its own module, imported on first use, so a missing simulator
only matters to the tasks that need it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tdmpc2_data.envs.base import SimulatorUnavailableError, TaskEnv
from tdmpc2_data.envs.gl import prepare_rendering
from tdmpc2_data.tasks import DMCONTROL, MANISKILL, METAWORLD, MYOSUITE, get_task

# domain -> (module, class, simulator package, pip extra that installs it)
_FAMILIES = {
    DMCONTROL: ("tdmpc2_data.envs.dmcontrol", "DMControlEnv", "dm_control", "dmc"),
    METAWORLD: ("tdmpc2_data.envs.metaworld", "MetaWorldEnv", "metaworld", "metaworld"),
    MYOSUITE: ("tdmpc2_data.envs.myosuite", "MyoSuiteEnv", "myosuite", "myosuite"),
    MANISKILL: ("tdmpc2_data.envs.maniskill", "ManiSkillEnv", "mani_skill2", "maniskill"),
}


def env_class(domain: str) -> type[TaskEnv]:
    """The TaskEnv subclass of a domain; SimulatorUnavailableError if its simulator is missing."""
    module, name, package, extra = _FAMILIES[domain]
    try:
        return getattr(import_module(module), name)
    except ImportError as error:  # the family modules import nothing else that could be missing
        raise SimulatorUnavailableError(
            f"{domain} tasks need the simulator package {package!r}, which failed to import "
            f"({error}). Install it with `pip install 'tdmpc2-toolkit[{extra}]'` (versions "
            "known to work together are pinned in constraints.txt)."
        ) from error


def make_env(task: str, seed: int = 0, **kwargs: Any) -> TaskEnv:
    """A gymnasium env for ``task`` (full, alias or unambiguous short name) with the paper's
    conventions: flat float32 observations of ``task.obs_dim``, actions in [-1, 1], action
    repeat, fixed-length episodes ending in ``truncated=True`` and ``info["success"]`` where
    the simulator defines success. The first ``reset()`` uses ``seed``.

    ``kwargs``: ``render_mode="rgb_array"`` to enable ``render()`` (MuJoCo tasks: without a
    display and ``MUJOCO_GL``, a headless OpenGL backend is chosen first, `gl.prepare_rendering`).
    """
    spec = get_task(task)
    if kwargs.get("render_mode") == "rgb_array" and spec.domain != MANISKILL:  # SAPIEN: Vulkan
        prepare_rendering()  # before the family module imports MuJoCo
    return env_class(spec.domain)(spec, seed, **kwargs)


#: gymnasium namespace of the tasks: ``gymnasium.make("tdmpc2/walker-walk-v0")``
GYM_NAMESPACE = "tdmpc2"


def gym_id(task: str) -> str:
    """``task``'s gymnasium id (``tdmpc2/walker-walk-v0``), registered on first use with
    `make_env` as its entry point, so that its ``EnvSpec`` (kept by Minari exports) makes the
    env anywhere this package is installed."""
    import gymnasium

    name = get_task(task).name
    env_id = f"{GYM_NAMESPACE}/{name}-v0"
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point="tdmpc2_data.envs.make:make_env",
                           kwargs={"task": name}, disable_env_checker=True)  # fmt: skip
    return env_id
