"""Downloads over the real protocols: the catalog's Hub datasets through `huggingface_hub` against a local
server speaking the Hub's HTTP protocol (tests/hub_server.py), and its plain URLs (tarballs) through
`fetch_url` against the same server's /files/ route. Dropped connections, corrupt bytes and failed unpacks
are injected there; nothing leaves this machine."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from beyond_inet.cli import main
from beyond_inet.data import catalog
from beyond_inet.data import download as dl
from beyond_inet.data.labelspaces import imagenet_classnames, subset_indices
from beyond_inet.errors import UserError
from tests.conftest import skimage_photo
from tests.data.test_label_layouts import write_wds
from tests.hub_server import patch_hub, server  # noqa: F401 - server is a fixture


def _stimuli_tar(top: str = "cue-conflict", n: int = 3, gz: bool = True) -> bytes:
    """A model-vs-human style archive: <top>/<category>/<image>.png, with real photos (big enough to span
    several read chunks once a few are in)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for i, (cat, photo) in enumerate([("cat", "chelsea"), ("bottle", "coffee"), ("airplane", "rocket")][:n]):
            img = io.BytesIO()
            skimage_photo(photo).resize((224, 224)).save(img, "PNG")
            ti = tarfile.TarInfo(f"{top}/{cat}/{cat}{i + 1}-bottle2.png")
            ti.size = len(img.getvalue())
            tf.addfile(ti, io.BytesIO(img.getvalue()))
    return buf.getvalue()



@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.01)


# -- plain URLs: resumable, checked, atomic ------------------------------------------------------------------


def test_file_url_download_with_checksum(tmp_path):
    arc = tmp_path / "cue-conflict.tar.gz"
    arc.write_bytes(_stimuli_tar())
    digest = hashlib.sha256(arc.read_bytes()).hexdigest()
    got = dl.fetch_url(arc.as_uri(), tmp_path / "dl", digest)
    assert got.read_bytes() == arc.read_bytes()
    with pytest.raises(UserError, match="checksum mismatch"):
        dl.fetch_url(arc.as_uri(), tmp_path / "dl2", "0" * 64)
    assert not any((tmp_path / "dl2").iterdir())  # nothing half-written left behind


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path, fast_retries):
    data = _stimuli_tar()
    server.static["cue-conflict.tar.gz"] = data
    server.drop_once("cue-conflict.tar.gz")
    root = tmp_path / "data"
    got = dl.download("cue-conflict", root, url_override=f"{server.url}/files/cue-conflict.tar.gz",
                      sha256=hashlib.sha256(data).hexdigest())
    gets = server.gets("/files/cue-conflict.tar.gz")
    assert [g[2] for g in gets] == [None, f"bytes={len(data) // 2}-"]  # the second asks only for the rest
    ds = catalog.open_dataset("cue-conflict", root)
    assert got == root / "cue-conflict" and len(ds) == 3 and sorted(ds.label(i) for i in range(3)) == [0, 5, 7]
    assert not (root / dl.PARTS_DIR).exists() and sorted(p.name for p in root.iterdir()) == ["cue-conflict"]


def test_partial_file_survives_a_failed_run_and_the_next_run_resumes(server, tmp_path, fast_retries, monkeypatch):
    data = _stimuli_tar()
    server.static["edge.tar.gz"] = _stimuli_tar("edge")
    data = server.static["edge.tar.gz"]
    url = f"{server.url}/files/edge.tar.gz"
    server.drop_once("edge.tar.gz")
    with pytest.raises(UserError, match="rerun the same command to resume"):
        dl.fetch_url(url, tmp_path / "parts", retries=0)
    part = tmp_path / "parts" / "edge.tar.gz.part"
    assert part.stat().st_size == len(data) // 2 and part.read_bytes() == data[: len(data) // 2]
    got = dl.fetch_url(url, tmp_path / "parts", hashlib.sha256(data).hexdigest())
    assert got.read_bytes() == data and not part.exists()
    assert server.gets("edge.tar.gz")[-1][2] == f"bytes={len(data) // 2}-"


def test_server_ignoring_range_restarts_the_file(server, tmp_path, fast_retries, monkeypatch):
    data = _stimuli_tar("edge")
    server.static["edge.tar.gz"] = data
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "edge.tar.gz.part").write_bytes(b"stale bytes of another version")
    monkeypatch.setattr(server, "static", {"edge.tar.gz": data})
    orig = dl.urllib.request.Request

    def no_range(url, headers=None):  # a server (or proxy) that drops the Range header answers 200
        return orig(url, headers={})

    monkeypatch.setattr(dl.urllib.request, "Request", no_range)
    assert dl.fetch_url(f"{server.url}/files/edge.tar.gz", parts).read_bytes() == data


def test_whole_or_longer_part_is_finished_or_restarted(server, tmp_path):
    data = _stimuli_tar("edge")
    server.static["edge.tar.gz"] = data
    url = f"{server.url}/files/edge.tar.gz"
    (tmp_path / "edge.tar.gz.part").write_bytes(data)  # complete, but not yet renamed: 416, nothing fetched
    assert dl.fetch_url(url, tmp_path).read_bytes() == data
    assert [g[2] for g in server.gets("edge.tar.gz")] == [f"bytes={len(data)}-"]
    (tmp_path / "edge.tar.gz").unlink()
    (tmp_path / "edge.tar.gz.part").write_bytes(data + b"a longer, older version")
    assert dl.fetch_url(url, tmp_path).read_bytes() == data
    assert server.gets("edge.tar.gz")[-1][2] is None  # started over


def test_checksum_mismatch_is_one_line_exit_2_and_leaves_nothing(server, tmp_path, capsys):
    server.static["cue-conflict.tar.gz"] = _stimuli_tar()
    root = tmp_path / "data"
    code = main(["download", "cue-conflict", "--data-root", str(root), "--url",
                 f"{server.url}/files/cue-conflict.tar.gz", "--sha256", "ab" * 32, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "checksum mismatch" in err[0] and "expected abababababab" in err[0]
    assert list(root.iterdir()) == []  # no part, no archive, no dataset folder


def test_failed_unpack_leaves_no_half_folder_and_keeps_the_old_one(server, tmp_path, capsys):
    root = tmp_path / "data"
    good, bad = _stimuli_tar(gz=False), _stimuli_tar(gz=False)
    bad = bad[: len(bad) // 2]  # a truncated tar: the first members unpack, then the read fails
    server.static["cue-conflict.tar"] = good
    url = f"{server.url}/files/cue-conflict.tar"
    dl.download("cue-conflict", root, url_override=url, progress=False)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    server.static["cue-conflict.tar"] = bad
    code = main(["download", "cue-conflict", "--data-root", str(root), "--url", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "could not unpack 'cue-conflict'" in err[0]
    after = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert after == before  # the complete old copy, untouched; no staging folder, no damaged archive kept
    (root / "cue-conflict").rename(root / "moved")
    with pytest.raises(UserError, match="could not unpack"):
        dl.download("cue-conflict", root, url_override=url, progress=False)
    assert not (root / "cue-conflict").exists() and not list(root.glob(".cue-conflict*"))
    server.static["cue-conflict.tar"] = good  # the damaged archive was not kept: a rerun fetches it again
    dl.download("cue-conflict", root, url_override=url, progress=False)
    assert len(catalog.open_dataset("cue-conflict", root)) == 3


def test_unpack_is_all_or_nothing_across_archives(tmp_path):
    a, b = tmp_path / "blur.tar", tmp_path / "noise.tar"
    for arc, corr in ((a, "fog"), (b, "snow")):
        with tarfile.open(arc, "w") as tf:
            ti = tarfile.TarInfo(f"{corr}/3/n01440764/x.JPEG")
            ti.size = 3
            tf.addfile(ti, io.BytesIO(b"abc"))
    dest = tmp_path / "imagenet-c"
    dl.unpack([a, b], dest)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.JPEG")) == ["fog/3/n01440764/x.JPEG",
                                                                              "snow/3/n01440764/x.JPEG"]
    b.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="neither a tar nor a zip"):
        dl.unpack([a, b], tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blur.tar", "imagenet-c", "noise.tar"]


def test_imagenet_c_five_tarballs_merge_into_one_tree(server, tmp_path, fast_retries):
    """The catalog's ImageNet-C source is five tarballs (blur, digital, extra, noise, weather), each holding
    <corruption>/<severity>/<wnid>/ folders; they are fetched (one connection dropped) and unpacked together."""
    groups = {"blur": ["defocus_blur", "glass_blur"], "digital": ["contrast"], "extra": ["speckle_noise"],
              "noise": ["gaussian_noise"], "weather": ["fog"]}
    jpeg = io.BytesIO()
    skimage_photo("chelsea").resize((64, 64)).save(jpeg, "JPEG")
    for group, corruptions in groups.items():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for c in corruptions:
                for sev in (1, 5):
                    ti = tarfile.TarInfo(f"{c}/{sev}/n02123045/ILSVRC2012_val_0000000{sev}.JPEG")
                    ti.size = len(jpeg.getvalue())
                    tf.addfile(ti, io.BytesIO(jpeg.getvalue()))
        server.static[f"{group}.tar"] = buf.getvalue()
    server.drop_once("noise.tar")
    source = catalog.ENTRIES["imagenet-c"].source
    assert source.endswith("/{blur,digital,extra,noise,weather}.tar")
    root = tmp_path / "data"
    dl.download("imagenet-c", root, url_override=f"{server.url}/files/" + source.rsplit("/", 1)[1], progress=False)
    parts = catalog.parts("imagenet-c", root)
    assert parts == [f"{c}/{s}" for c in ("gaussian_noise", "defocus_blur", "glass_blur", "fog", "contrast")
                     for s in (1, 5)]  # the paper's 15 in catalog order (speckle_noise, an extra, is not one)
    ds = catalog.open_dataset("imagenet-c/fog/5", root)
    assert len(ds) == 1 and ds.label(0) == 281  # tabby
    assert sorted(p.name for p in root.iterdir()) == ["imagenet-c"]


def test_progress_bar_shows_bytes_rate_and_eta(server, tmp_path):
    from rich.console import Console

    data = _stimuli_tar()
    server.static["cue-conflict.tar.gz"] = data
    out = io.StringIO()
    bar = dl.progress_bar(True, Console(file=out, force_terminal=True, width=150))
    with bar:
        dl.fetch_url(f"{server.url}/files/cue-conflict.tar.gz", tmp_path, progress=bar)
    text = out.getvalue()
    kb = f"{len(data) / 1000:.1f}"
    assert "cue-conflict.tar.gz" in text and f"{kb}/{kb} kB" in text and "ETA" in text
    from rich.progress import TransferSpeedColumn

    assert any(isinstance(c, TransferSpeedColumn) for c in bar.columns)  # the rate (too fast to show one here)
    assert dl.progress_bar(None) is None  # not a terminal (pytest captures stderr): no bar


def test_cli_download_is_silent_without_a_terminal(server, tmp_path, capsys):
    server.static["edge.tar.gz"] = _stimuli_tar("edge")
    code = main(["download", "edge", "--data-root", str(tmp_path), "--url", f"{server.url}/files/edge.tar.gz"])
    cap = capsys.readouterr()
    assert code == 0 and cap.err == "" and cap.out.strip() == str(tmp_path / "edge")


@pytest.mark.parametrize("args, expect", [
    (["edge", "--sha256", "xyz"], "is not a sha256"),
    (["edge", "silhouette", "--url", "http://127.0.0.1:9/x.tar"], "apply to one dataset"),
    (["vit-sup", "--sha256", "ab" * 32], "apply to one dataset"),
])
def test_bad_download_flags_are_one_line(args, expect, tmp_path, capsys):
    code = main(["download", *args, "--data-root", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expect in err[0]


def test_http_error_is_one_line_without_retries(server, tmp_path, capsys):
    code = main(["download", "edge", "--data-root", str(tmp_path), "--url", f"{server.url}/files/missing.tar.gz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "HTTP 404" in err[0]
    assert len(server.gets("missing.tar.gz")) == 1


# -- Hugging Face datasets through huggingface_hub against the local Hub --------------------------------------


def _imagenet_r_release(n: int = 7) -> dict[str, bytes]:
    """clip-benchmark/wds_imagenet-r as published: test/*.tar shards, nshards.txt, classnames.txt, templates."""
    import tempfile
    from pathlib import Path

    names = list(imagenet_classnames())
    sub = [int(i) for i in subset_indices("imagenet-r")]
    samples = [(f"s{k:04d}", sub[k * 13 % 200], k) for k in range(n)]
    with tempfile.TemporaryDirectory() as d:
        write_wds(Path(d), samples, sub, [names[i] for i in sub], per_shard=4)
        (Path(d) / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
        return {str(p.relative_to(d)): p.read_bytes() for p in Path(d).rglob("*") if p.is_file()}


def test_hub_dataset_downloads_resumes_and_is_checked(server, tmp_path, monkeypatch):
    files = _imagenet_r_release()
    server.add("clip-benchmark/wds_imagenet-r", files, repo_type="dataset")
    patch_hub(monkeypatch, server, tmp_path / "hf")
    from huggingface_hub import constants

    # The client resumes from the last whole chunk it wrote (10 MB by default): small chunks make a resume
    # of this small shard visible as a Range request.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    server.drop_once("test/0.tar")
    root = tmp_path / "data"
    got = dl.download("imagenet-r", root)
    assert got == root / "imagenet-r"
    assert {str(p.relative_to(got)) for p in got.rglob("*") if p.is_file() and ".cache" not in p.parts} == set(files)
    assert all((got / p).read_bytes() == b for p, b in files.items())
    tar_gets = [g for g in server.requests if g[0] == "GET" and g[1].startswith("/cdn/")
                and g[1].endswith(hashlib.sha256(files["test/0.tar"]).hexdigest())]
    assert [g[2] for g in tar_gets] == [None, f"bytes={len(files['test/0.tar']) // 2}-"]  # resumed
    assert any("/api/datasets/clip-benchmark/wds_imagenet-r/tree/" in r[1] for r in server.requests)
    ds = catalog.open_dataset("imagenet-r", root)
    sub = [int(i) for i in subset_indices("imagenet-r")]
    assert sorted(ds.label(i) for i in range(len(ds))) == sorted(sub[k * 13 % 200] for k in range(7))
    server.offline()  # the Hub is gone: offline mode serves the local copy
    patch_hub(monkeypatch, server, tmp_path / "hf", offline=True)
    assert dl.download("imagenet-r", root) == got


def test_hub_dataset_with_wrong_checksum_is_refused_in_one_line(server, tmp_path, monkeypatch, capsys):
    files = _imagenet_r_release()
    repo = server.add("clip-benchmark/wds_imagenet-r", files, repo_type="dataset")
    server.corrupt("test/1.tar")
    patch_hub(monkeypatch, server, tmp_path / "hf")
    code = main(["download", "imagenet-r", "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    # checked at the commit `main` named when the download began
    assert f"checksum mismatch for clip-benchmark/wds_imagenet-r@{repo.sha[:12]}: test/1.tar has sha256" in err[0]
    assert not (tmp_path / "data" / "imagenet-r" / "test" / "1.tar").exists()  # the bad file is not kept


def test_hub_errors_are_one_line(server, tmp_path, monkeypatch, capsys):
    patch_hub(monkeypatch, server, tmp_path / "hf")
    code = main(["download", "vtab/cifar100", "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "clip-benchmark/wds_vtab-cifar100@main" in err[0]
    with pytest.raises(UserError):
        dl.download("imagenet-real", tmp_path)
