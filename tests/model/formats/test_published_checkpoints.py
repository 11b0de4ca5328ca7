"""The published model repo's layout on the local Hub (files at their real paths): every
domain's alias loads its file, the pre-release layout is refused naming another seed, and
``tdmpc2-finetune`` without ``--checkpoint`` picks mt80-5M or mt70-5M by mt70's stored table."""

import shutil
from pathlib import Path

import pytest
import torch
from legacy_fixtures import FIXTURES
from published_writer import multitask_file, pre_release_state, to_flat_layout
from quick_runs import SMALL
from test_model_legacy import assert_matches_reference, outputs

from tdmpc2_data.tasks import TASK_SETS
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.apps.cli import finetune_main
from tdmpc2_model.formats.legacy import PreReleaseLayoutError
from tdmpc2_model.hub.repo import MODEL_REPO_ENV

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="legacy fixtures not found")
HELD_OUT = TASK_SETS["mt80-heldout"]  # what the test's mt70 file leaves out of its table
MT70 = [t for t in TASK_SETS["mt80"] if t not in HELD_OUT]
#: alias -> (the file it must download, the loaded model's task table)
ALIASES = {
    "mt30-1M": ("multitask/mt30-1M.pt", TASK_SETS["mt30"]),
    "mt80-5M": ("multitask/mt80-5M.pt", TASK_SETS["mt80"]),
    "mt70-5M": ("multitask/mt70-5M.pt", MT70),
    "cheetah-run": ("dmcontrol/cheetah-run-1.pt", ["cheetah-run"]),
    "door-open-2": ("metaworld/mw-door-open-2.pt", ["mw-door-open"]),
    "lift-cube": ("maniskill2/lift-cube-1.pt", ["lift-cube"]),
    "myo-reach": ("myosuite/myo-hand-reach-1.pt", ["myo-reach"]),
    "myo-hand-reach": ("myosuite/myo-hand-reach-1.pt", ["myo-reach"]),
}


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """Files at the published paths: the fixtures, and small models made here (single-task
    ones as the Oct-2023 state dict, multitask ones with a stored config)."""
    root = tmp_path_factory.mktemp("published")
    for folder in ("multitask", "dmcontrol", "metaworld", "maniskill2", "myosuite"):
        (root / folder).mkdir()
    shutil.copy(FIXTURES / "mt30_1M_published.pt", root / "multitask/mt30-1M.pt")
    shutil.copy(FIXTURES / "cheetah-run_1M_state_dict.pt", root / "dmcontrol/cheetah-run-1.pt")
    multitask_file(root / "multitask/mt80-5M.pt", TASK_SETS["mt80"], name="mt80")
    multitask_file(root / "multitask/mt70-5M.pt", MT70)
    for task, path in [("mw-door-open", "metaworld/mw-door-open-2.pt"),
                       ("lift-cube", "maniskill2/lift-cube-1.pt"),
                       ("myo-reach", "myosuite/myo-hand-reach-1.pt")]:  # fmt: skip
        torch.manual_seed(0)
        state = TDMPC2(TDMPC2Config(size="1M", tasks=task)).model.state_dict()
        torch.save({"model": to_flat_layout(state)}, root / path)
    torch.save({"model": pre_release_state()}, root / "dmcontrol/cartpole-swingup-1.pt")
    return root


@pytest.fixture
def published(hub, layout, monkeypatch) -> str:
    repo = f"{hub.user}/tdmpc2-published"
    hub.api().create_repo(repo)
    hub.api().upload_folder(repo_id=repo, folder_path=layout)
    monkeypatch.setenv(MODEL_REPO_ENV, repo)
    return repo


def test_every_domains_alias_loads_the_file_at_its_real_path(hub, published):
    for alias, (path, tasks) in ALIASES.items():
        hub.server.log.clear()
        agent = TDMPC2.from_pretrained(alias)
        assert agent.cfg.task_names == tasks, alias
        asked = {p.split("/resolve/main/")[-1] for _, p, _ in hub.server.log if "/resolve/" in p}
        assert asked == {path}, alias
        assert agent.hub_provenance["source"].startswith(f"{published}/{path}@main")
    ref = torch.load(FIXTURES / "mt30_1M_reference.pt", weights_only=True)
    assert_matches_reference(outputs(TDMPC2.from_pretrained("mt30-1M"), ref), ref, "mt30-1M")
    with pytest.raises(PreReleaseLayoutError) as exc:
        TDMPC2.from_pretrained("cartpole-swingup")  # seed 1: reported pre-release
    message = str(exc.value)
    assert "\n" not in message and "pre-release TD-MPC2 key layout" in message
    assert message.endswith("load another seed of the task instead: cartpole-swingup-2.")


def finetune(task: str, out: Path) -> int:
    """One step of tdmpc2-finetune without --checkpoint."""
    return finetune_main(["--task", task, "--steps", "1", "--seed-steps", "1",
                          "--eval-episodes", "0", "--out", str(out), *SMALL])  # fmt: skip


def test_finetune_without_a_checkpoint_picks_mt80_or_mt70_by_mt70s_stored_table(
    published, tmp_path, capsys
):
    assert finetune("mw-reach", tmp_path / "in") == 0
    assert ("no --checkpoint: finetuning mt80-5M (mw-reach is one of the 70 tasks mt70-5M was "
            "pretrained on, so the mt80 model)") in capsys.readouterr().out  # fmt: skip
    assert TDMPC2.from_pretrained(tmp_path / "in/final").cfg.task_names == TASK_SETS["mt80"]
    assert finetune("door-open", tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert ("no --checkpoint: finetuning mt70-5M (mt70-5M holds mw-door-open out (its stored "
            "task list): the paper's few-shot set-up)") in out  # fmt: skip
    assert "mw-door-open added to mt70-5M's task table as task 70" in out
    final = TDMPC2.from_pretrained(tmp_path / "out/final")
    assert final.cfg.task_names == [*MT70, "mw-door-open"]
    assert finetune("myo-reach", tmp_path / "myo") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no published multitask model has it" in err
    assert "pass --checkpoint" in err and not (tmp_path / "myo").exists()


def test_finetune_without_a_checkpoint_offline_names_the_file_it_needs(
    hub, published, tmp_path, capsys
):
    hub.server.stop()  # and nothing cached
    assert finetune("door-open", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"needs {published}/multitask/mt70-5M.pt" in err
    assert "--checkpoint PATH" in err and "cannot reach" in err


def test_a_task_added_to_a_table_leaves_the_others_alone(layout):
    agent = TDMPC2.from_pretrained(layout / "multitask/mt70-5M.pt", num_samples=64)
    more = agent.with_task("door-open")
    assert more.cfg.task_names == [*MT70, "mw-door-open"] and more.cfg.num_samples == 64
    assert more.model_defaults.task_names == more.cfg.task_names  # what save_pretrained writes
    emb = more.model._task_emb.weight
    assert torch.equal(emb[:70], agent.model._task_emb.weight) and emb[70].abs().max() <= 0.02
    assert more.model._action_masks[70].tolist() == [1, 1, 1, 1, 0, 0]  # Meta-World: 4 dims
    obs = torch.randn(2, more.cfg.obs_dim)
    for task in (0, 69):
        assert torch.equal(more.model.encode(obs, task), agent.model.encode(obs, task))
    assert more.model.encode(obs, 70).shape == (2, more.cfg.latent_dim)
