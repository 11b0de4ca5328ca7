"""Hugging Face Hub I/O for shard datasets: download, push, metadata-only info.

Everything goes through ``huggingface_hub``; repo ids, what ``revision`` means and the error
messages come from ``tdmpc2_data.hub_api``, shared with the model Hub IO. ``download`` with
``tasks`` fetches only the shards holding them (whole shards: a few episodes of other tasks
may come along) and checks every file against the Hub's id of it. Behaviour (revisions,
resumption, legacy chunks, where files land): docs/design.md#dataset-hub-io.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    RepoFile,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import RemoteEntryNotFoundError
from huggingface_hub.utils import sha

from tdmpc2_data import resumable, schema
from tdmpc2_data.atomic import write_text_atomic
from tdmpc2_data.disk_space import naming_full_disk, require_room
from tdmpc2_data.hub_api import (
    PUBLISHED_DATASETS,
    HubError,
    at,
    hub_errors,
    hub_unreachable,
    is_repo_id,
    open_branch,
    published_data_repo,
    tag_commit,
)
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.tasks import TASK_SETS, resolve_tasks, table_index

__all__ = ["download", "hub_url", "info", "push", "read_index"]

INDEX = "zarr.json"
CARD = "README.md"
EPISODES = "episodes.parquet"  # the per-episode table `datasets.load_dataset(repo)` reads
DOWNLOAD_RECORD = ".tdmpc2-download.json"
KEPT = "converted chunks and downloaded bytes are kept"  # what a failed legacy download keeps
DEFAULT_COMMIT_BYTES = 2 << 30
DEFAULT_COMMIT_FILES = 500


class NoIndexError(HubError):
    """The repo has no root ``zarr.json``: it is not a shard dataset."""


# ------------------------------------------------------------------ places
def data_home() -> Path:
    """Where conversions and task-filtered views go by default (``$TDMPC2_DATA_HOME``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tdmpc2"
    return Path(os.environ.get("TDMPC2_DATA_HOME", default))


def hub_url(repo_id: str, revision: str | None = None) -> str:
    """The ``hf://`` URL ``open_dataset`` streams from (revision slashes URL-encoded)."""
    rev = f"@{revision.replace('/', '%2F')}" if revision else ""
    return f"hf://datasets/{repo_id}{rev}"


# ------------------------------------------------------------------ index
def _fetch_index(
    repo_id: str, revision: str | None, token: str | bool | None, cache_only: bool | None = None
) -> Path:
    """The cached root ``zarr.json`` (fetched if needed): ``.../snapshots/<commit>/zarr.json``.
    ``cache_only`` None: read only the cache if the Hub is unreachable (``hub_unreachable``)."""
    with hub_errors(repo_id, revision, f"reading the index of {repo_id}"):
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    INDEX,
                    repo_type="dataset",
                    revision=revision,
                    token=token,
                    local_files_only=hub_unreachable() if cache_only is None else cache_only,
                )  # fmt: skip
            )
        except RemoteEntryNotFoundError:
            raise NoIndexError(
                f"{at(repo_id, revision)} has no root {INDEX}: it is not a tdmpc2 shard "
                "dataset (push one with `tdmpc2-data push`)."
            ) from None


def read_index(
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_only: bool | None = None,
) -> tuple[dict[str, Any], str]:
    """Root attributes of a Hub shard dataset and the commit they come from.

    Fetches only ``zarr.json`` (into the HF cache; served from it when offline or, see
    ``_fetch_index``, when the Hub cannot be reached).
    """
    path = _fetch_index(repo_id, revision, token, cache_only)
    commit = path.parent.name
    where = f"{repo_id}@{commit}/{INDEX}"
    try:
        attrs = json.loads(path.read_text())["attributes"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise schema.DatasetError(f"{where}: not a shard dataset index ({exc!r})") from None
    schema.check_root_attributes(attrs, where)
    return attrs, commit


def info(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> Any:
    """A metadata-only ``Dataset`` of a Hub shard dataset (only ``zarr.json`` is fetched):
    tasks, shards index, counts and ``summary()``; reading arrays from it fails."""
    from tdmpc2_data.reader import open_dataset

    return open_dataset(_fetch_index(repo_id, revision, token).parent, check_index=False)


def select_shards(attrs: dict[str, Any], tasks: Sequence[str] | None, where: str) -> list[dict]:
    """Index entries of the shards holding episodes of ``tasks`` (all shards if None)."""
    if tasks is None:
        return list(attrs["shards"])
    names = [t["name"] for t in attrs["tasks"]]
    ids = {table_index(names, task, where) for task in tasks}
    chosen = [s for s in attrs["shards"] if ids & {int(k) for k in s["task_counts"]}]
    if not chosen:
        raise ValueError(f"{where}: no shard holds episodes of {', '.join(tasks)}.")
    return chosen


# ------------------------------------------------------------------ download
def download(
    name: str,
    tasks: Sequence[str] | None = None,
    local_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    repo: str | None = None,
    token: str | bool | None = None,
    max_workers: int = 8,
) -> Path:
    """Download a shard dataset (or convert the legacy ``mt80``/``mt30`` chunks); returns
    the directory to pass to ``open_dataset``. ``mt80``/``mt30`` come from the repo of
    ``TDMPC2_DATA_REPO_MT80`` / ``_MT30`` (or ``repo=``), default the published legacy repo.
    The rules (task filters, revisions, checks, resumption, where files land):
    docs/design.md#dataset-hub-io."""
    if name in PUBLISHED_DATASETS:
        repo_id = published_data_repo(name, repo)
    elif repo is not None:
        raise ValueError(
            f"repo={repo!r} only applies to the published names {PUBLISHED_DATASETS}, not {name!r}."
        )
    elif is_repo_id(name):
        repo_id = name
    else:
        raise ValueError(
            f"{name!r} is neither a published dataset {PUBLISHED_DATASETS} nor a Hub repo id "
            "OWNER/NAME."
        )
    tasks = list(tasks) if tasks else None
    cache_only = hub_unreachable()  # one connection attempt for the index and the shards
    try:
        attrs, commit = read_index(repo_id, revision, token, cache_only)
    except HubError as exc:
        legacy = isinstance(exc, NoIndexError) or constants.HF_HUB_OFFLINE
        if name not in PUBLISHED_DATASETS or not legacy:
            raise
        root = _download_legacy(name, repo_id, tasks, local_dir, revision, token)
        if tasks is None or local_dir is not None:  # as a shard repo's download (below)
            return root
        from tdmpc2_data.writer import read_root_attributes

        attrs, commit = read_root_attributes(root), _read_record(root)["commit"]
        return _task_view(root, repo_id, commit, attrs, select_shards(attrs, tasks, str(root)))
    shards = select_shards(attrs, tasks, f"{repo_id}@{commit}")
    patterns = [CARD, *(f"{s['path']}/*" for s in shards)]

    def fetch() -> Path:
        return Path(
            _interruptible(
                snapshot_download,
                repo_id,
                repo_type="dataset",
                revision=commit,
                local_dir=local_dir,
                allow_patterns=patterns if local_dir is not None else [INDEX, *patterns],
                token=token,
                max_workers=max_workers,
                local_files_only=cache_only,
            )
        )

    with hub_errors(repo_id, revision, f"downloading {repo_id}"):
        root = fetch()
        if not (cache_only or constants.HF_HUB_OFFLINE):  # else: checked when downloaded
            _check_download(root, repo_id, commit, shards, token, fetch)
    if local_dir is not None:
        return _index_local_dir(root, repo_id, commit, attrs, shards)
    return root if tasks is None else _task_view(root, repo_id, commit, attrs, shards)


def _check_download(
    root: Path,
    repo_id: str,
    commit: str,
    shards: list[dict],
    token: str | bool | None,
    refetch: Callable[[], Path],
) -> None:
    """Check the downloaded files of ``shards`` under ``root`` against the Hub's ids of them
    (``_same_content``: sha256 of LFS files, git blob id of others); files that differ are
    deleted and fetched again once (``refetch``), then refused in one ``HubError`` line."""
    tree = HfApi(token=token).list_repo_tree(
        repo_id, schema.SHARDS_DIR, recursive=True, repo_type="dataset", revision=commit
    )
    dirs = tuple(f"{s['path']}/" for s in shards)
    listed = [f for f in tree if isinstance(f, RepoFile) and f.path.startswith(dirs)]
    bad = _remove_unlike(root, listed)
    if bad:
        refetch()
        bad = _remove_unlike(root, [f for f in listed if f.path in bad])
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise HubError(
            f"downloading {repo_id}@{commit}: {bad[0]}{more} came with other bytes than the "
            "Hub's hash of it (sha256 or git blob id), twice; deleted it, rerun to download "
            "it again."
        )


def _remove_unlike(root: Path, listed: list[RepoFile]) -> list[str]:
    """Repo paths of the ``listed`` files whose copy under ``root`` is missing or differs
    from the Hub's (deleted, with the cache blob a snapshot links it to)."""
    bad = []
    for f in listed:
        local = root / f.path
        if local.is_file() and _same_content(local, f):
            continue
        bad.append(f.path)
        if local.is_symlink():  # the HF cache: snapshots/<commit>/<path> -> blobs/<etag>
            local.resolve().unlink(missing_ok=True)
        local.unlink(missing_ok=True)
    return bad


def _interruptible(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a daemon thread while this one waits: Ctrl-C or SIGTERM
    ends the wait at once, instead of when huggingface_hub's download threads have finished
    the files in flight (its pool waits for them; a killed download resumes on a rerun)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (raised again in the caller's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="tdmpc2-download", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _write_index(root: Path, attrs: dict[str, Any], shards: list[dict]) -> None:
    from tdmpc2_data.writer import write_root_attributes

    write_root_attributes(root, {**attrs, "shards": sorted(shards, key=lambda s: s["path"])})


def _index_local_dir(
    root: Path, repo_id: str, commit: str, attrs: dict[str, Any], shards: list[dict]
) -> Path:
    """Write ``root/zarr.json`` indexing the shards downloaded so far from this commit.

    Downloads into one directory accumulate (tasks A, then tasks B -> both indexed) as
    long as they come from the same commit; ``.tdmpc2-download.json`` remembers which.
    """
    record = _read_record(root)
    have = set(record.get("shards", [])) if record.get("commit") == commit else set()
    have |= {s["path"] for s in shards}
    _write_index(root, attrs, [s for s in attrs["shards"] if s["path"] in have])
    _write_record(root, {"repo_id": repo_id, "commit": commit, "shards": sorted(have)})
    return root


def _task_view(
    snapshot: Path, repo_id: str, commit: str, attrs: dict[str, Any], shards: list[dict]
) -> Path:
    """A directory with a filtered index and symlinks to the shards of ``snapshot`` (the
    cached snapshot, or a converted legacy dataset), built atomically."""
    paths = [str(snapshot), *sorted(s["path"] for s in shards)]
    key = hashlib.sha1(json.dumps(paths).encode()).hexdigest()[:12]
    view = data_home() / "views" / repo_id.replace("/", "--") / f"{commit}-{key}"
    if (view / INDEX).exists():
        return view
    tmp = view.with_name(f".tmp-{view.name}-{uuid.uuid4().hex}")
    (tmp / schema.SHARDS_DIR).mkdir(parents=True)
    where = f"{repo_id}@{commit}/{INDEX}"
    for s in shards:
        target = schema.shard_dir(snapshot, s["path"], where)
        os.symlink(target, tmp / s["path"], target_is_directory=True)
    _write_index(tmp, attrs, shards)
    try:
        os.rename(tmp, view)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return view


# ------------------------------------------------------------------ legacy chunks
def _download_legacy(
    name: str,
    repo_id: str,
    tasks: list[str] | None,
    local_dir: str | os.PathLike | None,
    revision: str | None,
    token: str | bool | None,
) -> Path:
    """Fetch ``<name>/chunk_*.pt`` one at a time, convert each into shards, delete it.

    Progress lives in the converted dataset itself (the converter marks each chunk's
    ``sources`` entry complete, with its size and tasks), so a rerun skips converted
    chunks without downloading them and refuses a chunk of another size (another version);
    ``.tdmpc2-download.json`` keeps the chunk list for offline reruns. A chunk is staged
    in ``.chunks/<its git blob id>/`` (``resumable.fetch``: a rerun resumes its partial
    download, never one of another version) once ``_require_room`` found room for it.
    """
    from tdmpc2_data.convert import legacy_pt
    from tdmpc2_data.writer import read_root_attributes

    dest = Path(local_dir) if local_dir is not None else data_home() / name
    table = TASK_SETS[name]
    wanted = set(resolve_tasks(tasks)) if tasks else set(table)
    outside = wanted - set(table)
    if outside:
        raise ValueError(f"tasks {sorted(outside)} are not in task set {name}.")
    attrs = read_root_attributes(dest) if (dest / INDEX).exists() else {"sources": []}
    converted = legacy_pt.converted_chunks(attrs["sources"], table)

    def done(path: str, size: int) -> bool:
        return wanted <= converted.get((Path(path).name, size), set())

    record = _read_record(dest)
    try:
        commit, chunks = _list_chunks(name, repo_id, revision, token)
    except HubError:
        if constants.HF_HUB_OFFLINE and record and all(done(*c) for c in record["chunks"]):
            return dest
        raise
    for path, size, *_ in chunks:
        other = [n for f, n in converted if f == Path(path).name and n != size]
        if other:
            raise HubError(
                f"{dest} holds a different version of {path} ({other[0]} bytes) than "
                f"{repo_id}@{commit} ({size} bytes); download into another --dir."
            )
    dest.mkdir(parents=True, exist_ok=True)
    _write_record(dest, {"repo_id": repo_id, "commit": commit, "chunks": [c[:2] for c in chunks]})
    staging = dest / ".chunks"
    for path, size, blob, sha256 in progress_bar(chunks, desc=f"{name} chunks", unit="chunk"):
        if done(path, size):
            continue
        staged = staging / blob[:16]  # a partial download of one version of the chunk
        _require_room(path, size, staged, dest)
        with naming_full_disk(path, f"; free some space and rerun ({KEPT})."):
            with hub_errors(repo_id, commit, f"downloading {repo_id}/{path}"):
                local = resumable.fetch(
                    repo_id, path, staged, size, revision=commit, sha256=sha256, token=token
                )
            legacy_pt.convert_chunk(local, dest, tasks=sorted(wanted), task_set=name, progress=True)
        os.remove(local)
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def _require_room(path: str, size: int, staged: Path, dest: Path) -> None:
    """Refuse chunk ``path`` (``size`` bytes) unless there is room for the rest of its
    download in ``staged`` and for its shards in ``dest``. Estimate: the shards take at most
    the chunk's size (the chunk is an uncompressed archive of the same data plus the filler
    step, the zero padding and the per-step task ids, which the compressed shards drop)."""
    part = resumable.partial_path(staged, path)
    complete = (staged / Path(path).name).is_file()
    have = size if complete else part.stat().st_size if part.exists() else 0
    require_room(
        path,
        {staged: size - have, dest: size},
        hint=f"; free some space and rerun ({KEPT}), or use another --dir.",
    )


def _list_chunks(
    name: str, repo_id: str, revision: str | None, token: str | bool | None
) -> tuple[str, list[tuple[str, int, str, str | None]]]:
    """The commit of ``revision`` and its ``<name>/chunk_<i>.pt`` files in order: (path, size,
    git blob id, sha256 of an LFS file or None)."""
    api = HfApi(token=token)
    with hub_errors(repo_id, revision, f"listing the {name} chunks of {repo_id}"):
        commit = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
        try:
            tree = list(api.list_repo_tree(repo_id, name, repo_type="dataset", revision=commit))
        except RemoteEntryNotFoundError:
            tree = []
    pattern = re.compile(rf"{name}/chunk_(\d+)\.pt")
    chunks = sorted(
        (
            (f.path, f.size, f.blob_id, f.lfs and f.lfs.sha256)
            for f in tree
            if pattern.fullmatch(f.path)
        ),
        key=lambda c: int(pattern.fullmatch(c[0]).group(1)),
    )
    if not chunks:
        raise HubError(
            f"{at(repo_id, revision)} has neither a root {INDEX} (shards) nor "
            f"{name}/chunk_<i>.pt files (the original release layout)."
        )
    return commit, chunks


def _read_record(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / DOWNLOAD_RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_record(root: Path, record: dict[str, Any]) -> None:
    write_text_atomic(root / DOWNLOAD_RECORD, json.dumps(record))


# ------------------------------------------------------------------ push
def _local_files(root: Path, attrs: dict[str, Any]) -> list[str]:
    """Repo paths of the indexed shards' files (writer bookkeeping dot-files excluded)."""
    files = []
    for s in attrs["shards"]:
        shard_dir = root / s["path"]
        if not shard_dir.is_dir():
            raise schema.DatasetError(
                f"{root / INDEX}: the index lists {s['path']}, which is not on disk; "
                "the dataset is incomplete (run `tdmpc2-data verify`)."
            )
        for path in sorted(shard_dir.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
                files.append(rel)
    return files


def _same_content(local: Path, remote: Any) -> bool:
    """Compare with the Hub's own ids: sha256 for LFS files, the git blob sha1 otherwise."""
    if remote.size != local.stat().st_size:
        return False
    if remote.lfs is not None:
        with open(local, "rb") as f:
            return sha.sha_fileobj(f).hex() == remote.lfs.sha256
    return sha.git_hash(local.read_bytes()) == remote.blob_id


def _batches(files: list[tuple[str, int]], max_bytes: int, max_files: int) -> Iterator[list]:
    batch, size = [], 0
    for path, nbytes in files:
        if batch and (size + nbytes > max_bytes or len(batch) >= max_files):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += nbytes
    if batch:
        yield batch


def push(
    dir: str | os.PathLike,
    repo_id: str,
    card: str | os.PathLike | None = None,
    private: bool = False,
    revision: str | None = None,
    tag: str | None = None,
    token: str | bool | None = None,
    commit_bytes: int = DEFAULT_COMMIT_BYTES,
    commit_files: int = DEFAULT_COMMIT_FILES,
) -> str:
    """Upload a local shard dataset to the Hub dataset repo ``repo_id``; returns the commit id.

    Creates the repo if needed, and the branch ``revision`` (default ``main``) from ``main``
    if missing; uploads shard files to that branch in commits of at most ``commit_bytes`` /
    ``commit_files`` (a rerun skips files whose content is already there), then the root
    index, ``episodes.parquet`` (``hf_datasets.episode_table``: what ``datasets.load_dataset``
    and the Hub viewer read) and ``README.md`` (``card``, or one generated from the packaged
    templates) in a last
    commit that also deletes shard files the local index no longer has (the branch mirrors
    the dataset); tags that commit as ``tag`` when given (a tag is never moved).
    """
    from tdmpc2_data.cards import render_card
    from tdmpc2_data.hf_datasets import episode_table_parquet
    from tdmpc2_data.reader import open_dataset

    root = Path(dir)
    ds = open_dataset(root)  # validates the index and that every indexed shard is on disk
    files = _local_files(root, ds.attrs)
    card_text = Path(card).read_text() if card is not None else render_card(ds, repo_id)
    api = HfApi(token=token)
    with hub_errors(repo_id, revision, f"pushing {root} to {repo_id}"):
        branch = open_branch(api, repo_id, "dataset", revision, private)
        remote = {
            f.path: f
            for f in api.list_repo_tree(
                repo_id, repo_type="dataset", revision=branch, recursive=True
            )
            if isinstance(f, RepoFile)
        }
        todo = [
            (p, (root / p).stat().st_size)
            for p in files
            if not (p in remote and _same_content(root / p, remote[p]))
        ]
        total = sum(n for _, n in todo)
        with progress_bar(total=total, unit="B", unit_scale=True, desc=f"push {repo_id}") as bar:
            for i, batch in enumerate(_batches(todo, commit_bytes, commit_files)):
                ops = [CommitOperationAdd(p, str(root / p)) for p in batch]
                commit = api.create_commit(
                    repo_id,
                    ops,
                    commit_message=f"Add shard files ({i + 1}: {batch[0]} ...)",
                    repo_type="dataset",
                    revision=branch,
                )
                bar.update(sum((root / p).stat().st_size for p in batch))
        stale = sorted(set(remote) - set(files))  # shards the local index no longer has
        final = [
            CommitOperationAdd(INDEX, str(root / INDEX)),
            CommitOperationAdd(CARD, card_text.encode()),
            CommitOperationAdd(EPISODES, episode_table_parquet(ds)),
            *(CommitOperationDelete(p) for p in stale if p.startswith(f"{schema.SHARDS_DIR}/")),
        ]
        commit = api.create_commit(
            repo_id,
            final,
            commit_message=f"Index {len(ds.shards)} shards and dataset card",
            repo_type="dataset",
            revision=branch,
        )
        if tag is not None:
            tag_commit(api, repo_id, "dataset", tag, commit.oid)
    return commit.oid
