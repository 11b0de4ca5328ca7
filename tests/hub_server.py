"""A small, real Hugging Face Hub server for tests (standard library only).

It speaks the subset of the Hub HTTP API that ``huggingface_hub`` (2.x) uses for
repositories of files: repo create/delete/info, tree listing (recursive, paginated),
paths-info, preupload + ndjson commits (regular base64 files and basic Git LFS
uploads), refs, tags, branches, commit history, whoami, and file resolution with
ETag / X-Repo-Commit / Range. Errors carry the Hub's ``X-Error-Code`` headers so the
real client raises its real exceptions (RepositoryNotFoundError, RevisionNotFoundError,
EntryNotFoundError, 401 on a bad token).

Storage is a git-less model on disk: content-addressed blobs (``blobs/<sha256>``) and
one JSON file per repo holding its commits (each with its parent and full file table),
branches and tags. A server started on an existing root sees the same repos.

Test hooks: ``log`` records every request (method, path, Range header), ``bytes_served``
counts file bytes sent (also at ``GET /_stats``);
``fail(method, path_part, status=...)`` answers the next matching request with an HTTP
error, and ``fail(..., drop_after=n)`` sends only ``n`` bytes of a file's body and then
closes the connection (an interrupted download); ``fail(..., stall=s)`` holds the request
``s`` seconds (a client to kill mid-download); ``fail(..., pause_after=n)`` sends ``n``
bytes of the body and holds the rest until ``release()`` (then sends it) or ``stop()``
(then cuts it): a client to kill, or whose disk to fill, mid-transfer;
``fail(..., flip=True)`` sends the file with one byte flipped while its headers give the
real size and hash (a Hub, proxy or disk that lies about the bytes).

Run standalone (for benchmarks): ``python tests/hub_server.py --root DIR --port 0
--token hf_x:alice`` prints the endpoint on its first line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_THRESHOLD = 10 * 1024 * 1024  # like the Hub: big or binary files go to LFS
COPY_CHUNK = 1 << 20
GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n"
)


class HubError(Exception):
    """An HTTP error answer, with the Hub's error-code header when it has one."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 extra: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.extra = extra or {}  # more fields of the JSON body


@dataclass
class FileEntry:
    size: int
    sha256: str  # blob key in the store
    oid: str  # git object id: sha1 of the blob, or of the LFS pointer
    lfs: bool

    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    author: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: list[str] = field(default_factory=list)  # sha256 of LFS uploads to this repo

    def resolve(self, revision: str) -> Commit:
        """Branch, tag or full commit id -> commit (404 RevisionNotFound otherwise)."""
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix) :] in table:
                return self.commits[table[revision[len(prefix) :]]]
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision in self.commits:
            oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte char cut at the sample's end is still text
        return exc.start < len(sample) - 4
    return False


class HubState:
    """Repos, blobs, tokens and the on-disk model; every mutation holds ``lock``."""

    def __init__(self, root: Path, tokens: dict[str, str], orgs: dict[str, list[str]]):
        self.root = root
        self.blobs = root / "blobs"
        self.repo_dir = root / "repos"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.tokens, self.orgs = tokens, orgs
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.upload_keys: dict[str, tuple[Repo, str]] = {}  # one-time LFS upload key
        for path in self.repo_dir.glob("*/*/*.json"):
            repo = self._load(path)
            self.repos[(repo.type, repo.id)] = repo

    # ---------------------------------------------------------- persistence
    def _load(self, path: Path) -> Repo:
        raw = json.loads(path.read_text())
        commits = {
            oid: Commit(**{**c, "files": {p: FileEntry(**f) for p, f in c["files"].items()}})
            for oid, c in raw.pop("commits").items()
        }
        return Repo(**raw, commits=commits)

    def save(self, repo: Repo) -> None:
        path = self.repo_dir / repo.type / f"{repo.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(repo)))
        os.replace(tmp, path)

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            tmp = path.with_name(f"{sha}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    # ---------------------------------------------------------- access
    def user(self, authorization: str | None) -> str | None:
        """The token's user; None when anonymous; 401 for a token the server does not know."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))

    def repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self.can_write(user, repo_id.split("/")[0])):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    # ---------------------------------------------------------- writes
    def create_repo(self, repo_type: str, repo_id: str, private: bool, user: str) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(type=repo_type, id=repo_id, private=private, created_at=now_iso())
            self.repos[(repo_type, repo_id)] = repo
            sha = self.put_blob(GITATTRIBUTES)
            files = {
                ".gitattributes": FileEntry(
                    len(GITATTRIBUTES), sha, git_blob_oid(GITATTRIBUTES), False
                )
            }
            self._add_commit(repo, None, "branch", "initial commit", "", user, files, "main")
            return repo

    def _add_commit(self, repo, parent, kind, title, message, user, files, branch) -> Commit:
        date = now_iso()
        seed = json.dumps([parent, sorted((p, f.oid) for p, f in files.items()), title, date, kind])
        oid = hashlib.sha1((seed + secrets.token_hex(8)).encode()).hexdigest()
        commit = Commit(oid, parent, title, message, date, user, files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        self.save(repo)
        return commit

    def commit(self, repo: Repo, branch: str, lines: list[dict], user: str) -> Commit:
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            header = next((line["value"] for line in lines if line["key"] == "header"), None)
            if header is None:
                raise HubError(400, "the commit payload has no header line")
            if header.get("parentCommit") not in (None, head.oid):
                raise HubError(
                    412, f"parentCommit {header['parentCommit']} is not the head of {branch}"
                )
            files = dict(head.files)
            for line in lines:
                key, value = line["key"], line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[path] = FileEntry(
                        len(data), self.put_blob(data), git_blob_oid(data), False
                    )
                elif key == "lfsFile":
                    sha = value["oid"]
                    if sha not in repo.lfs_objects:
                        raise HubError(422, f"LFS object {sha} of {path} was never uploaded")
                    size = self.blob_path(sha).stat().st_size
                    files[path] = FileEntry(size, sha, git_blob_oid(lfs_pointer(sha, size)), True)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(
                            404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                        )
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                elif key != "header":
                    raise HubError(400, f"unknown commit operation {key!r}")
            return self._add_commit(
                repo, head.oid, "commit", header.get("summary", ""), header.get("description", ""),
                user, files, branch,
            )  # fmt: skip


def tree_entries(commit: Commit, path: str, recursive: bool) -> list[dict]:
    """Hub ``tree`` entries under ``path`` (directories first, then files, each sorted)."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and prefix[:-1] in commit.files:
        raise HubError(404, f"{path} is a file, not a directory", "EntryNotFound", commit.oid)
    below = {p: f for p, f in commit.files.items() if p.startswith(prefix)}
    if prefix and not below:
        raise HubError(404, f"{path} does not exist at {commit.oid}", "EntryNotFound", commit.oid)
    dirs: dict[str, list[str]] = {}
    files = []
    for p in sorted(below):
        rest = p[len(prefix) :].split("/")
        depth = len(rest) if recursive else 1
        for i in range(1, min(depth, len(rest) - 1) + 1):
            dirs.setdefault(prefix + "/".join(rest[:i]), []).append(p)
        if recursive or len(rest) == 1:
            files.append(p)
    out = [
        {"type": "directory", "oid": dir_oid(commit, d), "size": 0, "path": d} for d in sorted(dirs)
    ]
    return out + [file_json(p, commit.files[p]) for p in files]


def dir_oid(commit: Commit, directory: str) -> str:
    items = sorted((p, f.oid) for p, f in commit.files.items() if p.startswith(directory + "/"))
    return hashlib.sha1(json.dumps([directory, items]).encode()).hexdigest()


def file_json(path: str, entry: FileEntry) -> dict:
    out = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size()}
    return out


def front_matter(text: str) -> dict | None:
    """The YAML front matter of a card (raises yaml.YAMLError when it does not parse)."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else None


def card_data(state: HubState, commit: Commit) -> dict | None:
    """README.md's front matter, as the Hub returns it in ``cardData``."""
    entry = commit.files.get("README.md")
    if entry is None:
        return None
    return front_matter(state.blob_path(entry.sha256).read_text(encoding="utf-8"))


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end
    server: HubServer

    def log_message(self, format, *args):  # quiet: tests read ``server.log`` instead
        pass

    # ---------------------------------------------------------- plumbing
    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        path = unquote(split.path)
        self.server.record(self.command, path, self.headers.get("Range"))
        try:
            self.body = self._read_body()
            self.user = self.server.state.user(self.headers.get("Authorization"))
            self.fault = self.server.take_fault(self.command, path)
            if self.fault is not None and self.fault.status is not None:
                raise HubError(self.fault.status, f"injected failure of {self.command} {path}")
            if self.fault is not None and self.fault.stall is not None:
                time.sleep(self.fault.stall)
            self._route()
        except HubError as err:
            self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"
    ):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self._json({"error": err.message, **err.extra}, err.status, headers)

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as exc:
            raise HubError(400, f"request body is not JSON: {exc}") from exc

    def _need_write(self, namespace: str) -> str:
        if self.user is None:
            raise HubError(401, "You must be authenticated to write")
        if not self.server.state.can_write(self.user, namespace):
            raise HubError(403, f"You don't have the rights to write to {namespace}")
        return self.user

    # ---------------------------------------------------------- routing
    def _route(self) -> None:
        s, m = self.segments, self.command
        if s[:1] == ["api"]:
            return self._route_api(s[1:], m)
        if s[:2] == ["_lfs", "upload"] and m == "PUT":
            return self._lfs_upload(s[2])
        if s[:2] == ["_lfs", "verify"] and m == "POST":
            return self._json({"ok": True})
        if s == ["_stats"] and m == "GET":  # for benchmarks running the server in a subprocess
            return self._json(
                {"bytes_served": self.server.bytes_served, "requests": len(self.server.log)}
            )
        repo_type = (
            "dataset" if s[:1] == ["datasets"] else "space" if s[:1] == ["spaces"] else "model"
        )
        rest = s[1:] if repo_type != "model" else s
        if len(rest) >= 4 and rest[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(repo_type, "/".join(rest[:2]), rest[3], "/".join(rest[4:]))
        if (
            len(rest) >= 2
            and rest[1].endswith(".git")
            and rest[2:] == ["info", "lfs", "objects", "batch"]
        ):
            return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][:-4]}")
        raise HubError(404, f"no route for {m} {self.path}")

    def _route_api(self, s: list[str], m: str) -> None:
        state = self.server.state
        if s == ["whoami-v2"] and m == "GET":
            if self.user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            orgs = [{"name": o, "type": "org"} for o in state.orgs.get(self.user, [])]
            token = {"displayName": "test", "role": "write"}
            return self._json({"type": "user", "name": self.user, "fullname": self.user, "orgs": orgs,
                               "auth": {"type": "access_token", "accessToken": token}})  # fmt: skip
        if s == ["repos", "create"] and m == "POST":
            return self._create_repo()
        if s == ["repos", "delete"] and m == "DELETE":
            return self._delete_repo()
        if s == ["validate-yaml"] and m == "POST":
            return self._validate_yaml()
        if len(s) < 3 or s[0] not in REPO_TYPES:
            raise HubError(404, f"no route for {m} /api/{'/'.join(s)}")
        repo_type, repo_id, rest = REPO_TYPES[s[0]], f"{s[1]}/{s[2]}", s[3:]
        repo = state.repo(repo_type, repo_id, self.user)
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        if action == "" and m == "GET":
            return self._info(repo, repo.resolve("main"))
        if action == "revision" and m == "GET":
            return self._info(repo, repo.resolve(args[0]))
        if action == "tree" and m == "GET":
            return self._tree(repo, repo.resolve(args[0]), "/".join(args[1:]))
        if action == "paths-info" and m == "POST":
            return self._paths_info(repo.resolve(args[0]))
        if action == "preupload" and m == "POST":
            return self._preupload(repo, args[0])
        if action == "commit" and m == "POST":
            return self._commit(repo, args[0])
        if action == "commits" and m == "GET":
            return self._commits(repo, repo.resolve(args[0]))
        if action == "refs" and m == "GET":
            return self._refs(repo)
        if action in ("tag", "branch"):
            return self._ref(repo, action, args[0], m)
        raise HubError(404, f"no route for {m} /api/{'/'.join(s)}")

    # ---------------------------------------------------------- repos
    def _create_repo(self) -> None:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or self.user or ""
        user = self._need_write(namespace)
        repo_id = f"{namespace}/{body['name']}"
        url = f"{self.server.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        private = body.get("visibility", body.get("private")) in ("private", True)
        try:
            self.server.state.create_repo(repo_type, repo_id, private, user)
        except HubError as err:  # the Hub's 409 body names the existing repo's url
            err.extra["url"] = url
            raise
        self._json({"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def _delete_repo(self) -> None:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or self.user or ""
        self._need_write(namespace)
        repo_id = f"{namespace}/{body['name']}"
        state = self.server.state
        with state.lock:
            state.repo(repo_type, repo_id, self.user)
            del state.repos[(repo_type, repo_id)]
            (state.repo_dir / repo_type / f"{repo_id}.json").unlink()
        self._json({})

    def _validate_yaml(self) -> None:
        import yaml

        try:
            front_matter(self._json_body().get("content", ""))
        except yaml.YAMLError as exc:
            self._json({"errors": [{"message": str(exc)}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def _info(self, repo: Repo, commit: Commit) -> None:
        blobs = self.query.get("blobs") in ("True", "true", "1")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sib: dict = {"rfilename": path}
            if blobs:
                sib.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sib["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                  "pointerSize": entry.pointer_size()}  # fmt: skip
            siblings.append(sib)
        self._json({
            "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24], "id": repo.id,
            "author": repo.id.split("/")[0], "sha": commit.oid, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "createdAt": repo.created_at, "lastModified": commit.date,
            "cardData": card_data(self.server.state, commit), "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        })  # fmt: skip

    def _tree(self, repo: Repo, commit: Commit, path: str) -> None:
        recursive = self.query.get("recursive") in ("True", "true", "1")
        entries = tree_entries(commit, path, recursive)
        start = int(self.query.get("cursor", 0))
        page = self.server.tree_page_size
        headers = {}
        if start + page < len(entries):
            split = urlsplit(self.path)
            query = {**self.query, "cursor": str(start + page)}
            link = f"{self.server.endpoint}{split.path}?" + "&".join(
                f"{k}={quote(v)}" for k, v in query.items()
            )
            headers["Link"] = f'<{link}>; rel="next"'
        self._json(entries[start : start + page], headers=headers)

    def _paths_info(self, commit: Commit) -> None:
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = self._json_body().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(file_json(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(
                    {"type": "directory", "oid": dir_oid(commit, path), "size": 0, "path": path}
                )
        self._json(out)

    def _commits(self, repo: Repo, commit: Commit) -> None:
        out = []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                        "date": commit.date, "authors": [{"user": commit.author}]})  # fmt: skip
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(out)

    def _refs(self, repo: Repo) -> None:
        def refs(table: dict[str, str], kind: str) -> list[dict]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid}
                for n, oid in sorted(table.items())
            ]

        self._json({"branches": refs(repo.branches, "heads"), "converts": [],
                    "tags": refs(repo.tags, "tags"), "pullRequests": []})  # fmt: skip

    def _ref(self, repo: Repo, kind: str, name: str, method: str) -> None:
        self._need_write(repo.id.split("/")[0])
        table = repo.tags if kind == "tag" else repo.branches
        state = self.server.state
        with state.lock:
            if method == "DELETE":
                if table.pop(name, None) is None:
                    raise HubError(404, f"{kind} {name} not found", "RevisionNotFound")
            elif method == "POST" and kind == "tag":  # POST tag/{revision} {"tag": name}
                tag = self._json_body()["tag"]
                if tag in repo.tags:
                    raise HubError(409, f"Tag {tag} already exists")
                repo.tags[tag] = repo.resolve(name).oid
            elif method == "POST":  # POST branch/{name} {"startingPoint": rev}
                if name in repo.branches:
                    raise HubError(409, f"Branch {name} already exists")
                repo.branches[name] = repo.resolve(
                    self._json_body().get("startingPoint") or "main"
                ).oid
            else:
                raise HubError(405, f"{method} not allowed on {kind}")
            state.save(repo)
        self._json({})

    # ---------------------------------------------------------- uploads
    def _preupload(self, repo: Repo, revision: str) -> None:
        self._need_write(repo.id.split("/")[0])
        head = repo.resolve(revision)
        out = []
        for f in self._json_body().get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["size"] >= LFS_THRESHOLD or is_binary(sample)
            remote = head.files.get(f["path"])
            out.append({
                "path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                "oid": (remote.sha256 if remote.lfs else remote.oid) if remote else None,
            })  # fmt: skip
        self._json({"files": out, "commitOid": head.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        state = self.server.state
        repo = state.repo(repo_type, repo_id, self.user)
        self._need_write(repo.id.split("/")[0])
        objects = []
        for obj in self._json_body().get("objects", []):
            oid, size = obj["oid"], obj["size"]
            entry: dict = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:  # LFS storage is per repo, as on the Hub
                key = secrets.token_urlsafe(16)
                with state.lock:
                    state.upload_keys[key] = (repo, oid)
                base = self.server.endpoint
                entry["actions"] = {
                    "upload": {"href": f"{base}/_lfs/upload/{key}"},
                    "verify": {"href": f"{base}/_lfs/verify/{oid}"},
                }
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, key: str) -> None:
        state = self.server.state
        with state.lock:
            repo, oid = state.upload_keys.pop(key, (None, None))
        if repo is None:
            raise HubError(403, "unknown or used upload key")
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match sha256 {oid}")
        state.put_blob(self.body)
        with state.lock:
            if oid not in repo.lfs_objects:
                repo.lfs_objects.append(oid)
                state.save(repo)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _commit(self, repo: Repo, revision: str) -> None:
        user = self._need_write(repo.id.split("/")[0])
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise HubError(400, f"commit payload is not ndjson: {exc}") from exc
        commit = self.server.state.commit(repo, revision, lines, user)
        url = f"{self.server.endpoint}/{URL_PREFIX[repo.type]}{repo.id}/commit/{commit.oid}"
        self._json(
            {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}
        )

    # ---------------------------------------------------------- downloads
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        state = self.server.state
        repo = state.repo(repo_type, repo_id, self.user)
        commit = repo.resolve(revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag()}"',
            "Accept-Ranges": "bytes",
        }
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end = 0, entry.size  # [start, end)
        status = 200
        if "Range" in self.headers and self.command == "GET":
            start, end = self._parse_range(self.headers["Range"], entry.size)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(state.blob_path(entry.sha256), "rb") as f:
            if self.fault is not None and self.fault.flip:
                f.seek(start)
                body = bytearray(f.read(end - start))
                body[len(body) // 2] ^= 0x01
                self.wfile.write(body)
                return
            if self.fault is None or self.fault.drop_after is None:
                self.server.count_served(end - start)
                self.connection.sendfile(f, start, end - start)
                return
            f.seek(start)
            self.wfile.write(f.read(min(self.fault.drop_after, end - start)))
            self.wfile.flush()
            if self.fault.pause and self.server.held():
                self.wfile.write(f.read(end - start - self.fault.drop_after))
                return
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    @staticmethod
    def _parse_range(value: str, size: int) -> tuple[int, int]:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
        if not match or match.group(1) == match.group(2) == "":
            raise HubError(400, f"bad Range header {value!r}")
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(size - int(last), 0), size
        else:
            start, end = int(first), min(int(last) + 1, size) if last else size
        if start >= size or start >= end:
            raise HubError(416, f"Range {value} not satisfiable for size {size}")
        return start, end


@dataclass
class Fault:
    method: str
    path_part: str
    status: int | None
    drop_after: int | None
    skip: int
    stall: float | None = None
    pause: bool = False  # after sending ``drop_after`` bytes, hold the rest (``held``)
    flip: bool = False  # send the body with one byte flipped (headers unchanged)


class HubServer(ThreadingHTTPServer):
    """The server; use as a context manager or call ``start()`` / ``stop()``."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, root: str | Path, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None,
                 port: int = 0):  # fmt: skip
        super().__init__(("127.0.0.1", port), HubHandler)
        self.state = HubState(Path(root), tokens, orgs or {})
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self.tree_page_size = 1000
        self.bytes_served = 0  # file body bytes sent by /resolve/
        self.log: list[tuple[str, str, str | None]] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._released = threading.Event()  # paused transfers go on (``release``) ...
        self._stopping = threading.Event()  # ... or are cut (``stop``)

    def process_request(self, request, client_address):
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def count_served(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_served += nbytes

    def record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.log.append((method, path, range_header))

    def fail(self, method: str, path_part: str, *, status: int | None = None,
             drop_after: int | None = None, stall: float | None = None,
             pause_after: int | None = None, flip: bool = False, skip: int = 0) -> None:  # fmt: skip
        """Make a ``method`` request whose path contains ``path_part`` fail, after letting
        ``skip`` such requests through: answer ``status``, or (GET of a file) cut the body
        after ``drop_after`` bytes, or hold the request ``stall`` seconds before answering it
        (a client to be killed mid-download), or (GET of a file) send ``pause_after`` bytes
        of the body and hold the rest until ``release`` or ``stop``, or (GET of a file, ``flip``)
        send its body with one byte flipped under the real size and hash headers."""
        if sum(x is not None for x in (status, drop_after, stall, pause_after)) + flip != 1:
            raise ValueError(
                "give exactly one of status=, drop_after=, stall=, pause_after= and flip="
            )
        pause = pause_after is not None
        drop_after = pause_after if pause else drop_after
        with self._lock:
            self._faults.append(
                Fault(method, path_part, status, drop_after, skip, stall, pause, flip)
            )

    def release(self) -> None:
        """Send the rest of the transfers paused by ``fail(..., pause_after=n)``."""
        self._released.set()

    def held(self) -> bool:
        """Wait while paused transfers are held: True once released, False once stopped."""
        while not self._stopping.is_set():
            if self._released.wait(0.05):
                return True
        return False

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.method == method and fault.path_part in path:
                    if fault.skip:
                        fault.skip -= 1
                        return None
                    return self._faults.pop(i)
        return None

    def downloads(self, path_part: str = "") -> list[str]:
        """Paths of the file bodies served (GET /resolve/) whose path contains ``path_part``."""
        return [p for m, p, _ in self.log if m == "GET" and "/resolve/" in p and path_part in p]

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections: the Hub is gone."""
        self._stopping.set()
        self.shutdown()
        self.server_close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the local test Hub server.")
    parser.add_argument("--root", help="storage directory (default: a temporary one)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=[], metavar="TOKEN:USER")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="hub-server-")
    tokens = dict(t.split(":", 1) for t in args.token)
    server = HubServer(root, tokens, port=args.port)
    print(server.endpoint, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
