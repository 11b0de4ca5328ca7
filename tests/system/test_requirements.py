"""pyproject.toml's ranges are tested ones: every pin of constraints.txt (the stack CI runs)
lies inside them, and each package whose releases have changed behaviour has an upper bound,
so that ``pip install tdmpc2-toolkit[all]`` without constraints.txt gets a tested stack."""

from __future__ import annotations

import pytest
from checkout import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
BOUNDED = ["numpy", "torch", "zarr", "numcodecs", "gymnasium", "huggingface-hub", "lightning",
           "dm-control", "mujoco", "metaworld", "myosuite", "tensordict", "torchrl", "minari",
           "datasets"]  # fmt: skip


def requirements() -> dict[str, SpecifierSet]:
    """The package's version ranges by name, over its dependencies and extras (a package
    named twice: both ranges), its own extras (``tdmpc2-toolkit[...]``) and the
    separate-environment LeRobot extra left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "lerobot"}
    ranges: dict[str, SpecifierSet] = {}
    for line in project["dependencies"] + sum(extras.values(), []):
        r = Requirement(line)
        name = canonicalize_name(r.name)
        if name != project["name"]:
            ranges[name] = ranges.get(name, SpecifierSet()) & r.specifier
    return ranges


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def test_every_pin_lies_inside_the_requirement_range():
    required = requirements()
    outside = {name: f"{version} not in {required[name]}" for name, version in pins().items()
               if name in required and version not in required[name]}  # fmt: skip
    assert not outside


def test_behaviour_changing_packages_have_an_upper_bound():
    required, pinned = requirements(), pins()
    for name in BOUNDED:
        assert name in pinned, f"{name}: no tested version in constraints.txt"
        assert any(s.operator in ("<", "<=", "==", "~=") for s in required[name]), name
