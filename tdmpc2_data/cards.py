"""Dataset cards (the Hub's ``README.md``) filled from a shard dataset's metadata.

Templates are package data in ``tdmpc2_data/card_templates/`` (``datasets_cards/`` in a
checkout links there): ``mt80.md`` and ``mt30.md`` for the published data, ``template.md``
for anything else. A template is Markdown with YAML front matter and ``{{ key }}``
placeholders, rendered by ``huggingface_hub.DatasetCard.from_template`` (Jinja2) into a
``DatasetCard`` whose ``DatasetCardData`` then gets the dataset's structure (``configs`` and
``dataset_info`` of the per-episode table that ``push`` uploads as ``episodes.parquet``,
example counts, size), so ``datasets.load_dataset`` and the Hub viewer work without reading
the zarr files. ``render_template`` adds what ``from_template`` leaves out: a placeholder
nothing fills is an error (Jinja renders it empty), so a template cannot silently ship with
holes; the model cards of ``tdmpc2_model.hub.mixin`` use it too.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from huggingface_hub import CardData, DatasetCard, DatasetCardData, RepoCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from tdmpc2_data.hf_datasets import episode_table_features
from tdmpc2_data.schema import format_version

CardT = TypeVar("CardT", bound=RepoCard)


def render_template(
    card_cls: type[CardT], card_data: CardData, template: Path, values: dict[str, Any]
) -> CardT:
    """``card_cls.from_template(card_data, template, **values)``, refusing a template without
    YAML front matter or with a placeholder that neither ``values`` nor ``card_data`` fill.
    The final newline that Jinja drops is put back (files end with one)."""
    import jinja2
    import jinja2.meta

    text = template.read_text(encoding="utf-8")
    if not REGEX_YAML_BLOCK.search(text):
        raise ValueError(f"{template}: a card template must start with YAML front matter (---).")
    try:
        names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(text))
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"{template}, line {exc.lineno}: not a valid template ({exc}).") from None
    known = {"card_data", *card_data.to_dict(), *values}
    unknown = sorted(names - known)
    if unknown:
        raise KeyError(
            f"{template}: unknown placeholder {{{{ {unknown[0]} }}}}; known: {', '.join(values)}."
        )
    card = card_cls.from_template(card_data, template_path=str(template), **values)
    if text.endswith("\n") and not card.text.endswith("\n"):
        card.text += "\n"
    return card


def cards_dir() -> Path:
    """``$TDMPC2_CARDS_DIR`` (your own templates) or the packaged ones."""
    packaged = Path(str(resources.files("tdmpc2_data") / "card_templates"))
    return Path(os.environ.get("TDMPC2_CARDS_DIR", packaged))


def template_for(name: str) -> Path:
    path = cards_dir() / f"{name}.md"
    return path if path.exists() else cards_dir() / "template.md"


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
              (1_000_000_000, "100M<n<1B")]  # fmt: skip
    return next((label for bound, label in bounds if n < bound), "1B<n<10B")


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    raise AssertionError


def tasks_table(ds: Any) -> str:
    counts = ds.task_counts()
    lines = ["| id | task | domain | obs dim | action dim | episode length | episodes |",
             "|---:|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for t in ds.task_info:
        lines.append(
            f"| {t['id']} | `{t['name']}` | {t.get('domain', '')} | {t['obs_dim']} | "
            f"{t['action_dim']} | {t.get('episode_length') or ''} | {counts.get(t['id'], 0):,} |"
        )
    return "\n".join(lines)


def card_values(ds: Any, repo_id: str) -> dict[str, str]:
    """Everything a template may use."""
    lengths = sorted({s.episode_length for s in ds.shards})
    return {
        "repo_id": repo_id,
        "name": ds.name,
        "num_tasks": str(len(ds.tasks)),
        "num_episodes": f"{ds.num_episodes:,}",
        "num_transitions": f"{ds.num_transitions:,}",
        "num_shards": str(len(ds.shards)),
        "size": _human(ds.nbytes),
        "obs_dim": str(ds.obs_dim),
        "action_dim": str(ds.action_dim),
        "episode_lengths": ", ".join(map(str, lengths)) or "-",
        "format_version": ".".join(map(str, format_version(ds.attrs))),
        "created_by": str(ds.attrs.get("created_by", "")),
        "tasks_table": tasks_table(ds),
        "first_task": ds.tasks[0],
    }


def front_matter(ds: Any) -> dict[str, Any]:
    """Card metadata the Hub reads: ``configs`` pointing ``datasets.load_dataset`` and the
    viewer at the per-episode table ``episodes.parquet`` (its features, one row per episode),
    counts and size."""
    return {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "episodes.parquet"}],
            }
        ],  # fmt: skip
        "dataset_info": {
            "features": episode_table_features(ds)._to_yaml_list(),
            "splits": [{"name": "train", "num_examples": ds.num_episodes}],
            "download_size": ds.nbytes,
        },
        "size_categories": [_size_category(ds.num_episodes)],  # rows: episodes
        "viewer": True,
    }


def render_card(ds: Any, repo_id: str, template: str | os.PathLike | None = None) -> str:
    """The ``README.md`` for ``ds`` published as ``repo_id``: the template's own front matter
    (pretty name, license, tags) with ``front_matter(ds)`` set over it."""
    path = Path(template) if template is not None else template_for(ds.name)
    if not path.exists():
        raise FileNotFoundError(f"dataset card template {path} not found (set TDMPC2_CARDS_DIR).")
    card = render_template(DatasetCard, DatasetCardData(), path, card_values(ds, repo_id))
    for key, value in front_matter(ds).items():
        card.data[key] = value
    return str(card)
