"""Checkpoints of the original implementation load through ``TDMPC2.from_pretrained`` and
reproduce its stored outputs to float32 tolerance (shared/fixtures/legacy, made by the original code)."""

import json
import os
import pickle
import pickletools
import typing
import zipfile
from collections import defaultdict
from pathlib import Path

import published_writer
import pytest
import torch
from legacy_fixtures import FIXTURES
from published_writer import (
    multitask_file,
    omegaconf_like,
    pre_release_state,
    to_flat_layout,
    write_published,
)

from tdmpc2_data.tasks import TASK_SETS
from tdmpc2_model import TDMPC2
from tdmpc2_model.core import functional as Fn
from tdmpc2_model.formats.legacy import (
    LegacyCheckpointError,
    PreReleaseLayoutError,
    load_legacy,
    read_checkpoint,
)

MODELS = ["cheetah-run_1M", "mt30_1M"]
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="legacy fixtures not found")


def outputs(agent: TDMPC2, ref: dict) -> dict[str, torch.Tensor]:
    """Every output the fixture stores, computed as the original's fixture script did."""
    wm, task = agent.model, ref.get("task")
    z, a = ref["z"], ref["action"]
    with torch.no_grad():
        out = {
            "z": wm.encode(ref["obs"], task),
            "next_z": wm.next(z, a, task),
            "reward_logits": wm.reward(z, a, task),
            "q_all": wm.Q(z, a, task, return_type="all"),
            "q_target_all": wm.Q(z, a, task, return_type="all", target=True),
        }
        out["reward"] = Fn.two_hot_inv(out["reward_logits"], agent.cfg.vmin, agent.cfg.vmax)
        for key, kind, target in [("q_min", "min", False), ("q_avg", "avg", False), ("q_target_min", "min", True)]:  # fmt: skip
            torch.manual_seed(7)
            out[key] = wm.Q(z, a, task, return_type=kind, target=target)
        torch.manual_seed(3)
        out["pi_action"], info = wm.pi(z, task)
        for key in ("mean", "log_std", "entropy", "scaled_entropy"):
            out[f"pi_{key}"] = info[key]
    return out


def assert_matches_reference(out: dict[str, torch.Tensor], ref: dict, label: str) -> None:
    """Each output within torch's float32 tolerance of the reference (1e-5 + 1.3e-6 x |ref|):
    float32 matmuls round differently on different CPUs (MKL picks its kernels by CPU), and
    the policy's scaled entropy (|x| up to ~230, six times the entropy) lies 4.4e-5 from its
    float64 value in the reference itself (measured), so a flat 1e-5 there holds only on the
    CPU kind that wrote the fixture. A wrong formula is off by far more."""
    for key, value in out.items():
        torch.testing.assert_close(
            value, ref[key], rtol=1.3e-6, atol=1e-5, msg=lambda m, k=key: f"{label}: {k}: {m}"
        )


@pytest.fixture(scope="module", params=MODELS)
def legacy(request):
    name = request.param
    agent = TDMPC2.from_pretrained(FIXTURES / f"{name}_state_dict.pt")
    ref = torch.load(FIXTURES / f"{name}_reference.pt", weights_only=True)
    return name, agent, ref


def test_reproduces_every_reference_output(legacy):
    name, agent, ref = legacy
    assert not agent.model.training
    out = outputs(agent, ref)
    expected = {k for k in ref if k not in ("obs", "action", "task", "randperm_after_seed7")}
    assert set(out) == expected
    assert_matches_reference(out, ref, name)


def test_inferred_config_matches_the_original(legacy):
    name, agent, _ = legacy
    original = json.loads((FIXTURES / "fixtures.json").read_text())[name]
    cfg, want = agent.cfg, original["config"]
    assert agent.model.total_params == original["params"]
    for key in ("latent_dim", "mlp_dim", "enc_dim", "num_enc_layers", "num_q", "num_bins",
                "task_dim", "action_dim", "simnorm_dim", "multitask"):  # fmt: skip
        assert getattr(cfg, key) == want[key], key
    assert (cfg.vmax - cfg.vmin) / (cfg.num_bins - 1) == want["bin_size"]
    assert (cfg.vmin, cfg.vmax, cfg.log_std_min, cfg.log_std_max) == (-10, 10, -10, 2)
    assert cfg.obs_dim == want["obs_shape"]["state"][0] and cfg.size == "1M"
    if want["multitask"]:
        assert cfg.task_names == want["tasks"] == TASK_SETS["mt30"]
        assert cfg.action_dims == want["action_dims"]
    else:
        assert cfg.discounts == [pytest.approx(0.99)]  # DMControl episode length 500


def test_task_name_of_a_single_task_checkpoint():
    agent = TDMPC2.from_pretrained(FIXTURES / "cheetah-run_1M_state_dict.pt", task="cheetah-run")
    assert agent.cfg.task_names == ["cheetah-run"]
    with pytest.raises(ValueError, match="obs_dim=17"):  # walker needs 24 obs dims
        TDMPC2.from_pretrained(FIXTURES / "cheetah-run_1M_state_dict.pt", task="walker-walk")


@pytest.mark.parametrize("name", MODELS)
def test_old_flat_q_layout_gives_identical_outputs(name, tmp_path):
    state = torch.load(FIXTURES / f"{name}_state_dict.pt", weights_only=True)["model"]
    flat = to_flat_layout(state)
    assert "_Qs.params.9" in flat and "_target_Qs.params.9" in flat
    path = tmp_path / "old.pt"
    torch.save({"model": flat}, path)
    ref = torch.load(FIXTURES / f"{name}_reference.pt", weights_only=True)
    new = outputs(TDMPC2.from_pretrained(FIXTURES / f"{name}_state_dict.pt"), ref)
    old = outputs(TDMPC2.from_pretrained(path), ref)
    for key in new:
        assert torch.equal(new[key], old[key]), key


def test_tensordict_metadata_and_detached_copy_are_dropped():
    _, state = load_legacy(FIXTURES / "mt30_1M_state_dict.pt")
    assert not [k for k in state if "__" in k or "detach" in k or "log_std" in k]
    assert state["_action_masks"].sum().item() == sum(TDMPC2.from_pretrained(
        FIXTURES / "mt30_1M_state_dict.pt").cfg.action_dims)  # fmt: skip


def test_not_a_checkpoint_is_refused_naming_the_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(LegacyCheckpointError, match=r"notes\.pt.*weights_only"):
        TDMPC2.from_pretrained(text)
    other = tmp_path / "other.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, other)
    with pytest.raises(
        LegacyCheckpointError, match=r"other\.pt.*missing _encoder\.state\.0\.weight"
    ):
        TDMPC2.from_pretrained(other)
    state = torch.load(FIXTURES / "cheetah-run_1M_state_dict.pt", weights_only=True)["model"]
    del state["_pi.2.bias"]
    state["_reward.1.weight"] = state["_reward.1.weight"][:, :10]
    broken = tmp_path / "broken.pt"
    torch.save({"model": state}, broken)
    with pytest.raises(
        LegacyCheckpointError,
        match=r"broken\.pt.*missing _pi\.2\.bias.*_reward\.1\.weight has shape \(384, 10\)",
    ):
        TDMPC2.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        TDMPC2.from_pretrained(tmp_path / "absent.pt")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"_encoder.state.0.weight": _Exploit(marker)}}, f, protocol=2)
    with pytest.raises(LegacyCheckpointError, match="evil.pt"):
        TDMPC2.from_pretrained(path)
    assert not marker.exists()


def test_unknown_multitask_task_count_needs_a_task_list(tmp_path):
    state = torch.load(FIXTURES / "mt30_1M_state_dict.pt", weights_only=True)["model"]
    state = {k: v for k, v in state.items() if k != "_action_masks"}
    state["_task_emb.weight"] = state["_task_emb.weight"][:29]
    path = tmp_path / "mt29.pt"
    torch.save({"model": state}, path)
    with pytest.raises(LegacyCheckpointError, match="29 task embeddings"):
        TDMPC2.from_pretrained(path)
    agent = TDMPC2.from_pretrained(path, task=TASK_SETS["mt30"][:29])
    assert agent.cfg.num_tasks == 29


def test_one_task_of_a_multitask_checkpoint_keeps_its_task_table():
    """``task="cup-spin"`` names the task to act on, not a 1-task table (a bare mt30 state dict)."""
    path = FIXTURES / "mt30_1M_state_dict.pt"
    agent = TDMPC2.from_pretrained(path, task="cup-spin")
    assert agent.cfg.task_names == TASK_SETS["mt30"]
    with pytest.raises(
        LegacyCheckpointError, match="'door-open' is not in the task table of this mt30"
    ):
        TDMPC2.from_pretrained(path, task="door-open")


# ------------------------------------------------------------------ the published layout
PUBLISHED = FIXTURES / "mt30_1M_published.pt"


def test_published_multitask_file_reproduces_the_reference():
    """{"model", "cfg"}: the config's classes load as stand-ins, its task list is the table."""
    agent = TDMPC2.from_pretrained(PUBLISHED)
    assert agent.cfg.task_names == TASK_SETS["mt30"]
    ref = torch.load(FIXTURES / "mt30_1M_reference.pt", weights_only=True)
    assert_matches_reference(outputs(agent, ref), ref, "published")


def test_the_stored_config_reads_as_omegaconf_reads_it():
    omegaconf = pytest.importorskip("omegaconf")
    _, stored = read_checkpoint(PUBLISHED)
    real = torch.load(PUBLISHED, weights_only=False)["cfg"]  # a trusted fixture: runs omegaconf
    assert stored == omegaconf.OmegaConf.to_container(real)
    assert stored["tasks"] == TASK_SETS["mt30"] and str(stored["work_dir"]).startswith("/root")


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def _opcodes(data: bytes) -> list[tuple]:
    """The pickle's opcodes with memo references resolved: a repeated string or global as
    itself (a pickler memoizes equal strings or not), other objects by order of creation."""
    simple, objects, out = {}, {}, []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("BINPUT", "LONG_BINPUT"):
            if out and out[-1][0] in ("BINUNICODE", "GLOBAL"):
                simple[arg] = out[-1]
            else:
                objects[arg] = len(objects)
        elif op.name in ("BINGET", "LONG_BINGET"):
            out.append(simple.get(arg) or ("GET", objects[arg]))
        else:
            out.append((op.name, arg))
    return out


def test_the_writer_rewrites_the_published_fixture_opcode_for_opcode(tmp_path):
    state, stored = read_checkpoint(PUBLISHED)
    written = write_published(tmp_path / "w.pt", state, stored)
    assert _opcodes(_data_pkl(written)) == _opcodes(_data_pkl(PUBLISHED))


def test_the_stored_task_table_is_the_models_and_must_fit_its_embeddings(tmp_path):
    tasks = [t for t in TASK_SETS["mt80"] if t not in TASK_SETS["mt80-heldout"]]
    path = multitask_file(tmp_path / "mt70.pt", tasks)
    agent = TDMPC2.from_pretrained(path)  # 70 embeddings: only the stored config can say
    assert agent.cfg.task_names == tasks and agent.model._task_emb.weight.shape[0] == 70
    assert TDMPC2.from_pretrained(path, task="walker-walk").cfg.task_names == tasks
    with pytest.raises(LegacyCheckpointError, match="task='door-open' is not in the task table"):
        TDMPC2.from_pretrained(path, task="door-open")
    state, stored = read_checkpoint(path)
    bad = write_published(tmp_path / "bad.pt", state, {**stored, "tasks": tasks[:69]})
    with pytest.raises(LegacyCheckpointError) as exc:
        TDMPC2.from_pretrained(bad)
    assert str(exc.value) == (
        f"{bad}: its stored config lists 69 tasks but it has 70 task embeddings; refused."
    )


class _Call:
    """Pickled as a call of ``func`` with ``args`` (GLOBAL, args, REDUCE)."""

    def __init__(self, func: object, *args: object):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class StringNode:  # an omegaconf class the published files never name
    pass


def _node(cfg, key):
    return cfg._content[key]


HOSTILE = {
    "posix.system": lambda cfg, marker: setattr(
        _node(cfg, "task"), "_val", _Call(os.system, f"touch {marker}")
    ),
    "omegaconf.nodes.StringNode": lambda cfg, marker: setattr(
        _node(cfg, "task"), "__class__", StringNode
    ),
    "omegaconf.dictconfig.DictConfig: created with": lambda cfg, marker: cfg._content.update(
        obs_shape=_Call(published_writer.DictConfig, str(marker))
    ),
    "omegaconf.nodes.AnyNode: called": lambda cfg, marker: cfg._content.update(
        task=_Call(published_writer.AnyNode)
    ),
    "typing.Any: called": lambda cfg, marker: setattr(
        _node(cfg, "task")._metadata, "ref_type", _Call(typing.Any)
    ),
    "collections.defaultdict: made of (list,)": lambda cfg, marker: setattr(
        _node(cfg, "task")._metadata, "resolver_cache", defaultdict(list)
    ),
    "omegaconf.base.Metadata: built from": lambda cfg, marker: setattr(
        _node(cfg, "task")._metadata, "extra", 1
    ),
    "omegaconf.nodes.AnyNode: _val is b'": lambda cfg, marker: setattr(
        _node(cfg, "task"), "_val", b"\x00code"
    ),
}


@pytest.mark.parametrize("refused", HOSTILE)
def test_hostile_configs_are_refused_in_one_line_naming_file_and_global(
    refused, tmp_path, monkeypatch
):
    monkeypatch.setitem(published_writer.NAMES, StringNode, ("omegaconf.nodes", "StringNode"))
    state, stored = read_checkpoint(PUBLISHED)
    cfg, marker = omegaconf_like(stored), tmp_path / "pwned"
    HOSTILE[refused](cfg, marker)
    path = write_published(tmp_path / "hostile.pt", state, cfg)
    with pytest.raises(LegacyCheckpointError) as exc:
        TDMPC2.from_pretrained(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and refused in message
    assert not marker.exists()


def test_the_pre_release_layout_is_refused_in_one_line(tmp_path):
    path = tmp_path / "cartpole-swingup-1.pt"
    torch.save({"model": pre_release_state()}, path)
    with pytest.raises(PreReleaseLayoutError) as exc:
        TDMPC2.from_pretrained(path, task="cartpole-swingup")
    assert str(exc.value) == (
        f"{path}: pre-release TD-MPC2 key layout (Linear and LayerNorm as separate entries, e.g. "
        "_dynamics.0.0.weight), whose mapping to the release layout is unknown; load another "
        "seed of the task instead."
    )
