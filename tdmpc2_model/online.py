"""Online RL on one task (paper Sec. 4): train from scratch, finetune a pretrained model,
evaluate. Used by `tdmpc2-train`, `tdmpc2-finetune` and `tdmpc2-eval`.

The loop follows the paper's agents: ``seed_steps`` = max(1000, 5 x episode length) steps of
uniform random actions, then as many updates as seed steps at once, then one update per
environment step, with MPPI acting in training mode (plan mean + noise). Finished episodes
go into an in-RAM replay buffer and, flushed one episode at a time, into a shard dataset
(``OUT/buffer``), so the data outlives the run and can join a pretraining set.

Run directory ``OUT``::

    run.json                 task, seed, seed_steps of the run (checked on --resume)
    buffer/                  shard dataset of every finished episode (the replay buffer)
    checkpoints/step-N/      save_pretrained output + trainer_state.pt (optimizers, counters);
                             written to a temp dir and renamed, so a checkpoint is whole or absent
    final/                   save_pretrained output of the finished agent
    metrics.jsonl            one JSON row per episode ("train") and per evaluation ("eval")

Resuming (``resume=True``) loads the newest checkpoint (or keeps the given agent if none was
written yet), refills the replay buffer from ``OUT/buffer`` and continues at the number of
environment steps stored there: episodes finished after the checkpoint are kept, updates
made after it are redone from the checkpoint's weights.

Finetuning a multitask model works on any task of its task table (the embedding row, action
mask and padded widths exist). The paper's few-shot setting (pretrain on 70 of the mt80
tasks, finetune on the 10 held out) is reproduced by pretraining with the full 80-task table,
i.e. on a dataset whose task table is mt80 but which holds episodes of only the 70 tasks; the
held-out tasks then have untrained embedding rows to finetune. A task outside the table
cannot be added to a checkpoint (its tensors fix the table); that is a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tdmpc2_data import open_dataset
from tdmpc2_data.collect import Actor
from tdmpc2_data.collect import rollout as collect_rollout
from tdmpc2_data.envs import make_env
from tdmpc2_data.format import ShardWriter, compact
from tdmpc2_data.tasks import Task, UnknownTaskError, get_task
from tdmpc2_model.agent import TDMPC2

BUFFER_DIR, CHECKPOINTS_DIR, FINAL_DIR = "buffer", "checkpoints", "final"
RUN_FILE, METRICS_FILE, STATE_FILE = "run.json", "metrics.jsonl", "trainer_state.pt"


class OnlineError(ValueError):
    """Bad input to an online run (task not in the model, run directory mismatch ...)."""


# ----------------------------------------------------------------------------- tasks
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


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    return np.pad(np.asarray(x, np.float32), [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


# ---------------------------------------------------------------------- replay buffer
class ReplayBuffer:
    """Episodes of one task (one length T) in RAM, oldest dropped beyond ``capacity`` steps;
    windows of H+1 observations drawn uniformly over transitions (episodes of equal length:
    uniform episode, then uniform start 0..T-H).

    The shard `WindowSampler` plans once over a fixed dataset; online data grows every
    episode, so this small in-memory sampler serves the online loop instead.
    """

    def __init__(
        self,
        capacity: int,
        episode_length: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.length, self.device = episode_length, torch.device(device)
        self.max_episodes = max(1, capacity // episode_length)
        self.obs = torch.empty(0, episode_length + 1, obs_dim, device=self.device)
        self.action = torch.empty(0, episode_length, action_dim, device=self.device)
        self.reward = torch.empty(0, episode_length, device=self.device)
        self.episodes = 0  # stored (<= max_episodes)
        self.added = 0  # ever added
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def num_transitions(self) -> int:
        return self.episodes * self.length

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        """Add one episode: obs [T+1, D], action [T, A], reward [T] (padded widths)."""
        if self.episodes == len(self.obs) < self.max_episodes:  # grow by doubling
            grow = min(self.max_episodes, max(16, 2 * len(self.obs))) - len(self.obs)
            self.obs, self.action, self.reward = (
                torch.cat([x, x.new_zeros(grow, *x.shape[1:])])
                for x in (self.obs, self.action, self.reward)
            )
        i = self.added % self.max_episodes
        for dst, src in ((self.obs, obs), (self.action, action), (self.reward, reward)):
            dst[i] = torch.as_tensor(src, dtype=torch.float32)
        self.added += 1
        self.episodes = min(self.added, self.max_episodes)

    def sample(self, batch_size: int, horizon: int) -> dict[str, torch.Tensor]:
        """``obs`` [H+1, B, D], ``action`` [H, B, A], ``reward`` [H, B] of random windows."""
        if self.episodes == 0:
            raise RuntimeError("The replay buffer is empty; finish an episode first.")
        if horizon > self.length:
            raise ValueError(f"horizon={horizon} is longer than the episodes ({self.length}).")
        ep = torch.randint(self.episodes, (batch_size, 1), generator=self._gen)
        t = torch.randint(self.length - horizon + 1, (batch_size, 1), generator=self._gen)
        t = t + torch.arange(horizon + 1)
        ep, t = ep.to(self.device), t.to(self.device)
        return {
            "obs": self.obs[ep, t].transpose(0, 1),
            "action": self.action[ep, t[:, :-1]].transpose(0, 1),
            "reward": self.reward[ep, t[:, :-1]].transpose(0, 1),
        }


# -------------------------------------------------------------------------- rollouts
def planner_actor(agent: TDMPC2, spec: Task, eval_mode: bool = True) -> Actor:
    """MPPI planning (``eval_mode``: the plan's mean; else mean + the plan's std as noise)."""
    task = spec.name if agent.cfg.task_names else None

    def act(obs: np.ndarray, t0: bool) -> np.ndarray:
        return agent.act(obs, t0=t0, eval_mode=eval_mode, task=task)[: spec.action_dim]

    return act


def rollout(
    env: Any,
    act: Actor,
    obs_dim: int,
    action_dim: int,
    seed: int | None = None,
    on_step: Callable[[], None] | None = None,
    render: bool = False,
) -> dict[str, Any]:
    """``tdmpc2_data.collect.rollout`` with obs and actions zero padded to the model's widths."""
    episode = collect_rollout(env, act, seed, on_step, render)
    episode["obs"] = _pad(episode["obs"], obs_dim)
    episode["action"] = _pad(episode["action"], action_dim)
    return episode


# -------------------------------------------------------------------------- evaluation
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
    """Run ``episodes`` episodes with MPPI in eval mode (plan mean); episode i resets with
    seed ``seed + i``. ``video_dir``: one mp4 per episode (needs ``imageio[ffmpeg]`` and, on
    a machine without display, ``MUJOCO_GL=egl`` or ``osmesa``)."""
    if episodes < 1:
        raise OnlineError(f"Got episodes={episodes}; must be >= 1.")
    spec = check_task(agent, task)
    if video_dir is not None:
        try:
            import imageio
        except ImportError:
            raise OnlineError("Videos need imageio: pip install 'imageio[ffmpeg]'.") from None
        Path(video_dir).mkdir(parents=True, exist_ok=True)
    result, cfg, act = EvalResult(spec.name), agent.cfg, planner_actor(agent, spec)
    env = make_env(spec.name, seed=seed, render_mode="rgb_array" if video_dir else None)
    try:
        bar = tqdm(range(episodes), desc=f"eval {spec.name}", unit="ep", disable=not progress)
        for i in bar:
            ep = rollout(env, act, cfg.obs_dim, cfg.action_dim, seed=seed + i,
                         render=video_dir is not None)  # fmt: skip
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


def default_seed_steps(spec: Task) -> int:
    """max(1000, 5 x episode length): the paper's seeding phase of random actions."""
    return max(1000, 5 * spec.episode_length)


def train(
    agent: TDMPC2,
    task: str,
    out: str | os.PathLike,
    steps: int,
    *,
    seed: int = 0,
    seed_steps: int | None = None,
    eval_every: int = 0,
    eval_episodes: int = 10,
    checkpoint_every: int = 50_000,
    resume: bool = False,
    training_data: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Online RL of ``agent`` on ``task`` for ``steps`` environment steps (see the module
    docstring for the loop, the run directory ``out`` and resuming).

    ``eval_every``: evaluate at the start and every that many steps (0: only at the end;
    ``eval_episodes`` 0: never). ``checkpoint_every``: write ``out/checkpoints/step-N`` every
    that many steps (at the next episode end). ``training_data``: provenance line for the
    model card. Returns the trained agent (eval mode) and where its files are.
    """
    spec = check_task(agent, task)
    out = Path(out)
    for name, value in (("steps", steps), ("checkpoint_every", checkpoint_every)):
        if value < 1:
            raise OnlineError(f"Got {name}={value}; must be >= 1.")
    if eval_every < 0 or eval_episodes < 0:
        raise OnlineError(f"Got eval_every={eval_every}, eval_episodes={eval_episodes}; need >= 0.")
    run = _open_run(out, spec, agent, seed, seed_steps, resume)
    seed, seed_steps = run["seed"], run["seed_steps"]
    if resume:
        agent = _load_latest(out, agent)
        check_task(agent, spec.name)
    cfg, length = agent.cfg, spec.episode_length
    buffer = ReplayBuffer(cfg.buffer_size, length, cfg.obs_dim, cfg.action_dim, agent.device, seed)
    source = {"description": f"tdmpc2-toolkit online RL on {spec.name}", "seed": seed}
    writer = ShardWriter(
        out / BUFFER_DIR,
        tasks=cfg.task_names or [spec.name],
        obs_dim=cfg.obs_dim,
        action_dim=cfg.action_dim,
        sources=[source],
    )
    _refill(buffer, out / BUFFER_DIR, spec)
    step, episode = buffer.added * length, buffer.added
    torch.manual_seed(seed + step)
    random_actions = np.random.default_rng([seed, step])
    env = make_env(spec.name, seed=seed + episode)
    planner = planner_actor(agent, spec, eval_mode=False)
    task_ids = None
    if cfg.multitask:
        task_ids = torch.full((cfg.batch_size,), cfg.task_id(spec.name), device=agent.device)
    owed, losses, evaluation = 0, [], None
    next_eval = (step // eval_every + 1) * eval_every if eval_every and eval_episodes else None
    next_checkpoint = (step // checkpoint_every + 1) * checkpoint_every
    bar = tqdm(total=steps, initial=min(step, steps), desc=f"train {spec.name}", unit="step",
               disable=not progress, dynamic_ncols=True)  # fmt: skip

    def act(obs: np.ndarray, t0: bool) -> np.ndarray:
        if step < seed_steps:
            return random_actions.uniform(-1, 1, spec.action_dim).astype(np.float32)
        return planner(obs, t0)

    def on_step() -> None:
        nonlocal step, owed
        step += 1
        bar.update()
        if step >= seed_steps:  # the seeding phase ends with one update per seed step
            owed += seed_steps if step == seed_steps else 1
        while owed and buffer.episodes:
            batch = buffer.sample(cfg.batch_size, cfg.horizon)
            batch["task"] = task_ids
            losses.append(agent.update(batch))
            owed -= 1

    start = time.perf_counter()
    try:
        with writer, open(out / METRICS_FILE, "a") as metrics:
            if next_eval is not None and step == 0:  # the starting point (zero-shot score)
                evaluation = _evaluate_and_log(agent, spec, eval_episodes, seed, step, metrics)
            while step < steps:
                ep = rollout(env, act, cfg.obs_dim, cfg.action_dim, on_step=on_step)
                buffer.add(ep["obs"], ep["action"], ep["reward"])
                writer.add_episode(spec.name, ep["obs"], ep["action"], ep["reward"],
                                   ep.get("success"), source=0)  # fmt: skip
                writer.flush()
                episode += 1
                _log(metrics, _train_row(step, episode, ep, losses, time.perf_counter() - start))
                losses.clear()
                bar.set_postfix(ep_return=f"{ep['return']:.1f}")
                if next_eval is not None and step >= next_eval and step < steps:
                    evaluation = _evaluate_and_log(agent, spec, eval_episodes, seed, step, metrics)
                    next_eval = (step // eval_every + 1) * eval_every
                if step >= next_checkpoint:
                    _save_checkpoint(out, agent, step, training_data)
                    next_checkpoint = (step // checkpoint_every + 1) * checkpoint_every
            if eval_episodes:
                evaluation = _evaluate_and_log(agent, spec, eval_episodes, seed, step, metrics)
    finally:
        bar.close()
        env.close()
    compact(out / BUFFER_DIR)
    _save_checkpoint(out, agent, step, training_data)
    final = save_atomically(agent, out / FINAL_DIR, training_data)
    return TrainResult(agent, step, episode, out, final, evaluation)


def _train_row(
    step: int, episode: int, ep: dict[str, Any], losses: list[dict[str, float]], elapsed: float
) -> dict[str, Any]:
    """A metrics row for a finished episode: its return (and success) and the mean losses of
    the updates made during it."""
    row = {"kind": "train", "step": step, "episode": episode, "episode_return": ep["return"],
           "updates": len(losses), "elapsed_s": round(elapsed, 3)}  # fmt: skip
    if "success" in ep:
        row["episode_success"] = bool(ep["success"][-1])
    row.update({k: float(np.mean([x[k] for x in losses])) for k in (losses[0] if losses else ())})
    return row


def _log(metrics: Any, row: dict[str, Any]) -> None:
    metrics.write(json.dumps(row) + "\n")
    metrics.flush()


def _evaluate_and_log(
    agent: TDMPC2, spec: Task, episodes: int, seed: int, step: int, metrics: Any
) -> EvalResult:
    result = evaluate(agent, spec.name, episodes, seed=seed + 1_000_000, progress=False)
    _log(metrics, {"kind": "eval", "step": step, **result.summary()})
    tqdm.write(f"step {step}: {result.line()}")
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
        run = json.loads(path.read_text())
        if run["task"] != spec.name:
            raise OnlineError(f"{path}: this run trains {run['task']!r}, not {spec.name!r}.")
        return run
    if seed_steps is not None and seed_steps < 0:
        raise OnlineError(f"Got seed_steps={seed_steps}; must be >= 0.")
    run = {"task": spec.name, "seed": seed,
           "seed_steps": default_seed_steps(spec) if seed_steps is None else seed_steps,
           "model_tasks": agent.cfg.task_names, "size": agent.cfg.size}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(run, indent=2) + "\n")
    return run


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _refill(buffer: ReplayBuffer, root: Path, spec: Task) -> None:
    """Load the run's stored episodes (resume) into the replay buffer."""
    ds = open_dataset(root)
    for shard, episodes in ds.task_episodes(spec.name):
        info = ds.shards[shard]
        if info.episode_length != spec.episode_length:
            raise OnlineError(
                f"{root}/{info.path}: episodes of {info.episode_length} steps; {spec.name} "
                f"has {spec.episode_length}."
            )
        data = ds.read_shard(shard, episodes=slice(episodes.start, episodes.stop))
        for obs, action, reward in zip(data["obs"], data["action"], data["reward"], strict=True):
            buffer.add(obs, action, reward)


def save_atomically(
    agent: TDMPC2, target: Path, training_data: str | None = None, extra: Any = None
) -> Path:
    """``save_pretrained`` (plus ``extra`` as ``trainer_state.pt``) into a temp dir next to
    ``target``, then swap it in: readers see the old directory or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a checkpoint dir is a normal dir
    try:
        agent.save_pretrained(tmp, training_data=training_data)
        if extra is not None:
            torch.save(extra, tmp / STATE_FILE)
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _save_checkpoint(
    out: Path, agent: TDMPC2, step: int, training_data: str | None, keep: int = 2
) -> Path:
    """``out/checkpoints/step-N`` (model + optimizer states); keeps the newest ``keep``."""
    state = {
        "optim": agent.optim.state_dict(),
        "pi_optim": agent.pi_optim.state_dict(),
        "step": step,
    }
    path = save_atomically(agent, out / CHECKPOINTS_DIR / f"step-{step:09d}", training_data, state)
    for old in sorted((out / CHECKPOINTS_DIR).glob("step-*"))[:-keep]:
        shutil.rmtree(old)
    return path


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint of a run directory (checkpoints appear by rename)."""
    found = sorted(Path(out, CHECKPOINTS_DIR).glob("step-*"))
    return found[-1] if found else None


def _load_latest(out: Path, agent: TDMPC2) -> TDMPC2:
    """The newest checkpoint's agent (weights, running scale, optimizer states) on the given
    agent's device, or ``agent`` itself when no checkpoint was written yet."""
    path = latest_checkpoint(out)
    if path is None:
        return agent
    loaded = TDMPC2.from_pretrained(path).to(agent.device)
    state = torch.load(path / STATE_FILE, map_location=agent.device, weights_only=True)
    loaded.optim.load_state_dict(state["optim"])
    loaded.pi_optim.load_state_dict(state["pi_optim"])
    loaded.hub_provenance = getattr(agent, "hub_provenance", None)
    return loaded


# -------------------------------------------------------------- data-collection policy
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
