"""Fetch one Hub file so that a later process resumes it where a killed one stopped.

``huggingface_hub`` (2.x) downloads into a process-unique ``*.incomplete`` file that it
deletes on failure and orphans on a kill, so a rerun starts a 19 GB chunk over. Here the
partial file has a fixed name, ``<dir>/<name>.part``, every byte received is written
through at once, and whoever comes next continues it with an HTTP Range request from its
size (one process at a time: it holds a ``flock`` on it). A complete file whose sha256
matches the Hub's (LFS files) is renamed to ``<dir>/<name>``.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from huggingface_hub import constants, hf_hub_url
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff
from huggingface_hub.utils import tqdm as hf_tqdm
from huggingface_hub.utils.sha import sha_fileobj

from tdmpc2_data.atomic import naming_path
from tdmpc2_data.hub_api import HubError, TransportError
from tdmpc2_data.progress import bars_enabled

__all__ = ["fetch", "partial_path"]

#: Attempts in a row that receive no byte before giving up (``huggingface_hub``'s count).
RETRIES = 5


def partial_path(directory: Path, filename: str) -> Path:
    """Where ``fetch`` keeps the received part of ``filename`` until it is complete."""
    return directory / f"{Path(filename).name}.part"


def fetch(
    repo_id: str,
    filename: str,
    directory: Path,
    size: int,
    *,
    revision: str,
    sha256: str | None = None,
    token: str | bool | None = None,
    repo_type: str = "dataset",
) -> Path:
    """``directory/<basename of filename>``, the ``size`` bytes of ``filename`` at commit
    ``revision``, continued from its partial file and checked against ``sha256`` (the
    Hub's LFS id; hashing runs at ~1 GB/s) when given. The byte bar is named after
    ``filename`` (off with ``HF_HUB_DISABLE_PROGRESS_BARS``). Raises ``HubError`` when
    ``RETRIES`` attempts in a row receive nothing or the bytes do not match (the partial
    file is then deleted); HTTP errors come as ``huggingface_hub``'s."""
    target = directory / Path(filename).name
    if target.is_file() and target.stat().st_size == size:
        return target
    part = partial_path(directory, filename)
    directory.mkdir(parents=True, exist_ok=True)
    if part.exists() and part.stat().st_size > size:
        part.unlink()
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision)
    headers = build_hf_headers(token=token)
    with naming_path(part), open(part, "ab", buffering=0) as out:
        _lock(out, f"downloading {repo_id}/{filename}: another process is downloading it "
                   f"into {directory}; wait for it to finish or use another directory.")  # fmt: skip
        bar = hf_tqdm(desc=filename, total=size, initial=out.tell(), unit="B", unit_scale=True,
                      name="huggingface_hub.http_get", disable=not bars_enabled())  # fmt: skip
        with bar:
            idle = 0
            while (have := out.tell()) < size:
                try:
                    _append(url, {**headers, "Range": f"bytes={have}-"}, out, bar)
                except TransportError as exc:
                    idle = 0 if out.tell() > have else idle + 1
                    if idle > RETRIES:
                        raise HubError(
                            f"downloading {repo_id}/{filename}: no connection to "
                            f"{constants.ENDPOINT} ({type(exc).__name__}) after {out.tell()} "
                            f"of {size} bytes; rerun to resume from there ({part})."
                        ) from None
                    time.sleep(1)
        _check(part, size, sha256, f"downloading {repo_id}/{filename}")
        os.replace(part, target)
    return target


def _check(part: Path, size: int, sha256: str | None, doing: str) -> None:
    """Delete ``part`` and raise ``HubError`` unless it holds ``size`` bytes of ``sha256``."""
    with open(part, "rb") as f:
        if os.fstat(f.fileno()).st_size == size and (
            sha256 is None or sha_fileobj(f).hex() == sha256
        ):
            return
    part.unlink()
    listed = f"{size} bytes" + (f", sha256 {sha256}" if sha256 else "")
    raise HubError(
        f"{doing}: the bytes received do not match what the Hub lists ({listed}); deleted "
        "them, rerun to download it again."
    )


def _lock(out, busy: str) -> None:
    """Hold an exclusive ``flock`` on the partial file while appending to it (released when
    it closes, or its process dies); raise ``HubError(busy)`` if another process holds it."""
    try:
        fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise HubError(busy) from None


def _append(url: str, headers: dict[str, str], out, bar) -> None:
    """Append what the server sends for ``headers`` (a Range from ``out``'s end) to ``out``;
    a server that answers with the whole file (200) restarts it."""
    with http_stream_backoff(
        "GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
        retry_on_exceptions=(), retry_on_status_codes=(408, 429),
    ) as response:  # fmt: skip
        hf_raise_for_status(response)
        if response.status_code != 206:
            out.truncate(0)
            bar.reset(total=bar.total)
        for piece in response.iter_bytes():
            view = memoryview(piece)
            while view:  # a raw write may take only a part
                view = view[out.write(view) :]
            bar.update(len(piece))
