"""The package as users get it: a wheel built from this checkout, installed into a fresh venv
and run from outside the checkout. The venv reuses this environment's dependencies through a
``.pth`` entry (no download), while ``tdmpc2_data`` / ``tdmpc2_model`` come from the wheel only."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from checkout import ROOT

from tdmpc2_data import __version__

COMMANDS = ["tdmpc2-data", "tdmpc2-pretrain", "tdmpc2-finetune", "tdmpc2-train", "tdmpc2-eval",
            "tdmpc2-plot"]  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
           "-w", str(out), str(ROOT)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (path,) = out.glob("tdmpc2_toolkit-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed; dependencies visible through a .pth line."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    # without PYTHONPATH: a checkout on it (with the egg-info the wheel build leaves there)
    # makes pip take the wheel as already installed and skip it
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=300, env=clean)
    site = subprocess.run(
        [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def run(venv: Path, *args: str, env: dict[str, str] | None = None, cwd: Path) -> str:
    unset = ("PYTHONPATH", "TDMPC2_CARDS_DIR")  # only the wheel's own files count here
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{environ['PATH']}"
    done = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**environ, **(env or {})})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_wheel_ships_recipes_and_card_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        assert f"tdmpc2_model/recipes/{recipe.name}" in names
    for card in (ROOT / "datasets_cards").glob("*.md"):
        assert f"tdmpc2_data/card_templates/{card.name}" in names
    assert "tdmpc2_data/envs/walker_long_floor.xml" in names
    assert "tdmpc2_model/hub/model_card.md" in names  # the model card's template
    assert f"tdmpc2_toolkit-{__version__}.dist-info/licenses/LICENSE" in names
    curves = [n for n in names if n.startswith("tdmpc2_model/published/")]
    assert len([n for n in curves if n.startswith("tdmpc2_model/published/tdmpc2/")]) == 104
    assert "tdmpc2_model/published/README.md" in curves and len(curves) > 400


def test_installed_packages_come_from_the_wheel(venv, tmp_path):
    out = run(venv, "python", "-c", "import tdmpc2_data, tdmpc2_model; "
              "print(tdmpc2_data.__file__); print(tdmpc2_model.__version__)", cwd=tmp_path)  # fmt: skip
    path, version = out.split()
    assert Path(path).is_relative_to(venv) and version == __version__


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_version(venv, tmp_path, command):
    assert run(venv, command, "--version", cwd=tmp_path).strip() == (
        f"{command} (tdmpc2-toolkit) {__version__}"
    )


def test_packaged_recipes_resolve_outside_the_checkout(venv, tmp_path):
    code = (
        "from tdmpc2_model.apps.cli import load_recipe, resolve_recipe\n"
        "print(resolve_recipe('recipes/pretrain-mt80-317M.yaml'))\n"
        "print(load_recipe('quickstart')['pretrain']['size'])\n"
    )
    path, size = run(venv, "python", "-c", code, cwd=tmp_path).split()
    assert Path(path).is_relative_to(venv) and size == "1M"
    help_text = run(venv, "python", "-m", "tdmpc2_model.apps.quickstart", "--help", cwd=tmp_path)
    assert "default: quickstart" in help_text


def test_published_curves_load_from_the_wheel(venv, tmp_path):
    code = ("from tdmpc2_model.apps.published import published_curve, published_dir\n"
            "c = published_curve('myo-reach', 'tdmpc2')\n"
            "print(published_dir(), c.metric, len(c.steps))\n")  # fmt: skip
    where, metric, points = run(venv, "python", "-c", code, cwd=tmp_path).split()
    assert Path(where).is_relative_to(venv) and metric == "success" and int(points) > 1


def test_push_from_the_wheel_renders_the_packaged_card(venv, hub, tmp_path):
    from tdmpc2_data.format import ShardWriter

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    with ShardWriter(data, tasks=["walker-walk"], name="wheel-test") as w:
        w.add_episode("walker-walk", obs=rng.normal(size=(5, 24)).astype(np.float32),
                      action=rng.uniform(-1, 1, (4, 6)).astype(np.float32),
                      reward=rng.uniform(size=4).astype(np.float32))  # fmt: skip
    run(venv, "tdmpc2-data", "push", str(data), "tester/wheel", env=hub.env, cwd=tmp_path)
    card = hub.api().hf_hub_download("tester/wheel", "README.md", repo_type="dataset")
    text = Path(card).read_text()
    assert "{{" not in text and "walker-walk" in text


def test_save_pretrained_from_the_wheel_writes_the_packaged_model_card(venv, tmp_path):
    code = ("from tdmpc2_model import TDMPC2, TDMPC2Config\n"
            "TDMPC2(TDMPC2Config(size='1M', tasks='walker-walk')).save_pretrained('m')\n")  # fmt: skip
    run(venv, "python", "-c", code, cwd=tmp_path)
    text = (tmp_path / "m" / "README.md").read_text()
    assert "library_name: tdmpc2-toolkit" in text and "# TD-MPC2 1M single-task world model" in text
