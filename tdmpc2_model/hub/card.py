"""The model card (``README.md`` of a saved model): ``huggingface_hub.ModelCard.from_template``
of the packaged ``model_card.md`` (size, parameters, tasks, training data, a run's final
evaluation and settings, usage, citation) with ``ModelCardData`` front matter (``card_data``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from tdmpc2_data.cards import render_template
from tdmpc2_data.tasks import TASK_SETS
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.world_model import WorldModel

CARD_TEMPLATE = "model_card.md"  # package data: the model card's Jinja template
TAGS = ["reinforcement-learning", "model-based-rl", "world-model", "tdmpc2", "continuous-control"]


class Described(Protocol):
    """What a card says of an agent: its config and model."""

    cfg: TDMPC2Config
    model: WorldModel


def card_data(agent: Described, provenance: dict[str, Any] | None = None) -> ModelCardData:
    """The card's Hub metadata: library, license, pipeline tag, tags (plus the task set, or
    up to 5 task names), the Hub datasets it was trained on when recorded, and the final
    evaluation of a run as ``model-index`` results (mean return and success rate on the
    evaluated task; the task is the "dataset", as RL model cards on the Hub name the env)."""
    cfg, provenance = agent.cfg, provenance or {}
    names = cfg.task_names
    task_set = next((k for k, v in TASK_SETS.items() if v == names), None)
    tags = [*TAGS, *([task_set] if task_set else names if len(names) <= 5 else [])]
    evaluation = provenance.get("evaluation")
    results = None
    if evaluation:
        task = evaluation["task"]
        scores = [("mean_reward", "mean return", evaluation["mean_return"]),
                  ("success_rate", "success rate", evaluation.get("success_rate"))]  # fmt: skip
        results = [
            EvalResult(
                task_type="reinforcement-learning",
                task_name="Reinforcement Learning",
                dataset_type=task,
                dataset_name=task,
                metric_type=kind,
                metric_name=label,
                metric_value=float(value),
            )
            for kind, label, value in scores
            if value is not None
        ]
    return ModelCardData(
        library_name="tdmpc2-toolkit",
        license="mit",
        pipeline_tag="reinforcement-learning",
        tags=tags,
        datasets=provenance.get("datasets") or None,
        model_name=_title(cfg) if results else None,
        eval_results=results,
    )


def _title(cfg: TDMPC2Config) -> str:
    kind = f"multitask ({cfg.num_tasks} tasks)" if cfg.multitask else "single-task"
    return f"TD-MPC2 {cfg.size or 'custom'} {kind} world model"


def model_card(agent: Described, provenance: dict[str, Any] | None = None) -> ModelCard:
    """The model card (``README.md``): ``card_data`` as front matter and the packaged template
    ``model_card.md`` (size, parameters, tasks, training data, a run's final evaluation and
    settings, usage, citation) rendered by ``huggingface_hub.ModelCard.from_template``."""
    cfg, provenance = agent.cfg, provenance or {}
    names = cfg.task_names
    task_set = next((k for k, v in TASK_SETS.items() if v == names), None)
    evaluation = provenance.get("evaluation")
    if evaluation:
        rate = evaluation.get("success_rate")
        evaluation = {**evaluation, "mean_return": f"{evaluation['mean_return']:.2f}",
                      "success_rate": "-" if rate is None else f"{rate:.2f}"}  # fmt: skip
    run = provenance.get("run")
    if run:  # the command's settings and the package versions, as the run record has them
        run = json.dumps({"settings": run, "versions": provenance.get("versions")}, indent=2)
    values = {
        "title": _title(cfg),
        "size": cfg.size or "custom",
        "parameters": f"{agent.model.total_params:,}",
        "tasks": task_set or (", ".join(names) if names else "a custom task"),
        "cfg": cfg,
        "training_data": provenance.get("training_data") or "not recorded",
        "source": provenance.get("source"),
        "task_ids": ", ".join(names) if task_set is None and len(names) > 1 else None,
        "evaluation": evaluation,
        "run": run,
        "act_task": f", task={names[0]!r}" if cfg.multitask and names else "",
    }
    template = Path(str(resources.files("tdmpc2_model.hub") / CARD_TEMPLATE))
    return render_template(ModelCard, card_data(agent, provenance), template, values)
