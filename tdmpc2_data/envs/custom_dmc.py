"""The 11 custom DMControl tasks of TD-MPC2 (spec/tasks.md, "The 11 custom DMControl tasks").

Each is a dm_control ``Task`` subclass of the stock domain's task, run on the stock domain's
``Physics`` class; only the reward (and for cup-spin the initial state) changes. Model changes
are XML files next to this module: longer floors for walker and cheetah (the agents run far
backwards) and a three-link reacher arm.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from dm_control import mujoco
from dm_control.rl import control
from dm_control.suite import (
    ball_in_cup,
    cheetah,
    common,
    hopper,
    pendulum,
    reacher,
    walker,
)
from dm_control.utils.rewards import tolerance

_DIR = Path(__file__).parent
INF = float("inf")


def _model_file(filename: str) -> tuple[str, dict[str, bytes]]:
    return (_DIR / filename).read_text(), common.ASSETS


def _linear(x: float, bounds: tuple[float, float], margin: float, value_at_margin: float):
    return tolerance(
        x, bounds=bounds, margin=margin, value_at_margin=value_at_margin, sigmoid="linear"
    )


def _high(z: float) -> float:
    """1 at or above 1.2 m, gaussian fall-off below (the cheetah's "up" terms)."""
    return tolerance(z, bounds=(1.2, INF), margin=0.6)


class WalkerBackwards(walker.PlanarWalker):
    """Stock walker posture reward times a reward for moving backwards at ``move_speed``."""

    def get_reward(self, physics: walker.Physics) -> float:
        standing = _high(physics.torso_height())
        upright = (1 + physics.torso_upright()) / 2
        stand = (3 * standing + upright) / 4
        speed = self._move_speed
        move = _linear(physics.horizontal_velocity(), (-INF, -speed), speed / 2, 0.5)
        return stand * (5 * move + 1) / 6


class CheetahRunBackwards(cheetah.Cheetah):
    """Run backwards at 8 m/s or faster."""

    def get_reward(self, physics: cheetah.Physics) -> float:
        return _linear(physics.speed(), (-INF, -8.0), 8.0, 0.0)


class CheetahRunOneFoot(cheetah.Cheetah):
    """Run forwards at 6 m/s or faster with the torso and the ``raised`` foot high up."""

    def __init__(self, raised: str, random=None):
        self._raised = raised
        super().__init__(random=random)

    def get_reward(self, physics: cheetah.Physics) -> float:
        z = physics.named.data.xpos
        up = (3 * _high(z[self._raised, "z"]) + 2 * _high(z["torso", "z"])) / 5
        run = _linear(physics.speed(), (6.0, INF), 6.0, 0.0)
        return up * (5 * run + 1) / 6


class CheetahJump(cheetah.Cheetah):
    """Stand on either foot with torso and the other foot high, without moving horizontally."""

    def get_reward(self, physics: cheetah.Physics) -> float:
        z = physics.named.data.xpos
        still = _linear(physics.speed(), (-0.5, 0.5), 0.5, 0.0)
        per_foot = [
            (5 * _high((z["torso", "z"] + z[f, "z"]) / 2) + still) / 6 for f in ("bfoot", "ffoot")
        ]
        return float(np.mean(per_foot))


class HopperHopBackwards(hopper.Hopper):
    """Stock hopper standing term times a reward for hopping backwards at 1 m/s or faster."""

    def __init__(self, random=None):
        super().__init__(hopping=True, random=random)

    def get_reward(self, physics: hopper.Physics) -> float:
        standing = tolerance(physics.height(), (0.6, 2.0))
        return standing * _linear(physics.speed(), (-INF, -1.0), 0.5, 0.5)


class CupSpin(ball_in_cup.BallInCup):
    """Swing the ball around the cup: far from the target and fast, never resting in the cup.

    The ball starts inside the cup in 90% of the episodes (stock catch: never inside)."""

    def initialize_episode(self, physics: ball_in_cup.Physics) -> None:
        start_inside = self.random.uniform() >= 0.1
        while True:  # rejection sampling as in the stock task, plus the in-cup condition
            physics.named.data.qpos["ball_x"] = self.random.uniform(-0.2, 0.2)
            physics.named.data.qpos["ball_z"] = self.random.uniform(0.2, 0.5)
            physics.after_reset()
            if physics.data.ncon == 0 and (physics.in_target() or not start_inside):
                break
        # Skip BallInCup's own placement; run the base Task's episode start.
        super(ball_in_cup.BallInCup, self).initialize_episode(physics)

    def get_reward(self, physics: ball_in_cup.Physics) -> float:
        distance = np.linalg.norm(physics.ball_to_target())
        speed = np.linalg.norm(np.abs(physics.named.data.qvel[["ball_x", "ball_z"]]))
        far = _linear(distance, (0.5, INF), 0.25, 0.5)
        fast = _linear(speed, (6.0, INF), 3.0, 0.5)
        return (1 - physics.in_target()) * (far + 2 * fast) / 3


class PendulumSpin(pendulum.SwingUp):
    """Spin the pole at 9 rad/s or faster, in either direction."""

    def get_reward(self, physics: pendulum.Physics) -> float:
        return _linear(np.linalg.norm(physics.angular_velocity()), (9.0, INF), 4.5, 0.5)


class _Spec(NamedTuple):
    physics: type[mujoco.Physics]
    model: Callable[[], tuple[str, dict[str, bytes]]]
    task: Callable[..., control.Task]
    control_timestep: float | None  # None: one physics step per control step, as stock


_WALKER_XML = partial(_model_file, "walker_long_floor.xml")
_CHEETAH_XML = partial(_model_file, "cheetah_long_floor.xml")
_REACHER_XML = partial(_model_file, "reacher_three_links.xml")

#: Registry ``sim_id`` -> how to build it. Control timesteps are the stock domains'.
SPECS: dict[str, _Spec] = {
    "walker/walk_backwards": _Spec(walker.Physics, _WALKER_XML, partial(WalkerBackwards, 1.0), 0.025),
    "walker/run_backwards": _Spec(walker.Physics, _WALKER_XML, partial(WalkerBackwards, 8.0), 0.025),
    "cheetah/run_backwards": _Spec(cheetah.Physics, _CHEETAH_XML, CheetahRunBackwards, None),
    "cheetah/run_front": _Spec(cheetah.Physics, _CHEETAH_XML, partial(CheetahRunOneFoot, "bfoot"), None),
    "cheetah/run_back": _Spec(cheetah.Physics, _CHEETAH_XML, partial(CheetahRunOneFoot, "ffoot"), None),
    "cheetah/jump": _Spec(cheetah.Physics, _CHEETAH_XML, CheetahJump, None),
    "hopper/hop_backwards": _Spec(hopper.Physics, hopper.get_model_and_assets, HopperHopBackwards, 0.02),
    "reacher/three_easy": _Spec(reacher.Physics, _REACHER_XML, partial(reacher.Reacher, 0.05), None),
    "reacher/three_hard": _Spec(reacher.Physics, _REACHER_XML, partial(reacher.Reacher, 0.015), None),
    "ball_in_cup/spin": _Spec(ball_in_cup.Physics, ball_in_cup.get_model_and_assets, CupSpin, 0.02),
    "pendulum/spin": _Spec(pendulum.Physics, pendulum.get_model_and_assets, PendulumSpin, None),
}  # fmt: skip


def load(
    sim_id: str, random: int | np.random.RandomState | None, time_limit: float = INF
) -> control.Environment:
    """A dm_control Environment for a custom task, like ``dm_control.suite.load`` for stock ones."""
    spec = SPECS[sim_id]
    physics = spec.physics.from_xml_string(*spec.model())
    kwargs = {} if spec.control_timestep is None else {"control_timestep": spec.control_timestep}
    return control.Environment(physics, spec.task(random=random), time_limit=time_limit, **kwargs)
