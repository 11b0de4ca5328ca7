"""The run settings dataclasses are the model CLIs: flags, help, defaults, recipes and the
printed configuration all come from them (``tdmpc2_model/training/settings.py``)."""

import dataclasses

import pytest
import yaml

from tdmpc2_model.apps import cli
from tdmpc2_model.training.settings import (
    EvalConfig,
    FinetuneConfig,
    PretrainConfig,
    TrainConfig,
    flag,
    from_recipe,
)

#: each command's parser, settings and the least command line it accepts
COMMANDS = {
    "pretrain": (cli.pretrain_parser, PretrainConfig, {"data": ["data/x"]}),
    "train": (cli.train_parser, TrainConfig, {"task": "walker-walk"}),
    "finetune": (cli.finetune_parser, FinetuneConfig, {"task": "walker-walk"}),
    "eval": (cli.eval_parser, EvalConfig, {"checkpoint": "mt80-1M"}),
}


def _argv(required: dict) -> list[str]:
    return [item for name, value in required.items()
            for item in (flag(name), *([value] if isinstance(value, str) else value))]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_field_has_a_flag_with_a_help_line(command):
    make_parser, kind, _ = COMMANDS[command]
    actions = {a.dest: a for a in make_parser()._actions}
    for field in dataclasses.fields(kind):
        assert flag(field.name) in actions[field.name].option_strings, field.name
        assert actions[field.name].help.strip(), field.name


@pytest.mark.parametrize("command", COMMANDS)
def test_the_dataclass_defaults_are_the_flags_defaults(command):
    make_parser, kind, required = COMMANDS[command]
    settings, record = cli._parse(make_parser(), _argv(required))
    assert settings == kind(**required)
    assert record["settings"] == dataclasses.asdict(settings)


RECIPES = {name: path for name, path in cli.packaged_recipes().items() if name != "quickstart"}


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_and_its_printed_config_loads_back_equal(name, capsys):
    make_parser, kind, _ = COMMANDS[name.split("-")[0]]
    recipe = cli.load_recipe(RECIPES[name])
    loaded = from_recipe(kind, recipe, name)
    settings, _ = cli._parse(make_parser(), ["--recipe", name])
    assert settings == loaded and settings.out.startswith("runs/")
    with pytest.raises(SystemExit) as exit_:
        cli._parse(make_parser(), ["--recipe", name, "--print-config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)["settings"]
    assert from_recipe(kind, printed, "--print-config") == settings


def test_a_flag_overrides_a_recipe_value_and_config_items_merge(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: mw-reach\nsteps: 50\neval-every: 10\nconfig: {num_samples: 100}\n")
    argv = ["--recipe", str(recipe), "--steps", "70", "--config", "iterations=2"]
    settings, _ = cli._parse(cli.train_parser(), argv)
    assert (settings.task, settings.steps, settings.eval_every) == ("mw-reach", 70, 10)
    assert settings.config == {"num_samples": 100, "iterations": 2}


def test_an_unknown_recipe_key_is_one_line_naming_the_file_and_the_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: mw-reach\nstepz: 10\n")
    with pytest.raises(SystemExit) as exit_:
        cli._parse(cli.train_parser(), ["--recipe", str(recipe)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{recipe}: unknown key(s) ['stepz']" in error
    with pytest.raises(ValueError, match=r"r\.yaml: unknown key\(s\) \['size'\]"):
        from_recipe(FinetuneConfig, {"task": "mw-reach", "size": "1M"}, "r.yaml")
