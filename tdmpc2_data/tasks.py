"""The 104-task registry of the TD-MPC2 paper (DMControl, Meta-World, ManiSkill2, MyoSuite).

Task order inside ``TASK_SETS["mt30"]`` and ``TASK_SETS["mt80"]`` is the published task id
order: the published datasets and checkpoints index tasks by it, so it must never change.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DMCONTROL, METAWORLD, MANISKILL, MYOSUITE = "dmcontrol", "metaworld", "maniskill", "myosuite"

#: Agent steps per episode (action repeat 2 is already folded in for DMControl).
EPISODE_LENGTH = {DMCONTROL: 500, METAWORLD: 100, MANISKILL: 100, MYOSUITE: 100}
#: Simulator steps per agent step; rewards of repeated steps are summed.
ACTION_REPEAT = {DMCONTROL: 2, METAWORLD: 2, MANISKILL: 2, MYOSUITE: 1}
#: Every task acts in [-ACTION_LIMIT, ACTION_LIMIT] (the envs map it to the actuators' bounds).
ACTION_LIMIT = 1.0


@dataclass(frozen=True)
class Task:
    """One task: its global name, simulator, and the dims/horizon of the published agents."""

    name: str
    domain: str
    sim_id: str
    obs_dim: int
    action_dim: int
    episode_length: int
    custom: bool = False

    @property
    def action_repeat(self) -> int:
        return ACTION_REPEAT[self.domain]

    @property
    def has_success(self) -> bool:
        """Whether the simulator reports a per-step success flag for this task."""
        return self.domain in (METAWORLD, MANISKILL, MYOSUITE)


def _task(name: str, domain: str, sim_id: str, obs: int, act: int, custom: bool = False) -> Task:
    return Task(name, domain, sim_id, obs, act, EPISODE_LENGTH[domain], custom)


# DMControl: name -> (dm_control "domain/task" or custom id, obs_dim, action_dim, custom)
_DMC = {
    "walker-stand": ("walker/stand", 24, 6, False),
    "walker-walk": ("walker/walk", 24, 6, False),
    "walker-run": ("walker/run", 24, 6, False),
    "cheetah-run": ("cheetah/run", 17, 6, False),
    "reacher-easy": ("reacher/easy", 6, 2, False),
    "reacher-hard": ("reacher/hard", 6, 2, False),
    "acrobot-swingup": ("acrobot/swingup", 6, 1, False),
    "pendulum-swingup": ("pendulum/swingup", 3, 1, False),
    "cartpole-balance": ("cartpole/balance", 5, 1, False),
    "cartpole-balance-sparse": ("cartpole/balance_sparse", 5, 1, False),
    "cartpole-swingup": ("cartpole/swingup", 5, 1, False),
    "cartpole-swingup-sparse": ("cartpole/swingup_sparse", 5, 1, False),
    "cup-catch": ("ball_in_cup/catch", 8, 2, False),
    "finger-spin": ("finger/spin", 9, 2, False),
    "finger-turn-easy": ("finger/turn_easy", 12, 2, False),
    "finger-turn-hard": ("finger/turn_hard", 12, 2, False),
    "fish-swim": ("fish/swim", 24, 5, False),
    "hopper-stand": ("hopper/stand", 15, 4, False),
    "hopper-hop": ("hopper/hop", 15, 4, False),
    "walker-walk-backwards": ("walker/walk_backwards", 24, 6, True),
    "walker-run-backwards": ("walker/run_backwards", 24, 6, True),
    "cheetah-run-backwards": ("cheetah/run_backwards", 17, 6, True),
    "cheetah-run-front": ("cheetah/run_front", 17, 6, True),
    "cheetah-run-back": ("cheetah/run_back", 17, 6, True),
    "cheetah-jump": ("cheetah/jump", 17, 6, True),
    "hopper-hop-backwards": ("hopper/hop_backwards", 15, 4, True),
    "reacher-three-easy": ("reacher/three_easy", 8, 3, True),
    "reacher-three-hard": ("reacher/three_hard", 8, 3, True),
    "cup-spin": ("ball_in_cup/spin", 8, 2, True),
    "pendulum-spin": ("pendulum/spin", 3, 1, True),
    "dog-stand": ("dog/stand", 223, 38, False),
    "dog-walk": ("dog/walk", 223, 38, False),
    "dog-trot": ("dog/trot", 223, 38, False),
    "dog-run": ("dog/run", 223, 38, False),
    "humanoid-stand": ("humanoid/stand", 67, 21, False),
    "humanoid-walk": ("humanoid/walk", 67, 21, False),
    "humanoid-run": ("humanoid/run", 67, 21, False),
    "quadruped-walk": ("quadruped/walk", 78, 12, False),
    "quadruped-run": ("quadruped/run", 78, 12, False),
}

# Meta-World, in published id order (mt80 ids 30-79). Simulator ids are today's v3 names.
_METAWORLD = [
    "assembly", "basketball", "button-press-topdown", "button-press-topdown-wall",
    "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push",
    "dial-turn", "disassemble", "door-open", "door-close", "drawer-close", "drawer-open",
    "faucet-open", "faucet-close", "hammer", "handle-press-side", "handle-press",
    "handle-pull-side", "handle-pull", "lever-pull", "peg-insert-side", "peg-unplug-side",
    "pick-out-of-hole", "pick-place", "pick-place-wall", "plate-slide", "plate-slide-side",
    "plate-slide-back", "plate-slide-back-side", "push-back", "push", "push-wall", "reach",
    "reach-wall", "shelf-place", "soccer", "stick-push", "stick-pull", "sweep-into", "sweep",
    "window-open", "window-close", "bin-picking", "box-close", "door-lock", "door-unlock",
    "hand-insert",
]  # fmt: skip

# ManiSkill2: name -> (env id, control mode, state obs_dim, action_dim).
MANISKILL_SPECS = {
    "lift-cube": ("LiftCube-v0", "pd_ee_delta_pos", 42, 4),
    "pick-cube": ("PickCube-v0", "pd_ee_delta_pos", 51, 4),
    "stack-cube": ("StackCube-v0", "pd_ee_delta_pos", 55, 4),
    "pick-ycb": ("PickSingleYCB-v0", "pd_ee_delta_pose", 51, 7),
    "turn-faucet": ("TurnFaucet-v0", "pd_ee_delta_pose", 39, 7),
}

# MyoSuite: name -> (MyoSuite id, obs_dim); every hand task has 39 muscle actions.
_MYOSUITE = {}
for _short, _camel, _obs in [
    ("reach", "Reach", 115),
    ("pose", "Pose", 108),
    ("obj-hold", "ObjHold", 91),
    ("key-turn", "KeyTurn", 93),
    ("pen-twirl", "PenTwirl", 83),
]:
    _MYOSUITE[f"myo-{_short}"] = (f"myoHand{_camel}Fixed-v0", _obs)
    _MYOSUITE[f"myo-{_short}-hard"] = (f"myoHand{_camel}Random-v0", _obs)


def _build_registry() -> dict[str, Task]:
    tasks = [_task(n, DMCONTROL, s, o, a, c) for n, (s, o, a, c) in _DMC.items()]
    tasks += [_task(f"mw-{n}", METAWORLD, f"{n}-v3", 39, 4) for n in _METAWORLD]
    tasks += [_task(n, MANISKILL, s[0], s[2], s[3]) for n, s in MANISKILL_SPECS.items()]
    tasks += [_task(n, MYOSUITE, s, o, 39) for n, (s, o) in _MYOSUITE.items()]
    return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _build_registry()

#: Task sets; list order is the task id order of the published data and checkpoints.
TASK_SETS: dict[str, list[str]] = {
    "mt30": list(_DMC)[:30],
    "mt80": list(_DMC)[:30] + [f"mw-{n}" for n in _METAWORLD],
    "dmcontrol": [n for n, t in TASKS.items() if t.domain == DMCONTROL],
    "metaworld": [n for n, t in TASKS.items() if t.domain == METAWORLD],
    "maniskill": [n for n, t in TASKS.items() if t.domain == MANISKILL],
    "myosuite": [n for n, t in TASKS.items() if t.domain == MYOSUITE],
    "all": list(TASKS),
    # Few-shot split of this project (the paper holds out 5 DMControl + 5 Meta-World tasks of
    # mt80 without naming them): each held-out task keeps close relatives in pretraining.
    "mt80-heldout": [
        "walker-run",
        "reacher-three-hard",
        "cup-spin",
        "cheetah-jump",
        "hopper-hop-backwards",
        "mw-button-press-wall",
        "mw-door-open",
        "mw-drawer-open",
        "mw-lever-pull",
        "mw-window-close",
    ],  # fmt: skip
}

# Names used by the paper's result files (`myo-hand-reach`, ...) and Meta-World's own names.
ALIASES: dict[str, str] = {
    n.replace("myo-", "myo-hand-", 1): n for n in TASKS if n.startswith("myo-")
}


class UnknownTaskError(KeyError):
    """A task or task-set name that does not resolve to exactly one known name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


#: the longest task name an error message repeats whole (real names have under 40 characters)
SHOWN_CHARS = 80


def shown(name: object) -> str:
    """``repr(name)`` for a message, cut to ``SHOWN_CHARS`` characters: a 100,000-character
    name given by mistake is not echoed whole."""
    text = repr(name)
    return (
        text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 5]}...' ({len(text)} chars)"
    )


def resolve_task_name(name: str) -> str:
    """Full task name for ``name``: exact names, aliases and unambiguous short names
    (``door-open`` -> ``mw-door-open``) resolve; anything else raises UnknownTaskError."""
    key = name.strip().lower().replace("_", "-")
    if key in TASKS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    prefixed = [n for n in TASKS if n in (f"mw-{key}", f"myo-{key}")]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(key[:SHOWN_CHARS], list(TASKS) + list(ALIASES), n=5,
                                      cutoff=0.6)  # fmt: skip
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownTaskError(
        f"Unknown task {shown(name)}.{hint} Run `tdmpc2-data list` for all {len(TASKS)} tasks."
    )


class TaskNotInTableError(UnknownTaskError, ValueError):
    """A task id or name that is not in a dataset's task table."""


def table_index(
    table: Sequence[str], task: str | int, where: str, option: str | None = None
) -> int:
    """Index of ``task`` in the task table ``table``: an id, a name of the table, or any name
    that resolves to one (alias, unambiguous short name). The one task-id lookup of the
    package: datasets, writers, the loader's options and model configs all use it.

    ``where`` names the table in the error ("dataset data/x", "this model"); ``option``,
    when given, names the argument that held ``task`` ("task_weights names 'x', ...")."""
    if isinstance(task, numbers.Integral):
        if 0 <= task < len(table):
            return int(task)
        given, problem = f"id {task}", f"outside {where}'s {len(table)} tasks"
    else:
        try:
            name = task if task in table else resolve_task_name(task)
        except UnknownTaskError:
            name = task
        if name in table:
            return list(table).index(name)
        given, problem = shown(task), f"not in {where} (tasks: {', '.join(table) or 'none'})"
    raise TaskNotInTableError(
        f"{option} names {given}, which is {problem}." if option else f"Task {given} is {problem}."
    )


def get_task(name: str) -> Task:
    """The Task for a full, alias or unambiguous short name."""
    return TASKS[resolve_task_name(name)]


def resolve_tasks(spec: str | list[str]) -> list[str]:
    """Task names for a task-set name (``mt80``), a comma list, or a list of names."""
    if isinstance(spec, str):
        if spec in TASK_SETS:
            return list(TASK_SETS[spec])
        spec = [s for s in spec.split(",") if s.strip()]
    names = [resolve_task_name(s) for s in spec]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Task list names {duplicates} more than once.")
    return names


def padded_dims(tasks: Sequence[str | Task | Mapping[str, Any]]) -> tuple[int, int]:
    """(obs_dim, action_dim) that every task fits in after zero padding: the widest of each.
    Tasks are names, Task objects or task-table entries (``obs_dim``/``action_dim`` keys)."""
    obs, action = zip(*map(_dims, tasks), strict=True)
    return max(obs), max(action)


def _dims(task: str | Task | Mapping[str, Any]) -> tuple[int, int]:
    if isinstance(task, Mapping):
        return int(task["obs_dim"]), int(task["action_dim"])
    spec = task if isinstance(task, Task) else get_task(task)
    return spec.obs_dim, spec.action_dim
