"""Dataset cards (the Hub's ``README.md``) filled from a shard dataset's metadata.

Templates are package data in ``tdmpc2_data/card_templates/`` (``datasets_cards/`` in a
checkout links there): ``mt80.md`` and ``mt30.md`` for the published data, ``template.md``
for anything else. A template is Markdown with YAML front matter
and ``{{ key }}`` placeholders; ``render_card`` fills every placeholder (an unknown one is
an error, so a template cannot silently ship with holes). The front matter gets the
dataset's structure (``configs`` and ``dataset_info`` of the per-episode table that
``push`` uploads as ``episodes.parquet``, example counts, size), so ``datasets.load_dataset``
and the Hub viewer work without reading the zarr files.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tdmpc2_data.hf_datasets import episode_table_features
from tdmpc2_data.schema import format_version

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


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
    """The ``README.md`` for ``ds`` published as ``repo_id``."""
    path = Path(template) if template is not None else template_for(ds.name)
    if not path.exists():
        raise FileNotFoundError(f"dataset card template {path} not found (set TDMPC2_CARDS_DIR).")
    text = path.read_text()
    values = card_values(ds, repo_id)

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(
                f"{path}: unknown placeholder {{{{ {key} }}}}; known: {', '.join(values)}."
            )
        return values[key]

    text = PLACEHOLDER.sub(fill, text)
    match = FRONT_MATTER.match(text)
    if not match:
        raise ValueError(
            f"{path}: a dataset card template must start with YAML front matter (---)."
        )
    meta = yaml.safe_load(match.group(1)) or {}
    meta.update(front_matter(ds))
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n{text[match.end() :]}"
