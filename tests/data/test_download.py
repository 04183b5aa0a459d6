"""Downloads: the real code path against local files and a loopback HTTP server."""
from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading

import pytest

from beyond_inet.data import download as dl
from beyond_inet.errors import UserError
from tests.conftest import skimage_photo


def _archive(tmp_path):
    src = tmp_path / "src" / "cue-conflict" / "cat"
    src.mkdir(parents=True)
    skimage_photo("chelsea").resize((224, 224)).save(src / "cat1-bottle2.png")
    arc = tmp_path / "cue-conflict.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cue-conflict", arcname="cue-conflict")
    return arc


def test_file_url_download_with_checksum(tmp_path):
    arc = _archive(tmp_path)
    digest = hashlib.sha256(arc.read_bytes()).hexdigest()
    got = dl.fetch_url(arc.as_uri(), tmp_path / "dl", digest)
    assert got.read_bytes() == arc.read_bytes()
    with pytest.raises(UserError, match="checksum mismatch"):
        dl.fetch_url(arc.as_uri(), tmp_path / "dl2", "0" * 64)
    assert not any((tmp_path / "dl2").iterdir())  # nothing half-written left behind


def test_download_command_over_loopback_http(tmp_path):
    arc = _archive(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/{arc.name}"
        root = tmp_path / "data"
        root.mkdir()
        dl.download("cue-conflict", root, url_override=url)
    finally:
        srv.shutdown()
    from beyond_inet.data import catalog

    ds = catalog.open_dataset("cue-conflict", root)
    assert len(ds) == 1 and ds.label(0) == 7  # cat


def test_hf_download_calls_snapshot_with_revision(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: calls.append(kw) or kw["local_dir"])
    dl.download("vtab/cifar100", tmp_path)
    assert calls == [{"repo_id": "clip-benchmark/wds_vtab-cifar100", "repo_type": "dataset", "revision": "main",
                      "local_dir": str(tmp_path / "vtab" / "cifar100")}]
    with pytest.raises(UserError):
        dl.download("imagenet-real", tmp_path)
