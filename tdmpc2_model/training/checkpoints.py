"""An agent resumed from the newest checkpoint of a run (``formats/run_checkpoint.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tdmpc2_model.agent import TDMPC2
from tdmpc2_model.formats.legacy import load_weights_only
from tdmpc2_model.formats.pretrained import run_overrides
from tdmpc2_model.formats.run_checkpoint import STATE_FILE, latest_checkpoint


def resume_latest(out: Path, agent: TDMPC2) -> tuple[TDMPC2, dict[str, Any] | None]:
    """The newest checkpoint's agent (weights, running scale, optimizer states) on the given
    agent's device and its trainer state, or ``(agent, None)`` when no checkpoint was
    written yet."""
    path = latest_checkpoint(out)
    if path is None:
        return agent, None
    # the checkpoint holds the model's defaults; this run's overrides apply again
    loaded = TDMPC2.from_pretrained(path, **run_overrides(agent)).to(agent.device)
    state = load_weights_only(
        path / STATE_FILE, "an online trainer state", map_location=agent.device
    )
    if not isinstance(state, dict) or not {"optim", "pi_optim", "step"} <= set(state):
        raise ValueError(f"{path / STATE_FILE}: not an online trainer state (optim, step).")
    loaded.optim.load_state_dict(state["optim"])
    loaded.pi_optim.load_state_dict(state["pi_optim"])
    loaded.hub_provenance = getattr(agent, "hub_provenance", None)
    return loaded, state
