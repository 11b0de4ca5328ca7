"""`TDMPC2Config`: every hyperparameter of a TD-MPC2 agent, the five size presets, and the
fields derived from the task list (padded dims, action masks, discounts), computed once."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from tdmpc2_data.batch import HORIZON
from tdmpc2_data.tasks import (
    TASK_SETS,
    UnknownTaskError,
    get_task,
    padded_dims,
    resolve_tasks,
    shown,
    table_index,
)

#: Size presets of the published models (paper Table/appendix; fixtures README).
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "1M": dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    "5M": dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    "19M": dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    "48M": dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    "317M": dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
}
ARCH_FIELDS = ("enc_dim", "mlp_dim", "latent_dim", "num_enc_layers", "num_q", "task_dim")
#: Fields of earlier versions that nothing read; ``from_dict`` ignores them in old configs.
RETIRED_FIELDS = frozenset({"bin_size", "seed_steps"})
PLAN_ACTIONS = ("elite", "mean")
#: the largest value of each size field (16x the 317M model's widths and more than any
#: published setting): larger is refused at once, naming the field, before allocating
SIZE_LIMITS = {
    "obs_dim": 1 << 16, "action_dim": 1 << 16, "enc_dim": 1 << 16, "mlp_dim": 1 << 16,
    "latent_dim": 1 << 16, "task_dim": 1 << 16, "num_enc_layers": 64, "num_q": 64,
    "num_bins": 10_001, "simnorm_dim": 1 << 16, "horizon": 1_000, "num_samples": 1 << 20,
    "iterations": 1_000,
}  # fmt: skip
DEFAULT_TASK_DIM = 96


def parse_size(size: str | int) -> str:
    """Canonical preset name for ``"5M"``, ``"5m"``, ``"5"`` or ``5``."""
    text = str(size).strip().upper()
    name = text if text.endswith("M") else f"{text}M"
    if name not in SIZE_PRESETS:
        raise ValueError(f"Got size={size!r}; must be one of {', '.join(SIZE_PRESETS)}.")
    return name


def preset(size: str | int, task_set: str | None = None) -> dict[str, int]:
    """Architecture of a published model; the mt30 models have two quirks (task_dim 64 at
    5M/19M/48M, latent_dim 512 at 19M)."""
    name = parse_size(size)
    arch = dict(SIZE_PRESETS[name], task_dim=DEFAULT_TASK_DIM)
    if task_set == "mt30" and name in ("5M", "19M", "48M"):
        arch["task_dim"] = 64
    if task_set == "mt30" and name == "19M":
        arch["latent_dim"] = 512
    return arch


@dataclass
class TDMPC2Config:
    """Configuration of a TD-MPC2 agent (paper Sec. 3-4 and Appendix; spec/hyperparameters.md).

    Model and task
        size: preset "1M" "5M" "19M" "48M" "317M" (or 1, 5, ...); fills the architecture
            fields left as None. None means every architecture field is given explicitly.
        tasks: a task-set name ("mt80"), a task name ("walker-walk", "door-open"), a comma list
            or a list of names. Several tasks make a multitask model; list order = task ids.
            A name outside the registry is a custom single task (give obs_dim, action_dim
            and episode_length). None: an unnamed single task, same requirements.
        multitask: task embedding + action masks; default True iff more than one task.
        obs_dim, action_dim: model input widths; default the largest over the tasks (the
            others are zero padded). May be larger than needed, never smaller.
        episode_length: agent steps per episode of a custom single task (sets its discount).
        enc_dim, mlp_dim, latent_dim, num_enc_layers, num_q: widths/depths (None: preset).
        task_dim: task embedding size (None: preset for multitask, 0 for single-task).
        num_bins, vmin, vmax: two-hot discrete regression of reward and value on the
            symlog scale (101 bins in [-10, 10]).
        simnorm_dim: SimNorm group size (softmax over groups of 8 latent units).
        dropout: dropout in the first layer of each Q-function.
        log_std_min, log_std_max: range of the policy prior's log std.

    Update (Sec. 3.2, Eq. 3-4)
        batch_size: sampled sub-trajectories per update (256 online, 1024 pretraining).
        horizon: H, latent rollout length of the update and of planning.
        rho: temporal weight of the losses, rho**t at rollout step t.
        consistency_coef, reward_coef, value_coef: loss weights (20 / 0.1 / 0.1).
        lr, enc_lr_scale: Adam learning rate; the encoder uses lr * enc_lr_scale.
        pi_adam_eps: Adam epsilon of the policy optimizer.
        grad_clip_norm: gradient norm clip (model and policy separately).
        tau: EMA rate of the target Q-functions and of the running Q scale.
        entropy_coef: weight of the (action-dim scaled) entropy bonus in the policy loss.
        discount_denom, discount_min, discount_max: discount heuristic,
            frac = T/denom, gamma = clip((frac-1)/frac, min, max).
        buffer_size: replay capacity of online training (steps).

    Planning (Sec. 3.3, MPPI)
        mpc: plan with MPPI; False acts with the policy prior alone.
        iterations: MPPI iterations; None: 6, or 8 when action_dim >= 20.
        num_samples, num_elites, num_pi_trajs: sampled trajectories, elites kept, and
            trajectories drawn from the policy prior.
        min_std, max_std: clamp of the sampling std (max_std is also the initial std).
        temperature: MPPI score temperature.
        plan_action: ``"elite"`` (the original's: one elite drawn by MPPI score, its first
            action) or ``"mean"`` (the plan mean's, paper Sec. 3.3); details: docs/model.md.

    Derived (not arguments; computed in ``__post_init__``)
        task_names, num_tasks, action_dims, episode_lengths, discounts (one per task).
        (The two-hot bin width is computed where it is used, ``functional.two_hot``; the
        online seeding length by ``online.default_seed_steps``.)
    """

    size: str | int | None = "5M"
    tasks: str | list[str] | None = None
    multitask: bool | None = None
    obs_dim: int | None = None
    action_dim: int | None = None
    episode_length: int | None = None
    # architecture
    enc_dim: int | None = None
    mlp_dim: int | None = None
    latent_dim: int | None = None
    num_enc_layers: int | None = None
    num_q: int | None = None
    task_dim: int | None = None
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    simnorm_dim: int = 8
    dropout: float = 0.01
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    # update
    batch_size: int = 256
    horizon: int = HORIZON
    rho: float = 0.5
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    pi_adam_eps: float = 1e-5
    grad_clip_norm: float = 20.0
    tau: float = 0.01
    entropy_coef: float = 1e-4
    discount_denom: float = 5.0
    discount_min: float = 0.95
    discount_max: float = 0.995
    buffer_size: int = 1_000_000
    # planning
    mpc: bool = True
    iterations: int | None = None
    num_samples: int = 512
    num_elites: int = 64
    num_pi_trajs: int = 24
    min_std: float = 0.05
    max_std: float = 2.0
    temperature: float = 0.5
    plan_action: str = "elite"
    # derived
    task_names: list[str] = field(init=False)
    num_tasks: int = field(init=False)
    action_dims: list[int] = field(init=False)
    episode_lengths: list[int] = field(init=False)
    discounts: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self._resolve_tasks()
        self._resolve_architecture()
        self._validate()
        self.discounts = [self._discount(length) for length in self.episode_lengths]
        if self.iterations is None:
            self.iterations = 6 + 2 * int(self.action_dim >= 20)

    def _resolve_tasks(self) -> None:
        spec = self.tasks
        names: list[str]
        custom = False
        if spec is None:
            names, custom = [], True
        else:
            listed = spec.split(",") if isinstance(spec, str) and spec not in TASK_SETS else spec
            try:
                names = resolve_tasks(spec)
            except UnknownTaskError as exc:
                if len(listed) != 1:  # only a lone unknown name is a custom task
                    raise ValueError(f"Got tasks={shown(spec)}: {exc}") from None
                names, custom = [listed[0].strip()], True
        if custom:
            if self.multitask:
                raise ValueError(
                    f"Got tasks={shown(spec)} with multitask=True; multitask models need "
                    "registry task names (see `tdmpc2-data list`)."
                )
            missing = [
                k for k in ("obs_dim", "action_dim", "episode_length") if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(
                    f"Got tasks={shown(spec)}, which is not a registry task; give "
                    f"{', '.join(missing)} for a custom task."
                )
            self.action_dims = [self.action_dim]
            self.episode_lengths = [self.episode_length]
        else:
            if not names:
                raise ValueError(f"Got tasks={shown(spec)}; the task list is empty.")
            registry = [get_task(n) for n in names]
            need_obs, need_act = padded_dims(registry)
            for name, value, need in (
                ("obs_dim", self.obs_dim, need_obs),
                ("action_dim", self.action_dim, need_act),
            ):
                if value is not None and value < need:
                    raise ValueError(f"Got {name}={value}; the tasks {names} need at least {need}.")
            self.obs_dim = need_obs if self.obs_dim is None else self.obs_dim
            self.action_dim = need_act if self.action_dim is None else self.action_dim
            self.action_dims = [t.action_dim for t in registry]
            self.episode_lengths = [t.episode_length for t in registry]
            if self.episode_length is not None and len(names) == 1:
                self.episode_lengths = [self.episode_length]
        self.task_names = names
        self.num_tasks = max(len(names), 1)
        if self.multitask is None:
            self.multitask = len(names) > 1
        self.tasks = names if names else None

    def _resolve_architecture(self) -> None:
        task_set = next((k for k in ("mt30", "mt80") if self.task_names == TASK_SETS[k]), None)
        if self.size is None:
            missing = [k for k in ARCH_FIELDS[:-1] if getattr(self, k) is None]
            if missing:
                raise ValueError(f"Got size=None; then give {', '.join(missing)} explicitly.")
            arch = {"task_dim": DEFAULT_TASK_DIM}
        else:
            self.size = parse_size(self.size)
            arch = preset(self.size, task_set)
        if not self.multitask:
            arch["task_dim"] = 0
        for key in ARCH_FIELDS:
            if getattr(self, key) is None:
                setattr(self, key, arch[key])

    def _validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        check(
            self.multitask or self.task_dim == 0,
            f"Got task_dim={self.task_dim} for a single-task model; must be 0.",
        )
        check(
            self.multitask or len(self.task_names) <= 1,
            f"Got multitask=False with {len(self.task_names)} tasks; several tasks need a "
            "multitask model (task embeddings).",
        )
        check(
            not self.multitask or self.task_dim > 0,
            f"Got task_dim={self.task_dim} for a multitask model; must be > 0.",
        )
        for key in ("obs_dim", "action_dim", "enc_dim", "mlp_dim", "latent_dim", "num_enc_layers",
                    "horizon", "batch_size", "num_samples", "num_elites", "simnorm_dim"):  # fmt: skip
            value = getattr(self, key)
            check(
                isinstance(value, int) and value > 0,
                f"Got {key}={value!r}; must be a positive int.",
            )
        for key, limit in SIZE_LIMITS.items():
            value = getattr(self, key)
            check(
                not isinstance(value, int) or value <= limit,
                f"Got {key}={value}; must be <= {limit}.",
            )
        check(
            self.plan_action in PLAN_ACTIONS,
            f"Got plan_action={self.plan_action!r}; use one of {PLAN_ACTIONS}.",
        )
        check(
            self.num_q >= 2, f"Got num_q={self.num_q}; the TD target needs at least 2 Q-functions."
        )
        check(
            self.num_bins >= 2, f"Got num_bins={self.num_bins}; two-hot regression needs >= 2 bins."
        )
        check(self.vmin < self.vmax, f"Got vmin={self.vmin}, vmax={self.vmax}; need vmin < vmax.")
        check(
            self.latent_dim % self.simnorm_dim == 0,
            f"Got latent_dim={self.latent_dim}; must be a multiple of simnorm_dim={self.simnorm_dim}.",
        )
        check(0 <= self.dropout < 1, f"Got dropout={self.dropout}; must be in [0, 1).")
        check(0 < self.rho <= 1, f"Got rho={self.rho}; must be in (0, 1].")
        check(0 < self.tau <= 1, f"Got tau={self.tau}; must be in (0, 1].")
        check(
            self.log_std_min < self.log_std_max,
            f"Got log_std_min={self.log_std_min}, log_std_max={self.log_std_max}; need min < max.",
        )
        check(
            0 < self.min_std <= self.max_std,
            f"Got min_std={self.min_std}, max_std={self.max_std}; need 0 < min_std <= max_std.",
        )
        check(
            0 <= self.num_pi_trajs < self.num_samples,
            f"Got num_pi_trajs={self.num_pi_trajs}; must be in [0, num_samples={self.num_samples}).",
        )
        check(
            self.num_elites <= self.num_samples,
            f"Got num_elites={self.num_elites}; must be <= num_samples={self.num_samples}.",
        )
        check(
            self.iterations is None or self.iterations >= 1,
            f"Got iterations={self.iterations}; must be >= 1.",
        )
        for length in self.episode_lengths:
            check(length > 0, f"Got episode_length={length}; must be > 0.")
        for i, dims in enumerate(self.action_dims):
            check(
                dims <= self.action_dim,
                f"Got action_dim={self.action_dim}; task {i} needs {dims} action dims.",
            )

    def _discount(self, episode_length: int) -> float:
        """Discount heuristic of the paper: longer episodes, larger discount."""
        frac = episode_length / self.discount_denom
        return float(min(max((frac - 1) / frac, self.discount_min), self.discount_max))

    def task_id(self, task: str | int) -> int:
        """Task id of a task name (full or short) or id; checks that the model knows it."""
        if not self.task_names and task == 0:  # an unnamed single task
            return 0
        return table_index(self.task_names, task, "this model")

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments (resolved), JSON-serialisable, for ``config.json``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def check_fields(cls, values: dict[str, Any], source: str = "--config") -> None:
        """Refuse unknown fields and values of the wrong type (or NaN/Inf floats) naming the
        field: the dataclass would take them and fail much later, deep inside training."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"{source}: unknown TDMPC2Config field(s) {unknown}; known: {sorted(names)}."
            )
        for key, value in values.items():
            if not _has_type(value, hints[key]):
                raise ValueError(f"{source} {key}={value!r}: expected {_type_name(hints[key])}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TDMPC2Config:
        """Inverse of ``to_dict``; unknown keys are an error (they would be silently ignored),
        except ``RETIRED_FIELDS`` of older saved configs, which are dropped."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown TDMPC2Config field(s) {unknown}; known: {sorted(names)}.")
        return cls(**data)


def _has_type(value: Any, tp: Any) -> bool:
    """``value`` fits the annotation ``tp`` (bool is not an int here; an int is a float)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok and math.isfinite(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is float:
        return "a finite number"
    return str(tp) if typing.get_origin(tp) else f"{'an' if tp is int else 'a'} {tp.__name__}"
