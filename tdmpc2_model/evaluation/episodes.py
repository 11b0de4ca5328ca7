"""Acting with a trained agent in the real simulators: which tasks an agent can act on,
MPPI as an actor, a task's env at the model's widths (`PaddedEnv`), the
paper's evaluation (``evaluate``, `EvalResult`) and a checkpoint as a `tdmpc2-data collect`
policy (``checkpoint_policy``, the ``tdmpc2_data.policies`` entry point)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.envs import PaddedEnv, make_env
from tdmpc2_data.episode import Actor, rollout
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.tasks import Task, UnknownTaskError, get_task
from tdmpc2_model.agent import TDMPC2


class OnlineError(ValueError):
    """Bad input to an online run (task not in the model, run directory mismatch ...)."""


def check_task(agent: TDMPC2, task: str) -> Task:
    """The registry task ``task`` if ``agent`` can act on it, else an error saying why."""
    try:
        spec = get_task(task)
    except UnknownTaskError as exc:
        raise OnlineError(str(exc)) from None
    cfg = agent.cfg
    if cfg.task_names and spec.name not in cfg.task_names:
        if cfg.multitask:
            raise OnlineError(
                f"Task {spec.name!r} is not in this model's task table ({cfg.num_tasks} tasks: "
                f"{', '.join(cfg.task_names[:6])}{' ...' if cfg.num_tasks > 6 else ''}). A "
                "checkpoint's table is fixed by its tensors. To finetune on a held-out task, "
                "pretrain with a table that includes it (e.g. a dataset with the mt80 task "
                "table and episodes of only the other tasks), as in the paper's 70+10 split."
            )
        raise OnlineError(
            f"This single-task model was trained on {cfg.task_names[0]!r}, not {spec.name!r}; "
            "train a new one with `tdmpc2-train`, or finetune a multitask model."
        )
    if spec.obs_dim > cfg.obs_dim or spec.action_dim > cfg.action_dim:
        raise OnlineError(
            f"Task {spec.name!r} has obs/action dims {spec.obs_dim}/{spec.action_dim}; the "
            f"model takes at most {cfg.obs_dim}/{cfg.action_dim}."
        )
    return spec


def padded_env(agent: TDMPC2, spec: Task, seed: int = 0, **kwargs: Any) -> PaddedEnv:
    """``spec``'s env (`make_env` with ``seed`` and ``kwargs``) at ``agent``'s widths."""
    return PaddedEnv(make_env(spec.name, seed=seed, **kwargs), agent.cfg.obs_dim,
                     agent.cfg.action_dim)  # fmt: skip


def planner_actor(agent: TDMPC2, spec: Task, eval_mode: bool = True) -> Actor:
    """MPPI planning (``cfg.plan_action``: a drawn elite's or the mean's first action;
    training mode, ``eval_mode`` False, adds the plan's std as noise); actions at the model's
    width (padding dims 0), for a `padded_env`."""
    task = spec.name if agent.cfg.task_names else None

    def act(obs: np.ndarray, t0: bool) -> np.ndarray:
        return agent.act(obs, t0=t0, eval_mode=eval_mode, task=task)

    return act


@dataclass
class EvalResult:
    """Per-episode rows and their summary. Success of an episode is the success flag at its
    last step, as in the paper's evaluation; None for tasks without one (DMControl)."""

    task: str
    episodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_return(self) -> float:
        return float(np.mean([e["return"] for e in self.episodes]))

    @property
    def success_rate(self) -> float | None:
        flags = [e["success"] for e in self.episodes if e["success"] is not None]
        return float(np.mean(flags)) if flags else None

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "episodes": len(self.episodes),
                "mean_return": self.mean_return, "success_rate": self.success_rate}  # fmt: skip

    def line(self) -> str:
        rate = self.success_rate
        success = "" if rate is None else f", success rate {rate:.2f}"
        return f"{self.task}: mean return {self.mean_return:.2f}{success}"

    def table(self) -> str:
        lines = [f"{'episode':>7} {'return':>10} {'success':>7} {'steps':>5}"]
        for e in self.episodes:
            success = "-" if e["success"] is None else str(int(e["success"]))
            lines.append(f"{e['episode']:>7} {e['return']:>10.2f} {success:>7} {e['length']:>5}")
        lines.append(self.line())
        return "\n".join(lines)


def evaluate(
    agent: TDMPC2,
    task: str,
    episodes: int = 10,
    video_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Run ``episodes`` episodes with MPPI in eval mode (no noise); episode i resets with
    seed ``seed + i``. ``video_dir``: one mp4 per episode (needs ``imageio[ffmpeg]``; without
    a display, a headless OpenGL backend is chosen unless ``MUJOCO_GL`` is set: `make_env`)."""
    if episodes < 1:
        raise OnlineError(f"Got episodes={episodes}; must be >= 1.")
    spec = check_task(agent, task)
    if video_dir is not None:
        try:
            import imageio
        except ImportError:
            raise OnlineError("Videos need imageio: pip install 'imageio[ffmpeg]'.") from None
        Path(video_dir).mkdir(parents=True, exist_ok=True)
    result, act = EvalResult(spec.name), planner_actor(agent, spec)
    env = padded_env(agent, spec, seed, render_mode="rgb_array" if video_dir else None)
    try:
        bar = progress_bar(range(episodes), desc=f"eval {spec.name}", unit="ep", enabled=progress)
        for i in bar:
            ep = rollout(env, act, seed=seed + i, render=video_dir is not None)
            success = None if "success" not in ep else bool(ep["success"][-1])
            result.episodes.append({"episode": i, "return": ep["return"], "success": success,
                                    "length": len(ep["reward"])})  # fmt: skip
            if video_dir is not None:
                path = Path(video_dir) / f"{spec.name}-{i}.mp4"
                imageio.mimsave(path, ep["frames"], fps=30)
            bar.set_postfix(ret=f"{ep['return']:.1f}")
    finally:
        env.close()
    return result


def checkpoint_policy(spec: str) -> Callable[[np.ndarray, str], np.ndarray]:
    """``tdmpc2_data.policies`` entry point: a checkpoint (dir, Hub repo, .pt, alias) as a
    policy ``(obs, task name) -> action`` for `tdmpc2-data collect --policy CKPT`. It plans
    with MPPI in eval mode; episodes are counted per task (fixed lengths) to start each
    episode's plan fresh."""
    agent = TDMPC2.from_pretrained(spec)
    steps: dict[str, int] = {}

    def act(obs: np.ndarray, task: str) -> np.ndarray:
        t = check_task(agent, task)
        n = steps.get(t.name, 0)
        steps[t.name] = n + 1
        name = t.name if agent.cfg.task_names else None
        action = agent.act(np.asarray(obs, np.float32), t0=n % t.episode_length == 0, task=name)
        return action[: t.action_dim]

    return act
