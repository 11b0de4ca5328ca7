"""What the dataset and the model Hub IO share on top of ``huggingface_hub``: repo ids, the
published repos, revisions, and one error class with one-paragraph messages.

Both ``tdmpc2_data.hub`` (shard datasets) and ``tdmpc2_model.hub.mixin`` (agents) go through
this module, so a repo id, a revision or a failed request means the same in every command:

- A repo id is ``OWNER/NAME`` as the Hub spells it (``is_repo_id``).
- ``revision`` is what it is in ``huggingface_hub``: reading (``download``, ``info``,
  ``from_pretrained``) takes any branch, tag or commit id; writing (``push``,
  ``push_to_hub``) commits to the *branch* ``revision`` (default ``main``; created from
  ``main`` if missing). ``tag=`` also tags the pushed commit; a tag is never moved.
- The published repos: the original release ``nicklashansen/tdmpc2`` holds the legacy data
  chunks and checkpoints; ``$TDMPC2_DATA_REPO_MT80`` / ``_MT30`` and ``$TDMPC2_MODEL_REPO``
  point them elsewhere (e.g. a mirror of converted shards).
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

try:  # the HTTP stack of huggingface_hub >= 2 (httpx before)
    from httpx2 import TransportError
except ImportError:  # pragma: no cover
    from httpx import TransportError

__all__ = [
    "HubError",
    "PUBLISHED_DATASETS",
    "hub_errors",
    "hub_unreachable",
    "is_repo_id",
    "looked_up_locally_first",
    "open_branch",
    "published_data_repo",
    "refuse_mistyped_path",
    "tag_commit",
]

ORIGINAL_REPO = "nicklashansen/tdmpc2"
PUBLISHED_DATASETS = ("mt80", "mt30")
DEFAULT_BRANCH = "main"


class HubError(RuntimeError):
    """A Hub operation failed; the message says which repo/revision and what to do."""


# ------------------------------------------------------------------ names
def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a Hub repo id ``OWNER/NAME`` (letters, digits, ``-_.``; no ``--``
    or ``..``, as ``huggingface_hub`` checks). Callers that also take local paths look for
    the path first: a local path wins."""
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def refuse_mistyped_path(text: str, what: str) -> None:
    """Raise ``FileNotFoundError`` when an ``OWNER/NAME``-shaped argument that does not exist
    locally was meant as a local path: its first part is a local directory (``data/tow`` next
    to ``data/``). Saves a typo from tens of seconds of Hub retries; names close matches."""
    parent, _, name = text.partition("/")
    if not is_repo_id(text) or Path(text).exists() or not Path(parent).is_dir():
        return
    close = difflib.get_close_matches(name, os.listdir(parent), n=3)
    hint = f"; did you mean {', '.join(f'{parent}/{c}' for c in close)}?" if close else "."
    raise FileNotFoundError(
        f"{what} {text!r}: no such file or directory ({parent}/ is a local directory, so it is "
        f"not taken as the Hub repo {text}){hint}"
    )


@contextmanager
def looked_up_locally_first(text: str) -> Iterator[None]:
    """For an argument that is a local directory or a Hub repo id (``tdmpc2-data info``,
    ``tdmpc2-pretrain --data``): a Hub error also says that no such directory exists."""
    try:
        yield
    except HubError as exc:
        raise type(exc)(f"{text}: no such local directory, and {exc}") from None


_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def hub_unreachable(timeout: float = 3.0) -> bool:
    """Whether no TCP connection to ``HF_ENDPOINT`` opens within ``timeout`` seconds.
    ``huggingface_hub`` retries an unreachable Hub for ~24 s before it falls back to its
    cache; callers that find it unreachable read only the cache (``local_files_only``), so
    they succeed from it or fail at once. Behind a proxy (which may reach what a direct
    connection cannot) this says False and leaves it to ``huggingface_hub``."""
    if constants.HF_HUB_OFFLINE or any(
        os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARIABLES
    ):
        return False
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return True
    return False


def data_repo_env(name: str) -> str:
    """The environment variable naming the repo of the published dataset ``name``."""
    return f"TDMPC2_DATA_REPO_{name.upper()}"


def published_data_repo(name: str, repo: str | None = None) -> str:
    """Repo holding the published ``mt80``/``mt30`` data: ``repo``, else
    ``$TDMPC2_DATA_REPO_<NAME>``, else the original release (legacy ``.pt`` chunks)."""
    return repo or os.environ.get(data_repo_env(name)) or ORIGINAL_REPO


def at(repo_id: str, revision: str | None) -> str:
    """``OWNER/NAME@revision`` as messages name a place on the Hub."""
    return f"{repo_id}@{revision or DEFAULT_BRANCH}"


# ------------------------------------------------------------------ errors
@contextmanager
def hub_errors(
    repo_id: str,
    revision: str | None,
    doing: str,
    repo_type: str = "dataset",
    error: type[HubError] = HubError,
    local_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[None]:
    """Turn huggingface_hub/HTTP exceptions into one-paragraph ``error``s that say what to do.

    ``doing`` starts the message (``"downloading OWNER/NAME"``); ``repo_type`` ("dataset" or
    "model") names the kind of repo in it; ``local_only``: the call had
    ``local_files_only=True`` (a cache miss is then not a network problem); ``cache_dir``: the
    cache it read, when not the default. HubErrors raised inside pass through.
    """
    endpoint = constants.ENDPOINT
    where = f"{at(repo_id, revision)} on {endpoint}"
    kind = f"{repo_type} repo"
    try:
        yield
    except HubError:
        raise
    except RevisionNotFoundError:
        raise error(
            f"{doing}: revision {revision!r} does not exist in {kind} {repo_id} ({endpoint}). "
            "Give an existing branch, tag or full commit id."
        ) from None
    except RepositoryNotFoundError:
        raise error(
            f"{doing}: {kind} {repo_id} not found on {endpoint} (or it is private and your "
            "token cannot read it). Check the name; log in with `hf auth login` or set "
            "HF_TOKEN for private repos."
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, TransportError) as exc:
        cache = cache_dir or constants.HF_HUB_CACHE
        missing = f"{where} is not in the local cache ({cache}), or only partly"
        if local_only and not constants.HF_HUB_OFFLINE:
            raise error(f"{doing}: local_files_only=True and {missing}; load it once without "
                        "local_files_only.") from None  # fmt: skip
        if constants.HF_HUB_OFFLINE:
            raise error(f"{doing}: HF_HUB_OFFLINE=1 is set and {missing}; unset HF_HUB_OFFLINE "
                        "and rerun once online to fill the cache.") from None  # fmt: skip
        raise error(
            f"{doing}: cannot reach {endpoint} and {missing}. Check your network and "
            f"HF_ENDPOINT, or download it once online. ({type(exc).__name__})"
        ) from None
    except EntryNotFoundError:
        raise error(f"{doing}: the file is not in {kind} {where}.") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise error(
                f"{doing}: {endpoint} rejected your token (401 Unauthorized). Refresh it "
                "with `hf auth login --force`, or fix/unset HF_TOKEN."
            ) from None
        if status == 403:
            raise error(
                f"{doing}: your token may not write to {repo_id} (403 Forbidden). Use a token "
                "with write access to that namespace."
            ) from None
        raise error(f"{doing}: the Hub answered {status} for {where}: {exc}") from None


# ------------------------------------------------------------------ revisions
def open_branch(
    api: HfApi, repo_id: str, repo_type: str, revision: str | None, private: bool = False
) -> str:
    """Create the repo if missing and the branch ``revision`` (from ``main``) if missing;
    returns the branch a push commits to. Call inside ``hub_errors``."""
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    branch = revision or DEFAULT_BRANCH
    if branch != DEFAULT_BRANCH:
        api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
    return branch


def tag_commit(
    api: HfApi, repo_id: str, repo_type: str, tag: str, oid: str, error: type[HubError] = HubError
) -> None:
    """Tag commit ``oid`` as ``tag``; a tag that exists must already point there (tags are
    never moved, so a pinned ``revision=tag`` always reads the same files)."""
    refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    existing = {t.name: t.target_commit for t in refs.tags}
    if tag in existing and existing[tag] != oid:
        raise error(
            f"tag {tag!r} of {repo_id} already points at commit {existing[tag]}, not at the "
            f"pushed {oid}; choose a new tag (tags are never moved)."
        )
    if tag not in existing:
        api.create_tag(repo_id, tag=tag, revision=oid, repo_type=repo_type)
