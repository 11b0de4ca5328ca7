"""Model Hub IO: save_pretrained -> from_pretrained is bit-identical (locally and through a
real local Hub server with the real huggingface_hub client), revisions pin, aliases resolve
to the published legacy layout and reproduce the original's outputs, the cache serves
offline, and bad inputs fail with errors that name the file or repo."""

import json
import re

import pytest
import torch
from safetensors import safe_open
from test_model_legacy import FIXTURES, assert_matches_reference, outputs

from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.formats.legacy import LegacyCheckpointError
from tdmpc2_model.formats.pretrained import (
    CONFIG,
    WEIGHTS,
    ModelHubError,
    _dedupe,
    load_pretrained_dir,
)
from tdmpc2_model.hub.card import card_data
from tdmpc2_model.hub.repo import MODEL_REPO_ENV, resolve_alias

fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="legacy fixtures not found")


def noisy_agent(tasks: str, seed: int = 0) -> TDMPC2:
    """A 1M agent whose every tensor (incl. target Q, running scale) is distinct and nonzero."""
    torch.manual_seed(seed)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks=tasks, num_samples=64, num_elites=8))
    with torch.no_grad():
        for name, t in agent.model.state_dict().items():
            if t.is_floating_point() and name != "_action_masks":
                t.add_(0.05 * torch.randn_like(t))
        agent.scale.value.fill_(3.25)
    return agent


def assert_identical(a: TDMPC2, b: TDMPC2) -> None:
    assert a.cfg == b.cfg
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    assert torch.equal(a.scale.value, b.scale.value)


# ------------------------------------------------------------------ local save / load
@pytest.mark.parametrize("tasks", ["walker-walk", "mt30"])
def test_save_pretrained_round_trip_is_bit_identical(tasks, tmp_path):
    agent = noisy_agent(tasks)
    out = agent.save_pretrained(tmp_path / "model")
    assert {p.name for p in out.iterdir()} == {WEIGHTS, CONFIG, "README.md"}
    loaded = TDMPC2.from_pretrained(out)
    assert_identical(agent, loaded)
    assert not loaded.model.training
    with safe_open(out / WEIGHTS, framework="pt") as f:  # the target Q and masks are stored
        keys = set(f.keys())
    assert "_target_Qs_params.0.weight" in keys and "running_scale" in keys
    assert ("_action_masks" in keys) == (tasks == "mt30")
    config = json.loads((out / CONFIG).read_text())
    assert config["format_version"] == 1 and config["size"] == "1M"
    card = (out / "README.md").read_text()
    assert f"{agent.model.total_params:,}" in card and "hansen2024tdmpc2" in card
    assert ("mt30" if tasks == "mt30" else "walker-walk") in card
    obs = torch.randn(agent.cfg.obs_dim)
    task = "walker-walk" if tasks == "mt30" else None
    torch.manual_seed(5)
    a = agent.act(obs, t0=True, task=task)
    torch.manual_seed(5)
    assert torch.equal(a, loaded.act(obs, t0=True, task=task))


@fixtures
def test_legacy_checkpoint_survives_save_and_load_with_parity(tmp_path):
    agent = TDMPC2.from_pretrained(FIXTURES / "mt30_1M_state_dict.pt")
    loaded = TDMPC2.from_pretrained(agent.save_pretrained(tmp_path / "m"))
    assert_identical(agent, loaded)
    ref = torch.load(FIXTURES / "mt30_1M_reference.pt", weights_only=True)
    assert_matches_reference(outputs(loaded, ref), ref, "saved and loaded")


def test_shared_views_are_stored_once(tmp_path):
    agent = noisy_agent("walker-walk")
    q0 = agent.model._Qs.params[0].weight
    agent.model.register_buffer("_detach_view", q0.detach())  # same memory, second name
    out = agent.save_pretrained(tmp_path / "m")
    with safe_open(out / WEIGHTS, framework="pt") as f:
        assert "_detach_view" not in f.keys() and "_Qs.params.0.weight" in f.keys()
    _, tensors, _ = load_pretrained_dir(out)
    assert torch.equal(tensors["_detach_view"], q0) and torch.equal(
        tensors["_Qs.params.0.weight"], q0
    )
    base = torch.randn(4, 3)  # a slice of shared memory is copied out, not aliased
    kept, aliases = _dedupe({"a": base, "row": base[1]})
    assert aliases == {} and kept["row"].untyped_storage().data_ptr() != base.data_ptr()


def test_overrides_change_planning_but_never_shapes(tmp_path):
    out = noisy_agent("walker-walk").save_pretrained(tmp_path / "m")
    agent = TDMPC2.from_pretrained(out, num_samples=128, iterations=2)
    assert (agent.cfg.num_samples, agent.cfg.iterations) == (128, 2)
    with pytest.raises(ValueError, match="latent_dim=64.*fixed by the checkpoint"):
        TDMPC2.from_pretrained(out, latent_dim=64)
    with pytest.raises(ValueError, match="Task .cheetah-run. is not in this model"):
        TDMPC2.from_pretrained(out, task="cheetah-run")


def test_saving_over_a_model_replaces_it_and_keeps_other_files(tmp_path):
    out = tmp_path / "m"
    noisy_agent("walker-walk", seed=0).save_pretrained(out)
    (out / "notes.txt").write_text("mine")
    second = noisy_agent("walker-walk", seed=1)
    second.save_pretrained(out)
    assert_identical(second, TDMPC2.from_pretrained(out))
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_every_saved_file_gets_the_umask_mode(tmp_path):
    """model.safetensors was written 0600 (safetensors' mode survived the atomic rename) next
    to a 0644 config.json; every file of a saved model and checkpoint gets the umask's mode."""
    import os

    from tdmpc2_model.formats.run_checkpoint import save_atomically

    before = os.umask(0o022)
    try:
        agent = noisy_agent("walker-walk")
        saved = [
            agent.save_pretrained(tmp_path / "m"),
            save_atomically(agent, tmp_path / "c", extra={}),
        ]
    finally:
        os.umask(before)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777)
             for d in saved for p in [d, *d.iterdir()]}  # fmt: skip
    assert set(modes.values()) <= {"0o644", "0o755"}, modes
    assert modes["m/model.safetensors"] == "0o644" and modes["c"] == "0o755"


def test_bad_inputs_fail_naming_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelHubError, match=r"empty: no config\.json.*weights\.bin"):
        TDMPC2.from_pretrained(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG).write_text('{"model_type": "bert"}')
    with pytest.raises(ModelHubError, match=r"other/config\.json: not a TD-MPC2 model config"):
        TDMPC2.from_pretrained(other)
    broken = noisy_agent("walker-walk").save_pretrained(tmp_path / "broken")
    (broken / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ModelHubError, match=r"broken/model\.safetensors: not a readable"):
        TDMPC2.from_pretrained(broken)
    with pytest.raises(ValueError, match="pass the directory"):
        TDMPC2.from_pretrained(broken / WEIGHTS)
    text = tmp_path / "card.md"
    text.write_text("# hello")
    with pytest.raises(LegacyCheckpointError, match=r"card\.md"):
        TDMPC2.from_pretrained(text)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        TDMPC2.from_pretrained(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="not a local path.*alias"):
        TDMPC2.from_pretrained("no-such-task-or-alias")
    with pytest.raises(ValueError, match="revisions apply to Hub repos"):
        TDMPC2.from_pretrained(broken, revision="v1")


def test_damaged_or_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path):
    """64 flipped bytes in the weights fail the recorded sha256; a NaN weight in a file
    without one (written before it was recorded) is refused naming the tensor; such an old
    file with finite weights still loads."""
    from safetensors.torch import load_file, save_file

    root = noisy_agent("walker-walk").save_pretrained(tmp_path / "model")
    with safe_open(root / WEIGHTS, framework="pt") as f:
        metadata = f.metadata()
    assert len(metadata["tensors_sha256"]) == 64
    data = bytearray((root / WEIGHTS).read_bytes())
    data[-200:-136] = bytes(b ^ 0xFF for b in data[-200:-136])  # inside the tensor data
    (root / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ModelHubError, match=r"model/model\.safetensors: .*sha256.*damaged"):
        TDMPC2.from_pretrained(root)

    old = noisy_agent("walker-walk").save_pretrained(tmp_path / "old")
    tensors = load_file(old / WEIGHTS)
    legacy_meta = {k: v for k, v in metadata.items() if k != "tensors_sha256"}
    save_file(tensors, old / WEIGHTS, metadata=legacy_meta)
    assert_identical(TDMPC2.from_pretrained(old), noisy_agent("walker-walk"))
    name = sorted(k for k in tensors if k.endswith("weight"))[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, old / WEIGHTS, metadata=legacy_meta)
    with pytest.raises(ModelHubError, match=rf"old: tensor '{re.escape(name)}' holds 1 non-fin"):
        TDMPC2.from_pretrained(old)


def test_model_card_front_matter_round_trips_through_model_card_load(tmp_path):
    """The card is huggingface_hub's own: ModelCard.load reads back the metadata it was made
    from, the final evaluation as model-index results (no network: validate() is not called)."""
    from huggingface_hub import ModelCard

    agent = noisy_agent("walker-walk")
    plain = ModelCard.load(agent.save_pretrained(tmp_path / "plain") / "README.md")
    assert plain.data.to_dict() == {
        "library_name": "tdmpc2-toolkit",
        "license": "mit",
        "pipeline_tag": "reinforcement-learning",
        "tags": ["reinforcement-learning", "model-based-rl", "world-model", "tdmpc2",
                 "continuous-control", "walker-walk"],
    }  # fmt: skip
    assert plain.data.eval_results is None and "## Evaluation" not in plain.text
    assert plain.text.startswith("\n# TD-MPC2 1M single-task world model\n")

    evaluation = {"task": "walker-walk", "episodes": 3, "mean_return": 512.345,
                  "success_rate": 0.5}  # fmt: skip
    agent.hub_provenance = {"evaluation": evaluation, "datasets": ["someone/walker-data"],
                            "run": {"steps": 100}, "versions": {"torch": "x"}}  # fmt: skip
    card = ModelCard.load(agent.save_pretrained(tmp_path / "run") / "README.md")
    assert card.data.to_dict() == card_data(agent, agent.hub_provenance).to_dict()
    assert card.data.datasets == ["someone/walker-data"]
    assert card.data.model_name == "TD-MPC2 1M single-task world model"
    scores = {(r.task_type, r.dataset_type, r.metric_type): r.metric_value
              for r in card.data.eval_results}  # fmt: skip
    assert scores == {("reinforcement-learning", "walker-walk", "mean_reward"): 512.345,
                      ("reinforcement-learning", "walker-walk", "success_rate"): 0.5}  # fmt: skip
    assert "| walker-walk | 3 | 512.35 | 0.50 |" in card.text
    assert '"steps": 100' in card.text and "{{" not in str(card) and str(card).endswith("```\n")
    agent.hub_provenance["evaluation"] = {**evaluation, "success_rate": None}  # DMControl
    card = ModelCard.load(agent.save_pretrained(tmp_path / "run") / "README.md")  # replaced
    assert [r.metric_type for r in card.data.eval_results] == ["mean_reward"]
    assert "| walker-walk | 3 | 512.35 | - |" in card.text


def test_pretraining_records_the_hub_datasets_of_its_sources(tmp_path):
    from tdmpc2_model.training.pretrain import hub_datasets

    (tmp_path / "local").mkdir()
    sources = [str(tmp_path / "local"), "owner/set", "hf://datasets/org/other@v1/sub",
               "hf://datasets/owner/set", "mt80", "data/not-there/x"]  # fmt: skip
    assert hub_datasets(sources) == ["owner/set", "org/other"]


def test_alias_names():
    """Every domain's alias names its file as the published repo spells it."""
    assert resolve_alias("mt80-317M")[1:3] == ("multitask/mt80-317M.pt", None)
    assert resolve_alias("mt30-48m")[1] == "multitask/mt30-48M.pt"
    assert resolve_alias("MT80-5")[1] == "multitask/mt80-5M.pt"
    assert resolve_alias("mt70-5M")[1] == "multitask/mt70-5M.pt"
    assert resolve_alias("mt70-19")[1] == "multitask/mt70-19M.pt"
    assert resolve_alias("walker-walk")[1:3] == ("dmcontrol/walker-walk-1.pt", "walker-walk")
    assert resolve_alias("walker-walk-3")[1] == "dmcontrol/walker-walk-3.pt"
    assert resolve_alias("door-open-2")[1:3] == ("metaworld/mw-door-open-2.pt", "mw-door-open")
    assert resolve_alias("lift-cube")[1:3] == ("maniskill2/lift-cube-1.pt", "lift-cube")
    assert resolve_alias("pick-ycb-3")[1] == "maniskill2/pick-ycb-3.pt"
    for alias in ("myo-key-turn", "myo-hand-key-turn"):
        assert resolve_alias(alias)[1:3] == ("myosuite/myo-hand-key-turn-1.pt", "myo-key-turn")
    for alias in ("myo-reach-hard-2", "myo-hand-reach-hard-2"):
        assert resolve_alias(alias)[1] == "myosuite/myo-hand-reach-hard-2.pt"
    assert resolve_alias("walker-fly") is None
    assert resolve_alias("walker-walk-4") is None  # published seeds are 1-3
    with pytest.raises(ValueError, match="mt70-1M: mt70 models are published at 5M, 19M only"):
        resolve_alias("mt70-1M")
    with pytest.raises(ValueError, match="mt80-7M: mt80 models are published at 1M, 5M"):
        resolve_alias("mt80-7M")


# ------------------------------------------------------------------ through a real Hub
def test_push_to_hub_then_from_pretrained_is_identical_and_revisions_pin(hub):
    repo = f"{hub.user}/tdmpc2-1m"
    first = noisy_agent("mt30", seed=0)
    c1 = first.push_to_hub(repo, commit_message="first")
    files = set(hub.api().list_repo_files(repo))
    assert {WEIGHTS, CONFIG, "README.md"} <= files
    assert hub.api().model_info(repo).card_data["library_name"] == "tdmpc2-toolkit"
    assert_identical(first, TDMPC2.from_pretrained(repo))

    second = noisy_agent("mt30", seed=1)
    c2 = second.push_to_hub(repo, tag="v2")
    assert c2 != c1
    assert {t.name: t.target_commit for t in hub.api().list_repo_refs(repo).tags} == {"v2": c2}
    assert_identical(second, TDMPC2.from_pretrained(repo, revision="v2"))
    assert_identical(second, TDMPC2.from_pretrained(repo))
    assert_identical(first, TDMPC2.from_pretrained(repo, revision=c1))
    hub.api().create_tag(repo, tag="v1", revision=c1)
    assert_identical(first, TDMPC2.from_pretrained(repo, revision="v1"))

    third = noisy_agent("mt30", seed=2)
    third.push_to_hub(repo, revision="experiment")  # revision: the branch to commit to
    assert_identical(third, TDMPC2.from_pretrained(repo, revision="experiment"))
    assert_identical(second, TDMPC2.from_pretrained(repo))  # main untouched
    with pytest.raises(ModelHubError, match="tag 'v2' of .* already points at commit"):
        third.push_to_hub(repo, revision="experiment", tag="v2")  # tags are never moved
    with pytest.raises(ModelHubError, match="revision 'nope' does not exist"):
        TDMPC2.from_pretrained(repo, revision="nope")


def test_private_push_and_missing_repos(hub):
    repo = f"{hub.user}/private-model"
    noisy_agent("walker-walk").push_to_hub(repo, private=True)
    assert hub.api().repo_info(repo).private
    with pytest.raises(ModelHubError, match=f"{hub.user}/absent not found"):
        TDMPC2.from_pretrained(f"{hub.user}/absent")
    hub.api().create_repo(f"{hub.user}/not-a-model")
    hub.api().upload_file(path_or_fileobj=b"data", path_in_repo="x.bin",
                          repo_id=f"{hub.user}/not-a-model")  # fmt: skip
    with pytest.raises(ModelHubError, match="not-a-model@main has no config.json"):
        TDMPC2.from_pretrained(f"{hub.user}/not-a-model")


def test_cache_dir_force_download_and_local_files_only(hub, tmp_path):
    """The cache keywords of huggingface_hub (and ModelHubMixin.from_pretrained)."""
    repo, cache = f"{hub.user}/cache-kw", tmp_path / "my-cache"
    agent = noisy_agent("walker-walk")
    agent.push_to_hub(repo)
    missing = r"local_files_only=True and .*cache-kw@main .*not in the local cache \(.*my-cache\)"
    with pytest.raises(ModelHubError, match=missing):
        TDMPC2.from_pretrained(repo, cache_dir=cache, local_files_only=True)
    assert_identical(agent, TDMPC2.from_pretrained(repo, cache_dir=cache))
    assert (cache / f"models--{hub.user}--cache-kw").is_dir()
    hub.server.log.clear()
    assert_identical(agent, TDMPC2.from_pretrained(repo, cache_dir=cache, local_files_only=True))
    assert not [p for _, p, _ in hub.server.log if p.endswith(WEIGHTS)]  # the cache answered
    assert_identical(agent, TDMPC2.from_pretrained(repo, cache_dir=cache, force_download=True))
    assert [p for m, p, _ in hub.server.log if m == "GET" and p.endswith(WEIGHTS)]


@pytest.fixture
def mirror(hub, monkeypatch):
    """The published layout on the local Hub: multitask/mt30-1M.pt, dmcontrol/cheetah-run-1.pt."""
    repo = f"{hub.user}/tdmpc2-mirror"
    api = hub.api()
    api.create_repo(repo)
    for local, remote in [("mt30_1M_state_dict.pt", "multitask/mt30-1M.pt"),
                          ("cheetah-run_1M_state_dict.pt", "dmcontrol/cheetah-run-1.pt")]:  # fmt: skip
        api.upload_file(path_or_fileobj=str(FIXTURES / local), path_in_repo=remote, repo_id=repo)
    monkeypatch.setenv(MODEL_REPO_ENV, repo)
    return repo


@fixtures
@pytest.mark.parametrize("alias, name", [("mt30-1M", "mt30_1M"), ("cheetah-run", "cheetah-run_1M")])
def test_alias_downloads_the_legacy_checkpoint_with_parity(mirror, alias, name, tmp_path):
    agent = TDMPC2.from_pretrained(alias)
    ref = torch.load(FIXTURES / f"{name}_reference.pt", weights_only=True)
    assert_matches_reference(outputs(agent, ref), ref, alias)
    card = (agent.save_pretrained(tmp_path / "m") / "README.md").read_text()
    assert mirror in card and (
        "mt30 dataset" in card if alias == "mt30-1M" else "cheetah-run" in card
    )


@fixtures
def test_alias_honours_the_revision(hub, mirror):
    first = hub.api().list_repo_commits(mirror)[-2].commit_id  # only multitask/mt30-1M.pt
    assert TDMPC2.from_pretrained("mt30-1M", revision=first).cfg.num_tasks == 30
    assert TDMPC2.from_pretrained("cheetah-run").cfg.task_names == ["cheetah-run"]
    with pytest.raises(ModelHubError, match="dmcontrol/cheetah-run-1.pt@" + first):
        TDMPC2.from_pretrained("cheetah-run", revision=first)


@fixtures
def test_missing_alias_file_names_the_repo_and_the_variable(mirror):
    with pytest.raises(ModelHubError, match=f"{mirror}/multitask/mt80-5M.pt.*{MODEL_REPO_ENV}"):
        TDMPC2.from_pretrained("mt80-5M")


@fixtures
def test_offline_from_cache(hub, mirror, monkeypatch):
    from huggingface_hub import constants

    repo = f"{hub.user}/cached"
    agent = noisy_agent("walker-walk")
    agent.push_to_hub(repo)
    TDMPC2.from_pretrained(repo)
    TDMPC2.from_pretrained("mt30-1M")
    hub.server.stop()  # the Hub is gone; only the cache can answer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_identical(agent, TDMPC2.from_pretrained(repo))
    assert TDMPC2.from_pretrained("mt30-1M").cfg.num_tasks == 30
    with pytest.raises(ModelHubError, match="HF_HUB_OFFLINE=1 is set.*not in the local cache"):
        TDMPC2.from_pretrained("cheetah-run")


def test_hub_down_serves_the_cache_without_offline_mode(hub, monkeypatch):
    """No HF_HUB_OFFLINE: a dead endpoint is found with one connection attempt, the cached
    model loads, and an uncached one fails at once (not after ~24 s of retries)."""
    repo = f"{hub.user}/down"
    agent = noisy_agent("walker-walk")
    agent.push_to_hub(repo)
    TDMPC2.from_pretrained(repo)
    hub.server.stop()
    assert_identical(agent, TDMPC2.from_pretrained(repo))
    with pytest.raises(ModelHubError, match=f"cannot reach {hub.endpoint} and {hub.user}/gone"):
        TDMPC2.from_pretrained(f"{hub.user}/gone")
