"""TDMPC2Config: presets, derived fields from the task registry, validation, round trip;
learnable parameter counts of the published architectures."""

import pytest
import torch

from tdmpc2_data.tasks import TASK_SETS, get_task
from tdmpc2_model import TDMPC2Config
from tdmpc2_model.core.config import SIZE_PRESETS
from tdmpc2_model.core.world_model import WorldModel


def count_params(cfg: TDMPC2Config) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return WorldModel(cfg).total_params


@pytest.mark.parametrize(
    "size, tasks, expected",
    [
        ("5M", "mt80", 5_389_930),
        ("1M", "mt30", 1_426_427),
        ("5M", "walker-walk", 4_960_618),
        ("1M", "cheetah-run", 1_212_859),
    ],
)
def test_learnable_params_match_the_original(size, tasks, expected):
    assert count_params(TDMPC2Config(size=size, tasks=tasks)) == expected


@pytest.mark.parametrize("size", list(SIZE_PRESETS))
@pytest.mark.parametrize("tasks", ["mt80", "mt30", "walker-walk"])
def test_every_preset_builds_near_its_nominal_size(size, tasks):
    nominal = float(size[:-1]) * 1e6
    assert 0.8 * nominal < count_params(TDMPC2Config(size=size, tasks=tasks)) < 1.5 * nominal


def test_target_and_detached_q_are_not_learnable():
    model = WorldModel(TDMPC2Config(size="1M", tasks="cheetah-run"))
    names = [n for n, p in model.named_parameters()]
    assert not [n for n in names if "target" in n or "detach" in n]
    assert {n for n, _ in model.named_buffers()} >= {"_target_Qs_params.0.weight"}


def test_size_accepts_number_and_string():
    for size in ("5M", "5m", 5, "5"):
        assert TDMPC2Config(size=size, tasks="walker-walk").size == "5M"
    with pytest.raises(ValueError, match="size=7"):
        TDMPC2Config(size=7, tasks="walker-walk")


def test_multitask_preset_uses_published_task_order_and_padding():
    cfg = TDMPC2Config(size="5M", tasks="mt80")
    assert cfg.multitask and cfg.task_names == TASK_SETS["mt80"] and cfg.num_tasks == 80
    assert (cfg.obs_dim, cfg.action_dim, cfg.task_dim) == (39, 6, 96)
    assert cfg.action_dims[TASK_SETS["mt80"].index("mw-door-open")] == 4
    assert (cfg.latent_dim, cfg.mlp_dim, cfg.num_q) == (512, 512, 5)


def test_mt30_quirks():
    assert TDMPC2Config(size="1M", tasks="mt30").task_dim == 96
    for size in ("5M", "19M", "48M"):
        assert TDMPC2Config(size=size, tasks="mt30").task_dim == 64
    assert TDMPC2Config(size="19M", tasks="mt30").latent_dim == 512
    assert TDMPC2Config(size="19M", tasks="mt80").latent_dim == 768


def test_single_task_dims_and_discount_from_registry():
    cfg = TDMPC2Config(size="1M", tasks="door-open")
    task = get_task("mw-door-open")
    assert not cfg.multitask and cfg.task_dim == 0 and cfg.task_names == ["mw-door-open"]
    assert (cfg.obs_dim, cfg.action_dim) == (task.obs_dim, task.action_dim)
    assert cfg.discounts == [pytest.approx(0.95)]  # T=100: (20-1)/20
    assert TDMPC2Config(size="1M", tasks="walker-walk").discounts == [pytest.approx(0.99)]


def test_large_action_spaces_plan_longer():
    assert TDMPC2Config(size="1M", tasks="walker-walk").iterations == 6
    assert TDMPC2Config(size="1M", tasks="dog-run").iterations == 8
    assert TDMPC2Config(size="1M", tasks="dog-run", iterations=3).iterations == 3


def test_custom_task_needs_its_dims():
    with pytest.raises(ValueError, match="obs_dim, action_dim, episode_length"):
        TDMPC2Config(size="1M", tasks="my-robot")
    cfg = TDMPC2Config(size="1M", tasks="my-robot", obs_dim=11, action_dim=3, episode_length=200)
    assert (cfg.obs_dim, cfg.action_dim, cfg.task_names) == (11, 3, ["my-robot"])
    assert cfg.discounts == [pytest.approx(0.975)]
    for length, clipped in ((1000, 0.995), (10, 0.95)):  # the heuristic's bounds
        dims = dict(obs_dim=11, action_dim=3, episode_length=length)
        assert TDMPC2Config(size="1M", tasks="my-robot", **dims).discounts == [clipped]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tasks="walker-walk", obs_dim=10), "obs_dim=10"),
        (dict(tasks="walker-walk", num_elites=600), "num_elites=600"),
        (dict(tasks="walker-walk", num_pi_trajs=512), "num_pi_trajs=512"),
        (dict(tasks="walker-walk", latent_dim=100), "latent_dim=100"),
        (dict(tasks="walker-walk", task_dim=32), "task_dim=32"),
        (dict(tasks="walker-walk", num_q=1), "num_q=1"),
        (dict(tasks="walker-walk", min_std=3.0), "min_std=3.0"),
        (dict(tasks="walker-walk", size=None), "size=None"),
        (dict(tasks="walker-walk,my-robot"), "my-robot"),
        (dict(tasks="mt30", multitask=False), "multitask=False with 30 tasks"),
    ],
)
def test_bad_values_are_rejected_quoting_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TDMPC2Config(**kwargs)


def test_dict_round_trip():
    for cfg in (
        TDMPC2Config(size="19M", tasks="mt30"),
        TDMPC2Config(size="1M", tasks="dog-run", lr=1e-3),
        TDMPC2Config(size="1M", tasks="my-robot", obs_dim=11, action_dim=3, episode_length=200),
    ):
        again = TDMPC2Config.from_dict(cfg.to_dict())
        assert again == cfg
    with pytest.raises(ValueError, match="bogus"):
        TDMPC2Config.from_dict({**cfg.to_dict(), "bogus": 1})


def test_config_of_an_older_version_with_retired_fields_loads():
    """Older configs may carry bin_size / seed_steps, which nothing read; they are dropped."""
    cfg = TDMPC2Config(size="1M", tasks="walker-walk")
    old = {**cfg.to_dict(), "bin_size": 0.2, "seed_steps": 2500}
    assert TDMPC2Config.from_dict(old) == cfg
    assert not hasattr(cfg, "bin_size") and not hasattr(cfg, "seed_steps")


def test_task_id_is_the_table_lookup_of_the_model_tasks():
    cfg = TDMPC2Config(size="1M", tasks=["walker-walk", "mw-door-open"])
    assert cfg.task_id("door-open") == 1 and cfg.task_id(0) == 0
    with pytest.raises(ValueError, match=r"Task 'cheetah-run' is not in this model \(tasks: "):
        cfg.task_id("cheetah-run")
    with pytest.raises(ValueError, match="Task id 2 is outside this model's 2 tasks"):
        cfg.task_id(2)
    custom = TDMPC2Config(size="1M", tasks="my-robot", obs_dim=4, action_dim=2, episode_length=9)
    assert custom.task_id(0) == 0 and custom.task_id("my-robot") == 0
    unnamed = TDMPC2Config(size="1M", obs_dim=4, action_dim=2, episode_length=9)
    assert unnamed.task_id(0) == 0
    with pytest.raises(ValueError, match="is not in this model"):
        unnamed.task_id("walker-walk")


def test_a_batch_or_model_that_cannot_fit_is_refused_before_allocating():
    """One estimate (``memory.training_bytes``) serves the CPU pretraining announcement and
    this refusal; a loaded model's tensors are not counted again."""
    from tdmpc2_model import TDMPC2
    from tdmpc2_model.core.memory import estimate_pretrain_bytes, training_bytes

    cfg = TDMPC2Config(size="1M", tasks="walker-walk", batch_size=10**9)
    with pytest.raises(ValueError, match=r"^Got batch_size=1000000000: an update \(horizon 3\)"):
        TDMPC2(cfg)
    small = TDMPC2Config(size="1M", tasks="walker-walk")
    model, update = training_bytes(small, 256, 3)
    assert training_bytes(small, 256, 3, new_model=False) == (0, update)
    assert estimate_pretrain_bytes(small, 256, 3) > model + update > 0
