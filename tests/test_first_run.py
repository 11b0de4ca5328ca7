"""A new user's first runs (issue #26): the README's commands agree with the recipes they
name, GPU-sized runs on a CPU are announced or refused before they start, short finetunes
are mostly training, and logs written to a file hold no progress-bar refreshes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tdmpc2_model.cli import load_recipe

README = Path(__file__).parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The ``$ tdmpc2-...`` lines of the README's console blocks, as argv lists."""
    lines = re.findall(r"^\$ (tdmpc2-\S+ .*)$", README.read_text(), re.MULTILINE)
    return [shlex.split(line.split("  #")[0]) for line in lines]


def test_readme_commands_with_a_recipe_repeat_its_values_and_cite_files_that_exist():
    """The 8-GPU line said --strategy fsdp where its recipe (and --help) say ddp."""
    checked = 0
    for argv in readme_commands():
        if "--recipe" not in argv:
            continue
        recipe_path = argv[argv.index("--recipe") + 1]
        assert (README.parent / recipe_path).is_file(), recipe_path
        recipe = load_recipe(README.parent / recipe_path)
        flags = dict(zip(argv[1::2], argv[2::2], strict=False))
        for flag, value in flags.items():
            key = flag.removeprefix("--").replace("-", "_")
            if key in recipe and recipe[key] not in ("auto", None):
                assert str(recipe[key]) == value, (" ".join(argv), key, recipe[key])
                checked += 1
    assert checked >= 1
