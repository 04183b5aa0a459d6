"""A local server speaking the Hugging Face Hub's HTTP protocol, for download tests that run offline.

It answers what `huggingface_hub` (the real client; 2.x) asks, as huggingface.co does:

- ``GET /api/{models,datasets}/<repo>/revision/<rev>``: repo info with ``sha`` and ``siblings``;
- ``GET /api/{models,datasets}/<repo>/tree/<rev>?recursive=...``: the file list with git blob ``oid`` and, for
  LFS files, ``lfs.oid`` (sha256) and size (what `snapshot_download` and `verify_repo_checksums` read);
- ``HEAD/GET /<repo>/resolve/<rev>/<file>`` and ``/datasets/<repo>/resolve/...``: regular files answer 200
  with ``ETag`` (git sha1), ``X-Repo-Commit`` and ``Content-Length``; LFS files answer 302 to a CDN-like
  ``/cdn/<sha256>`` with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, as the Hub does;
- Range requests (206 + Content-Range), which the client uses to resume;
- plain files at ``/files/<name>`` (`static`), for the catalog's non-Hub URLs, with Range and faults too;
- 404s with the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) the client maps to
  its exceptions (timm, for one, relies on EntryNotFound when it probes for ``model.safetensors``).

Faults for tests: `drop_once(path)` sends half of a file's body then closes the connection (once);
`corrupt(path)` serves other bytes of the same length than the checksums it lists. `requests` logs
(method, path, Range) of every request. `offline()` refuses connections, like a machine without network.

Use it as a context manager; it stops its thread and closes every connection on exit. Point the client at
it with `hub_env(server, hf_home)` (environment for a child process) or `patch_hub(monkeypatch, server,
hf_home)` (this process: huggingface_hub reads HF_ENDPOINT into `constants` at import time).
"""
from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".tar", ".parquet")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # "model" or "dataset"
    files: dict[str, bytes]
    sha: str = ""
    lfs: set[str] = field(default_factory=set)

    def __post_init__(self):
        if not self.lfs:
            self.lfs = {p for p in self.files if p.endswith(LFS_SUFFIXES)}
        if not self.sha:
            h = hashlib.sha1(self.repo_id.encode())
            for p in sorted(self.files):
                h.update(p.encode() + hashlib.sha256(self.files[p]).digest())
            self.sha = h.hexdigest()

    def tree(self) -> list[dict]:
        out = []
        for p, data in sorted(self.files.items()):
            e = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
            if p in self.lfs:
                e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(e)
        return out


class HubServer:
    """A threaded loopback HTTP server hosting `Repo`s in the Hub's protocol (see the module docstring)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.static: dict[str, bytes] = {}  # plain files at /files/<name> (non-Hub URLs), Range and faults too
        self._drop: set[str] = set()
        self._corrupt: set[str] = set()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []
        self.url = self.cdn_url = ""

    # -- content -------------------------------------------------------------------------------------------
    def add(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> Repo:
        r = Repo(repo_id, repo_type, dict(files))
        self.repos[(repo_type, repo_id)] = r
        return r

    def drop_once(self, path: str) -> None:
        """The next GET of a file whose repo path ends with `path` stops halfway and closes the connection."""
        self._drop.add(path)

    def corrupt(self, path: str) -> None:
        """Serve other bytes for files whose repo path ends with `path` (the listed checksums stay)."""
        self._corrupt.add(path)

    def gets(self, suffix: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith(suffix)]

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        # Two origins, as on huggingface.co: the Hub, and a CDN its LFS redirects point to (the client follows
        # same-origin redirects on HEAD but reads the metadata off a redirect to another origin).
        for _ in range(2):
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            httpd.daemon_threads = True
            t = threading.Thread(target=httpd.serve_forever, name="hub-server", daemon=True)
            t.start()
            self._servers.append((httpd, t))
        self.url = f"http://127.0.0.1:{self._servers[0][0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1][0].server_address[1]}"
        return self

    def offline(self) -> None:
        """Stop answering: connections are refused from now on (the ports are closed)."""
        for httpd, _ in self._servers:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            for c in list(self._conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._conns.clear()
        for _, t in self._servers:
            t.join(timeout=10)
        self._servers.clear()

    def __exit__(self, *exc) -> None:
        self.offline()

    # -- lookups -------------------------------------------------------------------------------------------
    def find(self, kind: str, rest: str) -> tuple[Repo | None, str]:
        """(repo, remainder) for a path like ``org/name/...`` under repo type `kind`."""
        parts = rest.split("/")
        for n in (2, 1):
            r = self.repos.get((kind, "/".join(parts[:n])))
            if r is not None:
                return r, "/".join(parts[n:])
        return None, rest

    def blob(self, sha256: str) -> tuple[Repo, str] | None:
        for r in self.repos.values():
            for p in r.lfs:
                if hashlib.sha256(r.files[p]).hexdigest() == sha256:
                    return r, p
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end on their own

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._conns.discard(self.connection)
        super().finish()

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # -- responses -----------------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, obj, head: bool, headers: dict | None = None) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, code: int, error_code: str, msg: str, head: bool, commit: str | None = None) -> None:
        h = {"X-Error-Code": error_code, "X-Error-Message": msg, "Content-Type": "application/json"}
        if commit:
            h["X-Repo-Commit"] = commit
        self._send(code, json.dumps({"error": msg}).encode(), h, head)

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append((self.command, path, self.headers.get("Range")))
        if path.startswith("/api/"):
            return self._api(path[len("/api/"):], parse_qs(url.query), head)
        if path.startswith("/files/"):
            name = path[len("/files/"):]
            if name not in self.hub.static:
                return self._send(404, b"not found", {}, head)
            return self._file(Repo("static", "model", {name: self.hub.static[name]}), name, head, {})
        if path.startswith("/cdn/"):
            found = self.hub.blob(path[len("/cdn/"):])
            if found is None:
                return self._error(404, "EntryNotFound", "no such blob", head)
            repo, p = found
            return self._file(repo, p, head, {"ETag": f'"{path[len("/cdn/"):]}"'})
        kind = "model"
        rest = path.lstrip("/")
        if rest.startswith("datasets/"):
            kind, rest = "dataset", rest[len("datasets/"):]
        repo, rest = self.hub.find(kind, rest)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        if not rest.startswith("resolve/"):
            return self._error(404, "EntryNotFound", "unknown route", head, repo.sha)
        rev, _, file = rest[len("resolve/"):].partition("/")
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        if file not in repo.files:
            return self._error(404, "EntryNotFound", f"{file} does not exist", head, repo.sha)
        data = repo.files[file]
        if file in repo.lfs:  # the Hub redirects LFS files to its CDN, naming the sha256 and size
            sha = hashlib.sha256(data).hexdigest()
            return self._send(302, b"", {"Location": f"{self.hub.cdn_url}/cdn/{sha}", "X-Repo-Commit": repo.sha,
                                         "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": len(data),
                                         "ETag": f'"{git_blob_sha1(data)}"'}, head)
        return self._file(repo, file, head, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": repo.sha})

    def _api(self, rest: str, query: dict, head: bool) -> None:
        kind, _, rest = rest.partition("/")
        kind = kind.rstrip("s")
        repo, rest = self.hub.find(kind, rest)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        op, _, rev = rest.partition("/")
        rev, _, sub = rev.partition("/")
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        if op == "revision":
            return self._json({"id": repo.repo_id, "_id": repo.repo_id, "sha": repo.sha, "private": False,
                               "siblings": [{"rfilename": p} for p in sorted(repo.files)], "tags": [],
                               "lastModified": "2024-01-01T00:00:00.000Z"}, head)
        if op == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries = [e for e in repo.tree() if e["path"].startswith(f"{sub}/" if sub else "")]
            if not recursive:
                depth = sub.count("/") + (1 if sub else 0)
                entries = [e for e in entries if e["path"].count("/") == depth]
            return self._json(entries, head)
        return self._error(404, "EntryNotFound", "unknown api route", head)

    def _file(self, repo: Repo, file: str, head: bool, headers: dict) -> None:
        data = repo.files[file]
        if any(file.endswith(s) for s in self.hub._corrupt):
            mid = len(data) // 2  # inside the tensor data of a weights file: it still loads, wrongly
            data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]
        start, status, extra = 0, 200, {}
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            lo, _, hi = rng[len("bytes="):].partition("-")
            start = int(lo or 0)
            end = int(hi) if hi else len(data) - 1
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            data_out = data[start:end + 1]
            status, extra = 206, {"Content-Range": f"bytes {start}-{start + len(data_out) - 1}/{len(data)}"}
        else:
            data_out = data
        drop = not head and next((s for s in self.hub._drop if file.endswith(s)), None)
        self.send_response(status)
        for k, v in {**headers, **extra, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data_out)))
        self.end_headers()
        if head:
            return
        if drop:  # half the body, then the connection goes away
            self.hub._drop.discard(drop)
            self.wfile.write(data_out[: len(data_out) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(data_out)


def hub_env(server: HubServer, hf_home: Path, offline: bool = False) -> dict[str, str]:
    """Environment variables pointing a child process's huggingface_hub at `server`, caching in `hf_home`."""
    env = {"HF_ENDPOINT": server.url, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "5",
           "HF_HUB_DOWNLOAD_TIMEOUT": "10", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def patch_hub(monkeypatch, server: HubServer, hf_home: Path, offline: bool = False) -> None:
    """Point this process's huggingface_hub at `server` (env and the constants read at import time)."""
    from huggingface_hub import constants

    for k, v in hub_env(server, hf_home, offline).items():
        monkeypatch.setenv(k, v)
    if not offline:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def server():
    """A started `HubServer` (import this fixture into a test module); afterwards its threads must be gone."""
    with HubServer() as s:
        yield s
    assert not [t for t in threading.enumerate() if t.name == "hub-server"]  # stopped, no thread left
