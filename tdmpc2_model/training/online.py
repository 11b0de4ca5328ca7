"""Online RL on one task (paper Sec. 4): train from scratch, finetune a pretrained model,
evaluate. Used by `tdmpc2-train`, `tdmpc2-finetune` and `tdmpc2-eval`.

The loop's state (buffer, random streams, counters) is one `OnlineState`; the env speaks the
model's widths through one `PaddedEnv`. ``resume=True`` continues from the newest checkpoint
of ``OUT`` and ends as the run that was never stopped. The loop and the run directory:
docs/online.md; resuming: docs/reliability.md#crash-safe-runs; held-out tasks:
docs/design.md#online-training-and-few-shot-finetuning.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tdmpc2_data import open_dataset
from tdmpc2_data.atomic import write_text_atomic
from tdmpc2_data.envs import PaddedEnv
from tdmpc2_data.episode import Actor, Episode
from tdmpc2_data.format import ShardWriter, compact, finalize
from tdmpc2_data.jsonfile import read_json
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.tasks import Task
from tdmpc2_model.agent import TDMPC2
from tdmpc2_model.core.update import check_losses
from tdmpc2_model.evaluation.episodes import (
    EvalResult,
    OnlineError,
    check_task,
    evaluate,
    padded_env,
    planner_actor,
)
from tdmpc2_model.formats.run_checkpoint import latest_checkpoint, save_atomically, save_checkpoint
from tdmpc2_model.outputs.loggers import numeric, parse_loggers
from tdmpc2_model.outputs.metrics_csv import lightning_loggers
from tdmpc2_model.outputs.run_record import append_record
from tdmpc2_model.training.checkpoints import resume_latest
from tdmpc2_model.training.random_streams import RandomStreams, Stream
from tdmpc2_model.training.replay import ReplayBuffer
from tdmpc2_model.training.settings import OnlineConfig

BUFFER_DIR, FINAL_DIR, RUN_FILE = "buffer", "final", "run.json"


# ---------------------------------------------------------------------- training loop
@dataclass
class TrainResult:
    """What an online run produced (the agent is the trained one, in eval mode)."""

    agent: TDMPC2
    steps: int
    episodes: int
    out: Path
    final: Path
    evaluation: EvalResult | None
    state: OnlineState


@dataclass
class OnlineState:
    """Where an online run is: its replay buffer, random streams and counters. A checkpoint
    keeps the counters (`saved`); resuming restores them and refills the buffer from the
    run's stored episodes (`restore`). Every random draw is a function of (seed, a counter),
    so a resumed run goes on exactly as the uninterrupted one."""

    buffer: ReplayBuffer
    streams: RandomStreams
    step: int = 0  # environment steps taken
    episode: int = 0  # episodes finished, all of them added to the buffer
    updates: int = 0  # gradient updates made
    losses: list[dict[str, float]] = field(default_factory=list)  # the current episode's

    def saved(self) -> dict[str, int]:
        """What a checkpoint keeps besides the step."""
        return {"updates": self.updates}

    def restore(
        self, saved: dict[str, Any], stored: Iterator[tuple[np.ndarray, ...]], seed_steps: int
    ) -> None:
        """The counters of a checkpoint's trainer state ``saved``, and its episodes (the
        first of ``stored``: checkpoints are taken at episode ends) back in the buffer."""
        self.step = saved["step"]
        self.updates = saved.get("updates", updates_due(self.step, seed_steps))  # older ones
        while self.episode < self.step // self.buffer.length:
            data = next(stored, None)
            if data is None:
                raise OnlineError(
                    f"The run's stored episodes are fewer than its checkpoint at step "
                    f"{self.step} has seen; the run's replay buffer was changed or removed."
                )
            self.add(*data)

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        """A finished episode into the replay buffer (model widths)."""
        self.buffer.add(obs, action, reward)
        self.episode += 1

    def update(self, agent: TDMPC2, seed_steps: int) -> None:
        """Make the updates the schedule owes by now (none before an episode is stored)."""
        cfg = agent.cfg
        while self.updates < updates_due(self.step, seed_steps) and self.buffer.episodes:
            self.streams.use(Stream.UPDATE, self.updates)
            self.buffer.generator.manual_seed(self.streams.value(Stream.REPLAY, self.updates))
            info = agent.update(self.buffer.sample(cfg.batch_size, cfg.horizon))
            check_losses(info, self.updates + 1)  # stop before a checkpoint holds NaN weights
            self.losses.append(info)
            self.updates += 1

    def actor(self, env: PaddedEnv, planner: Actor, seed_steps: int) -> Actor:
        """How the current episode acts: uniform random actions in the seed phase, then
        ``planner`` (each step's planning draws seeded by the step)."""
        random_actions = self.streams.numpy(Stream.SEED_ACTIONS, self.episode)

        def act(obs: np.ndarray, t0: bool) -> np.ndarray:
            if self.step < seed_steps:
                return env.random_action(random_actions)
            self.streams.use(Stream.PLAN, self.step)
            return planner(obs, t0)

        return act


#: by default evaluation takes at most this share of a run's environment steps (at least one
#: episode at the end), in at most ``MAX_EVALUATIONS`` evaluations of at most
#: ``MAX_EVAL_EPISODES`` episodes; runs of ``LONG_RUN`` steps or more also evaluate the
#: starting point (a 2000-step finetune used to spend a quarter of its time on 20 episodes)
EVAL_SHARE, MAX_EVALUATIONS, MAX_EVAL_EPISODES, LONG_RUN = 0.1, 10, 10, 100_000


@dataclass(frozen=True)
class EvalPlan:
    """When an online run evaluates: every ``every`` steps (0: only at the end), ``episodes``
    episodes each (0: never), and before training when ``at_start``."""

    every: int
    episodes: int
    at_start: bool

    def evaluations(self, steps: int) -> int:
        """Evaluations of a fresh run of ``steps`` steps (at most; at episode ends)."""
        if not self.episodes:
            return 0
        between = len(range(self.every, steps, self.every)) if self.every else 0
        return int(self.at_start) + between + 1

    def line(self, steps: int, episode_length: int) -> str:
        """``evaluating 1 episode every 1000 steps and at the end (2 evaluations, 10% ...)``."""
        if not self.episodes:
            return "no evaluation (--eval-episodes 0)"
        count = self.evaluations(steps)
        between = self.every and self.every < steps
        when = f"every {self.every} steps and at the end" if between else "at the end"
        start = "before training, " if self.at_start else ""
        share = count * self.episodes * episode_length / steps
        return (f"evaluating {self.episodes} episode{'s' * (self.episodes > 1)} {start}{when} "
                f"({count} evaluation{'s' * (count > 1)}, {share:.0%} of the run's {steps} "
                "steps; --eval-every, --eval-episodes, --eval-at-start)")  # fmt: skip


def eval_plan(
    steps: int,
    episode_length: int,
    every: int | None = None,
    episodes: int | None = None,
    at_start: bool | None = None,
) -> EvalPlan:
    """The evaluation plan of a run of ``steps`` steps, defaults (None) fitted to its length:
    ``every``: a tenth of the run, at least what keeps one episode within ``EVAL_SHARE`` of
    it, in thousands; ``at_start``: runs of ``LONG_RUN`` steps or more; ``episodes``: as many
    as keep evaluation within ``EVAL_SHARE`` of the run (1 to ``MAX_EVAL_EPISODES``)."""
    if every is None:
        least = max(steps // MAX_EVALUATIONS, math.ceil(episode_length / EVAL_SHARE))
        every = -(-least // 1000) * 1000
    if at_start is None:
        at_start = steps >= LONG_RUN
    if episodes is None:
        count = EvalPlan(every, 1, at_start).evaluations(steps)
        fit = int(EVAL_SHARE * steps / (count * episode_length))
        episodes = min(MAX_EVAL_EPISODES, max(1, fit))
    return EvalPlan(every, episodes, at_start)


def default_seed_steps(spec: Task) -> int:
    """max(1000, 5 x episode length): the paper's seeding phase of random actions."""
    return max(1000, 5 * spec.episode_length)


def train(
    agent: TDMPC2,
    settings: OnlineConfig,
    *,
    training_data: str | None = None,
    progress: bool = True,
    record: dict[str, Any] | None = None,
) -> TrainResult:
    """Online RL of ``agent`` on ``settings.task`` for ``settings.steps`` environment steps
    (the loop and the run directory ``settings.out``: docs/online.md; resuming:
    docs/reliability.md#crash-safe-runs).

    ``eval_every``, ``eval_episodes``, ``eval_at_start``: evaluate every that many steps (0:
    only at the end), that many episodes each (0: never), and before training; None: fitted
    to ``steps`` (`eval_plan`, shown at the start). ``checkpoint_every``: write ``out/checkpoints/step-N`` every
    that many steps (at the next episode end); the newest ``keep_checkpoints`` stay (0: all).
    ``training_data``: provenance line for the model card. ``logger``: "csv" (``out/logs``,
    always) and/or "tensorboard" (the same rows, beside it). ``record``: the
    command's entry for ``out/run_config.json`` (``run_record.py``). Returns the trained agent
    (eval mode) and where its files are.
    """
    task, out, steps, seed = settings.task, settings.out, settings.steps, settings.seed
    seed_steps, resume, loggers = settings.seed_steps, settings.resume, settings.logger
    eval_every, eval_episodes = settings.eval_every, settings.eval_episodes
    eval_at_start = settings.eval_at_start
    checkpoint_every, keep_checkpoints = settings.checkpoint_every, settings.keep_checkpoints
    spec = check_task(agent, task)
    out, loggers = Path(out), parse_loggers(loggers)
    for name, value in (("steps", steps), ("checkpoint_every", checkpoint_every)):
        if value < 1:
            raise OnlineError(f"Got {name}={value}; must be >= 1.")
    if keep_checkpoints < 0:
        raise OnlineError(f"Got keep_checkpoints={keep_checkpoints}; must be >= 0 (0: keep all).")
    if (eval_every or 0) < 0 or (eval_episodes or 0) < 0:
        raise OnlineError(f"Got eval_every={eval_every}, eval_episodes={eval_episodes}; need >= 0.")
    plan = eval_plan(steps, spec.episode_length, eval_every, eval_episodes, eval_at_start)
    every = plan.every if plan.episodes else 0
    record_run = _open_run(out, spec, agent, seed, seed_steps, resume)
    seed, seed_steps = record_run["seed"], record_run["seed_steps"]
    append_record(out, record, device=str(agent.device), seed=seed, seed_steps=seed_steps,
                  eval_plan=asdict(plan))  # fmt: skip
    saved = None
    if resume:
        agent, saved = resume_latest(out, agent)
        check_task(agent, spec.name)
    cfg, length = agent.cfg, spec.episode_length
    env = padded_env(agent, spec, seed)  # every episode resets with a seed of its own
    task_id = cfg.task_id(spec.name) if cfg.multitask else 0
    buffer = ReplayBuffer(cfg.buffer_size, length, cfg.obs_dim, cfg.action_dim, agent.device,
                          seed, task_id)  # fmt: skip
    run = OnlineState(buffer, RandomStreams(seed, agent.device))
    if resume and (out / BUFFER_DIR).exists():  # index an episode flushed just before a kill
        finalize(out / BUFFER_DIR)
    source = {"description": f"tdmpc2-toolkit online RL on {spec.name}", "seed": seed}
    writer = ShardWriter(
        out / BUFFER_DIR,
        tasks=cfg.task_names or [spec.name],
        obs_dim=cfg.obs_dim,
        action_dim=cfg.action_dim,
        sources=[source],
    )
    stored = _stored_episodes(out / BUFFER_DIR, spec)
    if saved is not None:
        run.restore(saved, stored, seed_steps)
    # Episodes stored after the checkpoint: their updates are made again, each with the buffer
    # as it was then, while their actions (from the weights those updates produced) are kept.
    redo = deque(stored)
    planner = planner_actor(agent, spec, eval_mode=False)
    bar = progress_bar(total=steps, initial=min(run.step, steps), desc=f"train {spec.name}",
                       unit="step", enabled=progress, dynamic_ncols=True)  # fmt: skip
    if progress:
        tqdm.write(plan.line(steps, spec.episode_length))
    if resume:
        found = latest_checkpoint(out)
        weights = f"weights of {found}" if found else "no checkpoint yet: the given weights"
        tqdm.write(f"resuming {out} at step {run.step} ({run.episode} episodes in "
                   f"{BUFFER_DIR}/); {weights}")  # fmt: skip
    evaluation, redone = None, len(redo)
    next_checkpoint, next_eval = _next(run.step, checkpoint_every), _next(run.step, every)
    start = time.perf_counter()
    try:
        with writer, MetricsLog(out, loggers) as metrics:

            def evaluate_now() -> EvalResult:
                run.streams.use(Stream.EVALUATE, run.step)
                return _evaluate_and_log(agent, spec, plan.episodes, seed, run.step, metrics)

            if plan.episodes and plan.at_start and run.step == 0 and not redo:  # zero-shot
                evaluation = evaluate_now()
            while redo or run.step < steps:
                # reset (a stored episode is not acted again), then act, step and update
                live = None if redo else Episode(env, run.actor(env, planner, seed_steps),
                                                 seed=seed + run.episode)  # fmt: skip
                for _ in range(length):
                    if live is not None:
                        live.step()
                    run.step += 1
                    bar.update()
                    run.update(agent, seed_steps)
                # store the finished episode: in the run's shards (once) and the replay buffer
                if live is None:
                    obs, action, reward = redo.popleft()
                else:
                    ep = live.data()
                    obs, action, reward = ep["obs"], ep["action"], ep["reward"]
                    writer.add_episode(spec.name, obs, action, reward, ep.get("success"),
                                       source=0, source_index=run.episode)  # fmt: skip
                    writer.flush()
                run.add(obs, action, reward)
                run.update(agent, seed_steps)  # the seed phase's once an episode is stored
                if live is not None:
                    metrics.log(_train_row(run, ep, time.perf_counter() - start))
                    bar.set_postfix(ep_return=f"{ep['return']:.1f}")
                elif not redo:
                    tqdm.write(f"redid the updates of the {redone} episodes stored after it: "
                               f"now at step {run.step}")  # fmt: skip
                run.losses.clear()
                # evaluate and checkpoint when due
                if every and run.step >= next_eval:  # redone episodes were evaluated before
                    if live is not None and run.step < steps:
                        evaluation = evaluate_now()
                    next_eval = _next(run.step, every)
                if run.step >= next_checkpoint:
                    save_checkpoint(out, agent, run.step, training_data, keep_checkpoints,
                                    run.saved())  # fmt: skip
                    next_checkpoint = _next(run.step, checkpoint_every)
            # the final checkpoint comes before the final evaluation (not redone on resume)
            save_checkpoint(out, agent, run.step, training_data, keep_checkpoints, run.saved())
            if plan.episodes:
                evaluation = evaluate_now()
    finally:
        bar.close()
        env.close()
    compact(out / BUFFER_DIR)
    final = save_atomically(agent, out / FINAL_DIR, training_data)
    return TrainResult(agent, run.step, run.episode, out, final, evaluation, run)


def _next(step: int, every: int) -> int:
    """The first multiple of ``every`` after ``step`` (0 when ``every`` is 0)."""
    return (step // every + 1) * every if every else 0


def updates_due(step: int, seed_steps: int) -> int:
    """Updates the schedule has made by environment step ``step``: none during the seed
    phase, then one per step so far (the seed steps' updates at once)."""
    return step if step >= seed_steps else 0


def _train_row(run: OnlineState, ep: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """A metrics row for a finished episode: its return (and success) and the mean losses of
    the updates made during it."""
    losses = run.losses
    row = {"kind": "train", "step": run.step, "episode": run.episode,
           "episode_return": ep["return"], "updates": len(losses),
           "elapsed_s": round(elapsed, 3)}  # fmt: skip
    if "success" in ep:
        row["episode_success"] = bool(ep["success"][-1])
    row.update({k: float(np.mean([x[k] for x in losses])) for k in (losses[0] if losses else ())})
    return row


class MetricsLog:
    """The run's metrics through the same Lightning loggers as pretraining (``loggers.py``: the
    CSV, and TensorBoard when asked, in ``out/logs/version_N``): a row ``{"kind": "train" or
    "eval", "step": environment steps, field: value...}`` becomes ``<kind>/<field>`` numbers at
    that step and is saved at once, so a killed run keeps every row it logged."""

    def __init__(self, out: Path, loggers: Sequence[str]) -> None:
        self.loggers = lightning_loggers(loggers, out)

    def log(self, row: dict[str, Any]) -> None:
        scalars = numeric(row, row["kind"])
        for logger in self.loggers:
            logger.log_metrics(scalars, step=row["step"])
            logger.save()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        for logger in self.loggers:
            logger.finalize("success" if exc[0] is None else "failed")


def _evaluate_and_log(
    agent: TDMPC2, spec: Task, episodes: int, seed: int, step: int, metrics: MetricsLog
) -> EvalResult:
    start = time.perf_counter()
    result = evaluate(agent, spec.name, episodes, seed=seed + 1_000_000, progress=False)
    metrics.log({"kind": "eval", "step": step, **result.summary()})
    tqdm.write(f"step {step}: {result.line()} ({time.perf_counter() - start:.0f} s)")
    return result


def _open_run(
    out: Path, spec: Task, agent: TDMPC2, seed: int, seed_steps: int | None, resume: bool
) -> dict[str, Any]:
    """Create ``out/run.json`` for a new run, or check it when resuming (seed and seed
    steps of a resumed run are the recorded ones)."""
    path = out / RUN_FILE
    if path.exists() or (out / BUFFER_DIR).exists():
        if not resume:
            raise OnlineError(
                f"{out} already holds an online run; pass --resume to continue it, or choose "
                "another --out (nothing was changed)."
            )
        run = read_json(path, 1 << 20, OnlineError, "run record")  # a few hundred bytes
        if run["task"] != spec.name:
            raise OnlineError(f"{path}: this run trains {run['task']!r}, not {spec.name!r}.")
        return run
    if seed_steps is not None and seed_steps < 0:
        raise OnlineError(f"Got seed_steps={seed_steps}; must be >= 0.")
    run = {"task": spec.name, "seed": seed,
           "seed_steps": default_seed_steps(spec) if seed_steps is None else seed_steps,
           "model_tasks": agent.cfg.task_names, "size": agent.cfg.size}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(run, indent=2) + "\n")
    return run


def _stored_episodes(root: Path, spec: Task) -> Iterator[tuple[np.ndarray, ...]]:
    """The run's stored episodes (obs, action, reward), oldest first, read shard by shard."""
    ds = open_dataset(root)
    for shard, episodes in ds.task_episodes(spec.name):
        info = ds.shards[shard]
        if info.episode_length != spec.episode_length:
            raise OnlineError(
                f"{root}/{info.path}: episodes of {info.episode_length} steps; {spec.name} "
                f"has {spec.episode_length}."
            )
        data = ds.read_shard(shard, episodes=slice(episodes.start, episodes.stop))
        yield from zip(data["obs"], data["action"], data["reward"], strict=True)
