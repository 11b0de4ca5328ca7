"""Evaluating one model over a task set (mt80, mt30, a list) with the paper's normalized score,
as the original's ``evaluate.py task=mt80`` does: tasks run in worker processes, each task's
result is kept in ``OUT/tasks/<task>.json`` as it finishes (a rerun skips those), and the set's
summary goes to ``OUT/eval.json`` and ``OUT/eval.csv``."""

from __future__ import annotations

import csv
import ctypes
import hashlib
import io
import json
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tdmpc2_data.atomic import write_text_atomic
from tdmpc2_data.collect import episode_seed
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.tasks import DMCONTROL, get_task, resolve_tasks
from tdmpc2_data.versions import package_versions
from tdmpc2_model.agent import TDMPC2
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.evaluation.episodes import OnlineError, check_task, evaluate
from tdmpc2_model.evaluation.malloc import retain_freed_memory
from tdmpc2_model.formats.pretrained import tensors_sha256


def normalized_score(domain: str, mean_return: float, success_rate: float | None) -> float:
    """The paper's normalized score (Sec. 4) of one task: DMControl episode return / 10
    (returns lie in [0, 1000]); Meta-World, ManiSkill2 and MyoSuite success rate x 100."""
    if domain == DMCONTROL:
        return mean_return / 10
    if success_rate is None:
        raise ValueError(f"A {domain} task needs a success rate for its normalized score.")
    return success_rate * 100


@dataclass
class TaskScore:
    """One task's row of eval.json / eval.csv."""

    task: str
    domain: str
    episodes: int
    mean_return: float
    success_rate: float | None
    normalized_score: float


@dataclass
class TaskSetResult:
    """The evaluation of a model over a task set (the eval.json schema)."""

    checkpoint: str | None
    params: int
    seed: int
    episodes: int
    config: dict[str, Any]
    versions: dict[str, str | None]
    tasks: list[TaskScore] = field(default_factory=list)

    @property
    def mean_normalized_score(self) -> float:
        return float(np.mean([t.normalized_score for t in self.tasks]))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_normalized_score"] = self.mean_normalized_score
        return data

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(TaskScore.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(t) for t in self.tasks)
        return buf.getvalue()

    def table(self) -> str:
        lines = [f"{'task':<28} {'return':>9} {'success':>7} {'score':>6}"]
        for t in self.tasks:
            rate = "-" if t.success_rate is None else f"{t.success_rate:.2f}"
            lines.append(f"{t.task:<28} {t.mean_return:>9.1f} {rate:>7} {t.normalized_score:>6.1f}")
        lines.append(f"mean normalized score over {len(self.tasks)} tasks: "
                     f"{self.mean_normalized_score:.2f}")  # fmt: skip
        return "\n".join(lines)


def _score_task(agent: TDMPC2, task: str, episodes: int, seed: int) -> dict[str, Any]:
    """One task's evaluation, seeded by (seed, task) alone so that it does not depend on
    which worker runs it or on which tasks ran before; the caller's random state is kept."""
    device = agent.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(episode_seed(seed, task, 0))
        spec = get_task(task)
        result = evaluate(agent, task, episodes, seed=seed, progress=False)
    score = TaskScore(spec.name, spec.domain, episodes, result.mean_return, result.success_rate,
                      normalized_score(spec.domain, result.mean_return, result.success_rate))  # fmt: skip
    return {**asdict(score), "seed": seed, "rows": result.episodes}


_WORKER_AGENT: TDMPC2 | None = None


class TaskSetInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``evaluate_tasks``: the workers were ended; the message says
    which results were kept."""


def _die_with_parent(parent: int) -> None:
    """Ignore Ctrl-C (the parent ends the workers) and, on Linux, be killed when the parent
    process dies, even by SIGKILL (``PR_SET_PDEATHSIG``): no worker outlives its command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued tasks and end the workers now (``shutdown`` alone waits for the
    running tasks; the executor has no public way to end them before Python 3.14)."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    pool.shutdown()  # joins the workers and frees the executor's queues


def _init_worker(config: dict[str, Any], state: dict[str, torch.Tensor], parent: int) -> None:
    """One thread per worker (the workers share the cores); faster CPU planning (malloc.py);
    the worker ends with its parent (``_die_with_parent``). tqdm gets a thread lock, not its
    multiprocessing one, which an ended worker would leave to the resource tracker (a
    "leaked semaphore" warning as the command exits)."""
    global _WORKER_AGENT
    _die_with_parent(parent)
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(1)
    retain_freed_memory()
    _WORKER_AGENT = TDMPC2.from_state_dict(TDMPC2Config.from_dict(config), state)


def _worker_task(task: str, episodes: int, seed: int) -> dict[str, Any]:
    assert _WORKER_AGENT is not None
    return _score_task(_WORKER_AGENT, task, episodes, seed)


def check_dir_writable(path: Path, flag: str, what: str = "the results") -> None:
    """Fail before hours of evaluation if the directory ``path`` (made if missing) cannot
    hold ``what``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        write_text_atomic(probe, "")
        probe.unlink()
    except OSError as exc:
        raise OnlineError(f"{flag} {path}: cannot write {what} there ({exc}).") from None


def check_writable(out: Path) -> None:
    """``check_dir_writable`` for a task-set evaluation's ``--out`` (and its tasks/ folder)."""
    check_dir_writable(out, "--out")
    (out / "tasks").mkdir(exist_ok=True)


def check_file_writable(path: Path, flag: str) -> None:
    """Fail before the evaluation if the results file ``path`` cannot be written (a probe
    file next to it: permissions, a read-only disk, a missing or non-directory parent)."""
    if path.is_dir():
        raise OnlineError(f"{flag} {path}: is a directory; expected a file to write.")
    probe = path.with_name(f".{path.name}.write-test")
    try:
        write_text_atomic(probe, "")
        probe.unlink()
    except OSError as exc:
        raise OnlineError(f"{flag} {path}: cannot write there ({exc.strerror or exc}).") from None


def model_fingerprint(agent: TDMPC2) -> str:
    """sha256 of the weights and the config (planner settings included): what a stored task
    result must have been made with to be kept by a rerun."""
    digest = hashlib.sha256(tensors_sha256(agent.model.state_dict()).encode())
    digest.update(json.dumps(agent.cfg.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _kept(path: Path, episodes: int, seed: int, model: str) -> dict[str, Any] | None:
    """A task's stored result if it was made by the same model with the same episodes and
    seed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # missing, damaged: evaluated again
        return None
    same = (data.get("episodes"), data.get("seed"), data.get("model")) == (episodes, seed, model)
    return data if same else None


def evaluate_tasks(
    agent: TDMPC2,
    tasks: str | list[str],
    episodes: int = 10,
    workers: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> TaskSetResult:
    """Evaluate ``agent`` on every task of ``tasks`` (a set name, comma list or list) for
    ``episodes`` episodes each, in ``workers`` CPU processes (None: one per core; 1: in this
    process, on the agent's device). Results do not depend on ``workers``. ``out``: a
    directory for eval.json, eval.csv and the per-task results (tasks already there, made with
    the same episodes and seed, are not run again)."""
    names = resolve_tasks(tasks)
    if episodes < 1:
        raise OnlineError(f"Got episodes={episodes}; must be >= 1.")
    names = [check_task(agent, n).name for n in names]
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise OnlineError(f"Got workers={workers}; must be >= 1.")
    out = Path(out) if out is not None else None
    done: dict[str, dict[str, Any]] = {}
    model = model_fingerprint(agent)
    if out is not None:
        check_writable(out)
        for n in names:
            kept = _kept(out / "tasks" / f"{n}.json", episodes, seed, model)
            if kept is not None:
                done[n] = kept
        redone = [n for n in names if n not in done and (out / "tasks" / f"{n}.json").exists()]
        if redone:
            tqdm.write(f"{out / 'tasks'}: {len(redone)} stored result(s) of another model, "
                       "seed or episode count are evaluated again")  # fmt: skip
    todo = [n for n in names if n not in done]
    bar = progress_bar(total=len(names) * episodes, initial=len(done) * episodes, unit="ep",
                       desc="eval", enabled=progress)  # fmt: skip

    def finish(row: dict[str, Any]) -> None:
        row["model"] = model
        done[row["task"]] = row
        if out is not None:
            write_text_atomic(out / "tasks" / f"{row['task']}.json", json.dumps(row, indent=2))
        bar.update(episodes)
        bar.set_postfix(task=row["task"], score=f"{row['normalized_score']:.1f}")

    try:
        if workers == 1 or len(todo) <= 1:
            for n in todo:
                finish(_score_task(agent, n, episodes, seed))
        elif todo:
            state = {k: v.detach().cpu() for k, v in agent.model.state_dict().items()}
            pool = ProcessPoolExecutor(
                min(workers, len(todo)), mp_context=get_context("spawn"), initializer=_init_worker,
                initargs=(agent.cfg.to_dict(), state, os.getpid()),
            )  # fmt: skip
            try:
                futures = [pool.submit(_worker_task, n, episodes, seed) for n in todo]
                for future in as_completed(futures):
                    finish(future.result())
            except BaseException:
                _end_workers(pool)
                raise
            pool.shutdown()
    except KeyboardInterrupt:
        kept = (f"are kept in {out / 'tasks'}; the same command run again reuses them and "
                "evaluates the rest" if out else "were not kept (no out directory)")  # fmt: skip
        raise TaskSetInterrupted(
            f"interrupted; the results of {len(done)} of {len(names)} tasks {kept}."
        ) from None
    finally:
        bar.close()
    fields = list(TaskScore.__dataclass_fields__)
    result = TaskSetResult(
        checkpoint=checkpoint,
        params=agent.model.total_params,
        seed=seed,
        episodes=episodes,
        config=agent.cfg.to_dict(),
        versions=package_versions(),
        tasks=[TaskScore(**{k: done[n][k] for k in fields}) for n in names],
    )
    if out is not None:
        write_text_atomic(out / "eval.json", json.dumps(result.to_dict(), indent=2) + "\n")
        write_text_atomic(out / "eval.csv", result.csv())
    return result
