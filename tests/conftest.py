"""Shared pytest fixtures. Each fixture below is self-contained; add new ones after them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


# ---------------------------------------------------------------- local Hub server
@dataclass
class LocalHub:
    """A running local Hub (``tests/hub_server.py``) and the client environment pointing at it."""

    server: object  # hub_server.HubServer
    endpoint: str
    token: str
    user: str
    cache: Path  # HF_HUB_CACHE
    env: dict[str, str]  # the environment a subprocess needs to use this Hub

    def api(self, token: str | None = None):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=token or self.token)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """Start a real Hub server on 127.0.0.1 (free port) and point ``huggingface_hub`` at it.

    Sets HF_ENDPOINT, HF_HUB_DISABLE_XET=1 (plain HTTP + LFS uploads), a temporary
    HF_HOME / HF_HUB_CACHE and HF_TOKEN, both in ``os.environ`` (for subprocesses) and in
    ``huggingface_hub.constants`` (read once at import). The server user ``tester`` owns
    the ``tester`` namespace and the ``tdmpc2-test`` organization.
    """
    from hub_server import HubServer
    from huggingface_hub import constants
    from huggingface_hub.hf_file_system import HfFileSystem

    token, user = "hf_localtesttoken", "tester"
    server = HubServer(tmp_path / "hub-server", {token: user}, orgs={user: ["tdmpc2-test"]})
    home = tmp_path / "hf-home"
    cache = home / "hub"
    env = {
        "HF_ENDPOINT": server.endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_TOKEN": token,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    patches = {
        "ENDPOINT": server.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
    }
    for key, value in patches.items():
        monkeypatch.setattr(constants, key, value)
    if "datasets.config" in sys.modules:  # ``datasets`` also reads the endpoint once at import
        config = sys.modules["datasets.config"]
        monkeypatch.setattr(config, "HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr(
            config,
            "HUB_DATASETS_URL",
            server.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        )
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", False)
    HfFileSystem.clear_instance_cache()
    server.start()
    try:
        yield LocalHub(server, server.endpoint, token, user, cache, env)
    finally:
        server.stop()
        HfFileSystem.clear_instance_cache()
