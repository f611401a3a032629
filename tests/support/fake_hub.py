"""A local stand-in for the Hugging Face Hub's HTTP API, faithful to what huggingface_hub 2.x relies on.

Endpoints: model info (with and without a revision, `blobs=true`), HEAD and ranged GET (206) on
/{repo}/resolve/{rev}/{file}, refs, commits and the file tree (one folder level). Errors carry the
`X-Error-Code` header the client maps to its exceptions (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo). Knobs: latency per request, scripted failures (429 with Retry-After, 5xx), a Hub that accepts every
request and never answers (`hang()`), and a log of every request with the bytes it sent.
"""

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    title: str = "Upload"
    date: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))


@dataclass
class Repo:
    repo_id: str
    commits: list[Commit]  # oldest first
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gated: str | bool = False
    approved_tokens: set[str] = field(default_factory=set)
    card: dict[str, object] = field(default_factory=dict)
    pipeline_tag: str | None = "text-generation"
    hub_tags: list[str] = field(default_factory=lambda: ["transformers", "safetensors", "llama"])
    info_config: dict[str, object] = field(default_factory=dict)
    downloads: int = 1234
    likes: int = 56
    missing_on_resolve: set[str] = field(default_factory=set)  # listed in the info, 404 when fetched
    pull_requests: list[dict[str, object]] = field(default_factory=list)  # commits made with create_pr

    def commit(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return next((commit for commit in self.commits if commit.sha == sha), None)


@dataclass
class Logged:
    method: str
    path: str
    status: int
    bytes_sent: int
    authorization: str | None
    repo_id: str | None
    at: float = field(default_factory=time.monotonic)


WRITE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit)/(?P<rev>[^/]+)$")


def hub_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # the only format huggingface_hub parses


def sha_of(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.latency = 0.0
        self.failures: dict[str, list[tuple[int, dict[str, str]]]] = {}  # repo_id -> scripted responses
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._hanging = threading.Event()
        self._released = threading.Event()
        self.held = 0  # requests accepted and not answered, while hanging

    @contextmanager
    def hang(self) -> Iterator["FakeHub"]:
        """Accept every request and never answer it, until the block ends (then each is dropped unanswered)."""
        self._released.clear()
        self._hanging.set()
        try:
            yield self
        finally:
            self._hanging.clear()
            self._released.set()

    def hold(self) -> bool:
        """Called by each request: True when it was held (and is to be dropped without an answer)."""
        if not self._hanging.is_set():
            return False
        with self._lock:
            self.held += 1
        self._released.wait()
        with self._lock:
            self.held -= 1
        return True

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.repo_id] = repo
        return repo

    def fail_next(self, repo_id: str, status: int, times: int = 1, **headers: str) -> None:
        self.failures.setdefault(repo_id, []).extend([(status, headers)] * times)

    def requests_for(self, repo_id: str) -> list[Logged]:
        return [entry for entry in self.log if entry.repo_id == repo_id]

    @contextmanager
    def running(self) -> Iterator["FakeHub"]:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)


INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/?]+))?$")
REFS = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/refs$")
COMMITS = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commits/(?P<rev>[^/?]+)$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.fake.hold():
            self.close_connection = True
            return
        self._handle(body=True)

    def do_HEAD(self) -> None:
        if self.fake.hold():
            self.close_connection = True
            return
        self._handle(body=False)

    def do_POST(self) -> None:
        """The two calls of `HfApi.create_commit` for small files: preupload (how to send each file), commit."""
        if self.fake.hold():
            self.close_connection = True
            return
        path = unquote(urlsplit(self.path).path)
        query = parse_qs(urlsplit(self.path).query)
        data = self.rfile.read(int(self.headers.get("content-length") or 0))
        match = WRITE.match(path)
        repo = self.fake.repos.get(match.group("repo")) if match else None
        if match is None or repo is None:
            self._error(404, "RepoNotFound", "Repository not found", True, match.group("repo") if match else None)
            return
        if not (self.headers.get("authorization") or "").startswith("Bearer "):
            self._error(401, None, "Invalid credentials", True, repo.repo_id)
            return
        if match.group("action") == "preupload":
            files = json.loads(data)["files"]
            answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            self._json({"files": answer, "commitOid": repo.commits[-1].sha}, True, repo.repo_id)
            return
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = {
            line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"
        }
        number = len(repo.pull_requests) + 1
        oid = sha_of(repo.repo_id, "pr", number)
        with self.fake._lock:
            repo.pull_requests.append(
                {
                    "number": number,
                    "title": header["summary"],
                    "description": header.get("description", ""),
                    "files": files,
                    "create_pr": query.get("create_pr") == ["1"],
                }
            )
        pull_request = f"{self.fake.url}/{repo.repo_id}/discussions/{number}"
        commit_url = f"{self.fake.url}/{repo.repo_id}/commit/{oid}"
        self._json({"commitUrl": commit_url, "commitOid": oid, "pullRequestUrl": pull_request}, True, repo.repo_id)

    def _handle(self, *, body: bool) -> None:
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        repo_id = next((m.group("repo") for p in (INFO, REFS, COMMITS, RESOLVE, TREE) if (m := p.match(path))), None)
        if self.fake.latency:
            time.sleep(self.fake.latency)
        with self.fake._lock:
            scripted = self.fake.failures.get(repo_id or "", [])
            failure = scripted.pop(0) if scripted else None
        if failure is not None:
            status, headers = failure
            self._send(status, b'{"error": "scripted"}', body, repo_id, headers | {"Content-Type": "application/json"})
            return
        repo = self.fake.repos.get(repo_id or "")
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", body, repo_id)
            return
        if match := REFS.match(path):
            self._json(self._refs(repo), body, repo_id)
        elif match := COMMITS.match(path):
            commit = repo.commit(match.group("rev"))
            if commit is None:
                self._error(404, "RevisionNotFound", "Invalid rev id", body, repo_id)
                return
            history = repo.commits[: repo.commits.index(commit) + 1][::-1]
            self._json(
                [
                    {
                        "id": c.sha,
                        "authors": [{"user": "meta"}],
                        "date": hub_date(c.date),
                        "title": c.title,
                        "message": "",
                    }
                    for c in history
                ],
                body,
                repo_id,
            )
        elif match := TREE.match(path):
            commit = repo.commit(match.group("rev"))
            if commit is None:
                self._error(404, "RevisionNotFound", "Invalid rev id", body, repo_id)
                return
            entries = self._tree(commit, (match.group("path") or "").strip("/"))
            if entries is None:
                self._error(404, "EntryNotFound", "Entry not found", body, repo_id)
                return
            self._json(entries, body, repo_id)
        elif match := INFO.match(path):
            commit = repo.commit(match.group("rev") or "main")
            if commit is None:
                self._error(404, "RevisionNotFound", "Invalid rev id", body, repo_id)
                return
            self._json(self._info(repo, commit, blobs="true" in query.get("blobs", [])), body, repo_id)
        elif match := RESOLVE.match(path):
            self._resolve(repo, match.group("rev"), match.group("file"), body)
        else:
            self._error(404, None, "Not found", body, repo_id)

    def _refs(self, repo: Repo) -> dict[str, object]:
        return {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
            "converts": [],
        }

    def _tree(self, commit: Commit, folder: str) -> list[dict[str, object]] | None:
        """The folder's direct entries (files and subfolders), or None when no file lies under it."""
        prefix = f"{folder}/" if folder else ""
        names = [name for name in sorted(commit.files) if name.startswith(prefix)]
        if folder and not names:
            return None
        entries: dict[str, dict[str, object]] = {}
        for name in names:
            head, _, rest = name[len(prefix) :].partition("/")
            if rest:
                entries.setdefault(head, {"type": "directory", "oid": sha_of(prefix + head), "path": prefix + head})
            else:
                content = commit.files[name]
                entries[head] = {"type": "file", "oid": sha_of(name, commit.sha), "size": len(content), "path": name}
        return list(entries.values())

    def _info(self, repo: Repo, commit: Commit, *, blobs: bool) -> dict[str, object]:
        siblings = []
        for name, content in sorted(commit.files.items()):
            sibling: dict[str, object] = {"rfilename": name}
            if blobs:
                sibling |= {"size": len(content), "blobId": sha_of(name, commit.sha)}
                if name.endswith(LFS_SUFFIXES):
                    sibling["lfs"] = {
                        "size": len(content),
                        "sha256": hashlib.sha256(content).hexdigest(),
                        "pointerSize": 134,
                    }
            siblings.append(sibling)
        return {
            "_id": sha_of(repo.repo_id)[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": hub_date(commit.date),
            "createdAt": "2024-07-23T00:00:00.000Z",
            "private": False,
            "disabled": False,
            "gated": repo.gated,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "library_name": "transformers",
            "pipeline_tag": repo.pipeline_tag,
            "tags": repo.hub_tags,
            "cardData": repo.card,
            "config": repo.info_config,
            "siblings": siblings,
            "spaces": [],
        }

    def _resolve(self, repo: Repo, revision: str, filename: str, body: bool) -> None:
        commit = repo.commit(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", body, repo.repo_id)
            return
        if repo.gated:
            token = (self.headers.get("authorization") or "").removeprefix("Bearer ").strip()
            if token not in repo.approved_tokens:
                status = 403 if token else 401
                self._error(status, "GatedRepo", "Access to model is restricted", body, repo.repo_id)
                return
        content = None if filename in repo.missing_on_resolve else commit.files.get(filename)
        if content is None:
            self._error(404, "EntryNotFound", "Entry not found", body, repo.repo_id)
            return
        etag = hashlib.sha256(content).hexdigest() if filename.endswith(LFS_SUFFIXES) else sha_of(filename)
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("range") or "")
        if ranged and body:
            start = int(ranged.group(1))
            end = min(int(ranged.group(2) or len(content) - 1), len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            self._send(206, content[start : end + 1], body, repo.repo_id, headers)
            return
        self._send(200, content, body, repo.repo_id, headers)

    def _json(self, payload: object, body: bool, repo_id: str | None) -> None:
        self._send(200, json.dumps(payload).encode(), body, repo_id, {"Content-Type": "application/json"})

    def _error(self, status: int, code: str | None, message: str, body: bool, repo_id: str | None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), body, repo_id, headers)

    def _send(self, status: int, content: bytes, body: bool, repo_id: str | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)
        with self.fake._lock:
            self.fake.log.append(
                Logged(
                    self.command,
                    self.path,
                    status,
                    len(content) if body else 0,
                    self.headers.get("authorization"),
                    repo_id,
                )
            )


def llama_repo(repo_id: str, files: dict[str, bytes], *, sha: str | None = None, **options: object) -> Repo:
    """A repo with one commit on `main` holding `files`."""
    commit = Commit(sha=sha or sha_of(repo_id, sorted(files)), files=files)
    defaults: dict[str, object] = {
        "card": {"license": "llama3.1", "base_model": [], "tags": ["llama"]},
        "info_config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "tokenizer_config": {"chat_template": "{{ messages }}"},
        },
    }
    return Repo(repo_id=repo_id, commits=[commit], branches={"main": commit.sha}, **(defaults | options))  # type: ignore[arg-type]
