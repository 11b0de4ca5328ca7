"""The task registry must match the published task ids, dims and episode lengths (spec/tasks.md)."""

import json

import pytest
from legacy_fixtures import FIXTURES

from tdmpc2_data.tasks import (
    TASK_SETS,
    TASKS,
    UnknownTaskError,
    get_task,
    padded_dims,
    resolve_task_name,
    resolve_tasks,
    table_index,
)


def test_registry_has_104_tasks_in_four_domains():
    assert len(TASKS) == 104
    counts = {d: len(TASK_SETS[d]) for d in ("dmcontrol", "metaworld", "maniskill", "myosuite")}
    assert counts == {"dmcontrol": 39, "metaworld": 50, "maniskill": 5, "myosuite": 10}
    assert sum(t.custom for t in TASKS.values()) == 11


def test_published_task_order():
    mt30, mt80 = TASK_SETS["mt30"], TASK_SETS["mt80"]
    assert len(mt30) == 30 and len(mt80) == 80 and mt80[:30] == mt30
    assert mt30[0] == "walker-stand" and mt30[12] == "cup-catch" and mt30[29] == "pendulum-spin"
    assert mt80[30] == "mw-assembly" and mt80[41] == "mw-door-open" and mt80[79] == "mw-hand-insert"
    assert mt80.index("mw-bin-picking") == 75 and mt80.index("mw-stick-pull") == 70


@pytest.mark.skipif(not (FIXTURES / "fixtures.json").exists(), reason="shared fixtures missing")
def test_mt30_matches_the_original_config():
    config = json.loads((FIXTURES / "fixtures.json").read_text())["mt30_1M"]["config"]
    assert TASK_SETS["mt30"] == config["tasks"]
    assert [get_task(n).action_dim for n in config["tasks"]] == config["action_dims"]
    assert padded_dims(TASK_SETS["mt30"]) == (24, 6)


def test_dims_and_episode_lengths():
    assert padded_dims(TASK_SETS["mt80"]) == (39, 6)
    walker, door = get_task("walker-walk"), get_task("mw-door-open")
    assert (walker.obs_dim, walker.action_dim, walker.episode_length) == (24, 6, 500)
    assert (door.obs_dim, door.action_dim, door.episode_length) == (39, 4, 100)
    assert get_task("dog-run").obs_dim == 223 and get_task("humanoid-walk").action_dim == 21
    assert get_task("myo-reach").obs_dim == 115 and get_task("myo-pose-hard").action_dim == 39


def test_name_resolution():
    assert resolve_task_name("door-open") == "mw-door-open"
    assert resolve_task_name("Walker_Walk") == "walker-walk"
    assert resolve_task_name("myo-hand-key-turn-hard") == "myo-key-turn-hard"
    assert resolve_task_name("obj-hold") == "myo-obj-hold"
    assert resolve_tasks("door-open,walker-walk") == ["mw-door-open", "walker-walk"]
    assert resolve_tasks("mt30") == TASK_SETS["mt30"]


def test_unknown_and_ambiguous_names_list_close_matches():
    with pytest.raises(UnknownTaskError, match="walker-walk"):
        get_task("walker-wallk")
    with pytest.raises(UnknownTaskError, match="Did you mean"):
        get_task("walker")
    with pytest.raises(ValueError, match="more than once"):
        resolve_tasks("walker-walk,walker-walk")


def test_fewshot_split_holds_out_five_dmcontrol_and_five_metaworld_tasks_of_mt80():
    held = TASK_SETS["mt80-heldout"]
    assert len(set(held)) == 10 and set(held) <= set(TASK_SETS["mt80"])
    domains = [get_task(n).domain for n in held]
    assert domains.count("dmcontrol") == 5 and domains.count("metaworld") == 5


def test_table_index_accepts_ids_and_any_name_of_the_table():
    table = ["walker-walk", "mw-door-open"]
    assert table_index(table, 1, "t") == 1
    assert table_index(table, "door-open", "t") == 1 and table_index(table, "walker-walk", "t") == 0
    for bad in (2, -1, "cheetah-run", "no-such-task"):
        with pytest.raises(KeyError, match="my table"):  # also a ValueError, for the CLIs
            table_index(table, bad, "my table")
    with pytest.raises(ValueError):
        table_index(table, "cheetah-run", "my table")
