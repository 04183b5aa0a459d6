"""Store and results-database failures end in one line on stderr and exit 2, losing nothing; unreadable
images are listed on every run, cached or not; `beyond-inet verify` checks a store without a model."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from beyond_inet import cli
from beyond_inet.engine import infer
from beyond_inet.report.results import ResultsDB

SPEC = "timm:convnext_atto@random"


def _run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--models", SPEC, "--analyses", "accuracy", "--data-root", str(data), "--out", str(out),
            "--device", "cpu", "--batch-size", "4", "--workers", "0", "--bootstrap", "20", "--no-progress",
            "--option", "accuracy_datasets=imagenet-val", *extra]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("beyond-inet: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished run on the 12-image set, with one unreadable image (copied by the tests that change it)."""
    from conftest import make_imagenet_folder

    base = tmp_path_factory.mktemp("done")
    data = make_imagenet_folder(base / "data")
    (data / "imagenet-val" / "n07920052" / "ILSVRC2012_val_00099999.JPEG").write_bytes(b"not a jpeg at all")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
        assert cli.main(_run_args(data, base / "out", "--no-report")) == 0
    return data, base / "out"


@pytest.mark.parametrize("command", ["run", "report"])
def test_corrupt_results_database_is_one_line_and_kept(done, tmp_path, capfd, command):
    data, ref = done
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    garbage = b"SQLite format 3\x00" + os.urandom(3000)
    (out / "results.sqlite").write_bytes(garbage)
    shards = {p: p.read_bytes() for p in (out / "store").rglob("shard-*")}
    capfd.readouterr()
    argv = _run_args(data, out) if command == "run" else ["report", str(out)]
    assert cli.main(argv) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert "results.sqlite" in line and "damaged" in line
    assert (out / "results.sqlite").read_bytes() == garbage  # nothing deleted
    assert {p: p.read_bytes() for p in (out / "store").rglob("shard-*")} == shards


def _fsync_failing(monkeypatch, err: int, after: int = 0):
    """os.fsync raises `err` from the (after+1)-th call on: the store's writes fail like a full/read-only disk."""
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_says_where_and_how_much_and_keeps_what_was_stored(done, tmp_path, capfd, monkeypatch):
    data, ref = done
    out = tmp_path / "out"
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    _fsync_failing(monkeypatch, errno.ENOSPC, after=2)  # meta.json and shard 0 get written, shard 1 does not
    assert cli.main(_run_args(data, out, "--no-report")) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert "no space left" in line and "shard-00001.safetensors" in line and "needed" in line
    (entry_dir,) = [p for p in (out / "store").iterdir() if p.is_dir()]
    assert sorted(p.name for p in entry_dir.iterdir()) == ["meta.json", "shard-00000.safetensors"]  # no .tmp
    kept = (entry_dir / "shard-00000.safetensors").stat().st_mtime_ns
    monkeypatch.undo()
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    before = infer.FORWARD_CALLS["n"]
    assert cli.main(_run_args(data, out, "--no-report")) == 0
    # Only shards 1 and 2 were computed: 5 images (batch 4: 2 calls) and 2 readable of 3 (1 call).
    assert infer.FORWARD_CALLS["n"] - before == 3
    assert (entry_dir / "shard-00000.safetensors").stat().st_mtime_ns == kept
    assert (out / "results.csv").read_text() == (ref / "results.csv").read_text()


def test_read_only_store_names_the_path(done, tmp_path, capfd, monkeypatch):
    data, _ = done
    _fsync_failing(monkeypatch, errno.EROFS)
    assert cli.main(_run_args(data, tmp_path / "out", "--no-report")) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert "read-only" in line and str(tmp_path / "out" / "store") in line


def test_unreadable_images_are_listed_on_first_and_cached_runs(done, tmp_path, capfd, monkeypatch):
    data, ref = done
    out = tmp_path / "out"
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    for attempt in ("first", "cached"):
        before = infer.FORWARD_CALLS["n"]
        capfd.readouterr()
        assert cli.main(_run_args(data, out)) == 0
        stdout = capfd.readouterr().out
        assert (infer.FORWARD_CALLS["n"] > before) == (attempt == "first")
        assert "unreadable images skipped: imagenet-val 1" in " ".join(stdout.split()), (attempt, stdout)
        db = ResultsDB(out)
        assert [(u["dataset"], u["file"]) for u in db.unreadable()] == [("imagenet-val",
                                                                          "ILSVRC2012_val_00099999.JPEG")]
        db.close()
        html = (out / "report.html").read_text()
        assert "ILSVRC2012_val_00099999.JPEG" in html and "Unreadable images" in html
        (out / "report.html").unlink()


def test_verify_checks_a_store_without_building_a_model(done, tmp_path, capfd, monkeypatch):
    _, ref = done
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    monkeypatch.setattr("beyond_inet.models.create_model", lambda *a, **k: pytest.fail("verify built a model"))
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)  # as the `done` run wrote it
    capfd.readouterr()
    assert cli.main(["verify", str(out)]) == 0
    assert "3 shards" in capfd.readouterr().out
    (entry_dir,) = [p for p in (out / "store").iterdir() if p.is_dir()]
    b = bytearray((entry_dir / "shard-00002.safetensors").read_bytes())
    b[-3] ^= 1
    (entry_dir / "shard-00002.safetensors").write_bytes(bytes(b))
    assert cli.main(["verify", str(out)]) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert "1 damaged file" in line and "shard-00002.safetensors (checksum mismatch" in line
    assert (entry_dir / "shard-00002.safetensors").exists()  # verify moves nothing
    with sqlite3.connect(out / "results.sqlite") as con:  # a sound database is not reported
        assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    (out / "results.sqlite").write_bytes(b"garbage" * 100)
    assert cli.main(["verify", str(out)]) == 2
    assert "2 damaged file" in _one_error_line(capfd.readouterr().err)


def test_damaged_shard_is_named_in_the_report(done, tmp_path, capfd, monkeypatch):
    data, ref = done
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    (entry_dir,) = [p for p in (out / "store").iterdir() if p.is_dir()]
    (entry_dir / "shard-00001.safetensors").write_bytes(b"")
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    capfd.readouterr()
    assert cli.main(_run_args(data, out)) == 0
    err = capfd.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("beyond-inet: warning:")][0].count("shard-00001") == 1
    html = (out / "report.html").read_text()
    assert "shard-00001.safetensors.corrupt-1" in html and "empty file" in html
    assert "shard-00001.safetensors.corrupt-1" in (out / "report.md").read_text()
