"""The store reuses only what belongs to these images: a shard from another store, an image replaced in
place, a bad meta.json, an extra or foreign-width shard are each damage, found by one check that `run` and
`beyond-inet verify` share. For each case `run` moves the file aside once (one `.corrupt` copy), warns once,
recomputes what it must in the same run and then holds exactly what a fresh store holds; a second run
recomputes nothing; `verify` names the same file with the same reason before, and passes after."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from beyond_inet import cli
from beyond_inet.engine import infer
from beyond_inet.pipeline import RunConfig, run
from beyond_inet.report.results import ResultsDB
from conftest import make_imagenet_folder

SPEC = "packaged:efficientnet_lite0"  # real weights: images of other classes change top-1
OTHER = "timm:resnet10t@random"  # another model (other feature width) over the same images


def _cfg(data: Path, out: Path, models=(SPEC,)) -> RunConfig:
    return RunConfig(models=list(models), analyses=["accuracy"], out=str(out), data_root=str(data), num_workers=0,
                     batch_size=4, n_boot=50, progress=False, report=False,
                     options={"accuracy_datasets": ["imagenet-val"]})


def _swap_classes(data: Path) -> None:
    """Same file names (so the same sample ids, labels and store key), other pictures: each class folder's
    images get the bytes of the next class's images."""
    folders = sorted(p for p in (data / "imagenet-val").iterdir() if p.is_dir())
    before = {d: [f.read_bytes() for f in sorted(d.iterdir())] for d in folders}
    for d, src in zip(folders, folders[1:] + folders[:1]):
        for f, b in zip(sorted(d.iterdir()), before[src]):
            f.write_bytes(b)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A clean run (12 images, shards of 5: 3 shards), and a run of the same model over other pictures with
    the same file names, plus another model's run on the clean images."""
    base = tmp_path_factory.mktemp("belongs")
    data = make_imagenet_folder(base / "data")
    other = base / "other-data"
    shutil.copytree(data, other)
    _swap_classes(other)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
        run(_cfg(data, base / "ref"))
        run(_cfg(other, base / "other"))
        run(_cfg(data, base / "other-model", [OTHER]))
    return data, base


def _entry_dir(out: Path, model: str = SPEC) -> Path:
    db = ResultsDB(out)
    try:
        key = db.output_keys()[(model, "imagenet-val", "standard")]
    finally:
        db.close()
    return out / "store" / key


def _metrics(out: Path) -> dict:
    db = ResultsDB(out)
    try:
        return {(r.analysis, r.model, r.dataset, r.metric): (r.value, r.ci_low, r.ci_high, r.n) for r in db.rows()}
    finally:
        db.close()


def _foreign_width(entry: Path, base: Path) -> None:
    """Shard 1 rewritten with one logits column more, everything else (range, entry, images) right (the
    entry keeps no features: the run's analyses read none)."""
    from beyond_inet.engine.store import Entry, shard_kinds

    t, meta = Entry(entry, 12, 5).read_shard(1)
    e = Entry(entry, 12, 5, kinds=shard_kinds(meta))
    logits = np.concatenate([t["logits"], np.zeros((len(t["logits"]), 1), np.float32)], 1)
    e.write_shard(1, t["positions"], meta["ids"], t["labels"], logits, t.get("features"), None,
                  [tuple(x) for x in meta["skipped"]], meta["skipped_positions"],
                  **({"images": meta["images"]} if "images" in meta else {}))


def _meta(change):
    def damage(entry: Path, base: Path) -> None:
        p = entry / "meta.json"
        m = json.loads(p.read_text())
        p.write_text(change(m) if callable(change) else change)
    return damage


def _set(k, v):
    return lambda m: json.dumps({**m, k: v})


def _drop(k):
    return lambda m: json.dumps({a: b for a, b in m.items() if a != k})


SHARD_1 = "shard-00001.safetensors"
# case -> (damage(entry dir, base), damaged file, forward calls of the recompute (5 images, batch 4: 2))
CASES = {
    "foreign-shard": (lambda e, b: shutil.copyfile(_entry_dir(b / "other") / SHARD_1, e / SHARD_1), SHARD_1, 2),
    "other-model-shard": (lambda e, b: shutil.copyfile(_entry_dir(b / "other-model", OTHER) / SHARD_1, e / SHARD_1),
                          SHARD_1, 2),
    "foreign-width": (_foreign_width, SHARD_1, 2),
    "extra-shard": (lambda e, b: shutil.copyfile(e / "shard-00000.safetensors", e / "shard-00007.safetensors"),
                    "shard-00007.safetensors", 0),
    "meta-wrong-n": (_meta(_set("n_samples", 13)), "meta.json", 0),
    "meta-shard-size-0": (_meta(_set("shard_size", 0)), "meta.json", 0),
    "meta-shard-size-str": (_meta(_set("shard_size", "512")), "meta.json", 0),
    "meta-no-n": (_meta(_drop("n_samples")), "meta.json", 0),
    "meta-no-dataset": (_meta(_drop("dataset")), "meta.json", 0),
    "meta-no-format": (_meta(_drop("format")), "meta.json", 0),
    "meta-not-json": (_meta('{"n_samples": 12, "shard_'), "meta.json", 0),
    "meta-list": (_meta("[12, 5]"), "meta.json", 0),
}


def _verify(out: Path, data: Path, capfd) -> tuple[int, str]:
    capfd.readouterr()
    rc = cli.main(["verify", str(out), "--data-root", str(data)])
    cap = capfd.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.err + cap.out


def _warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("beyond-inet: warning:")]


def _run_and_check(data: Path, out: Path, ref: Path, entry: Path, damaged: str, calls: int, capfd) -> None:
    """verify names the damage; run moves it aside once, recomputes `calls` forward calls' worth and ends
    with the fresh store's shards and numbers; verify then passes and a rerun changes nothing."""
    rc, before = _verify(out, data, capfd)
    assert rc == 2 and damaged in before
    n0 = infer.FORWARD_CALLS["n"]
    run(_cfg(data, out))
    assert infer.FORWARD_CALLS["n"] - n0 == calls
    warnings = _warnings(capfd.readouterr().err)
    assert len(warnings) == 1 and damaged in warnings[0]
    db = ResultsDB(out)
    found = db.damage()
    db.close()
    assert [Path(d["path"]).name for d in found] == [damaged]
    # verify gave the same verdict: the same file with the same reason
    assert f"{found[0]['path']} ({found[0]['reason']})" in before, (before, found)
    assert [p.name for p in entry.glob("*.corrupt*")] == [damaged + ".corrupt-1"]
    assert _metrics(out) == _metrics(ref)
    fresh = _entry_dir(ref)
    assert sorted(p.name for p in entry.glob("shard-*.safetensors")) == sorted(p.name for p in fresh.glob("shard-*"))
    for p in fresh.glob("shard-*.safetensors"):
        assert (entry / p.name).read_bytes() == p.read_bytes(), p.name
    assert json.loads((entry / "meta.json").read_text()) == json.loads((fresh / "meta.json").read_text())
    rc, after = _verify(out, data, capfd)
    assert rc == 0, after
    n1 = infer.FORWARD_CALLS["n"]
    run(_cfg(data, out))  # recomputed once: the rerun finds nothing, computes nothing
    assert infer.FORWARD_CALLS["n"] == n1 and not _warnings(capfd.readouterr().err)
    assert len(list(entry.glob("*.corrupt*"))) == 1


@pytest.mark.parametrize("case", list(CASES))
def test_what_does_not_belong_is_recomputed_once_and_verify_agrees(stores, tmp_path, case, capfd, monkeypatch):
    data, base = stores
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    out = tmp_path / "out"
    shutil.copytree(base / "ref", out)
    entry = _entry_dir(out)
    damage, damaged, calls = CASES[case]
    damage(entry, base)
    _run_and_check(data, out, base / "ref", entry, damaged, calls, capfd)


def test_an_image_replaced_in_place_is_noticed(stores, tmp_path, capfd, monkeypatch):
    """Same file name, other picture: the shard holding it is recomputed, and the run then equals a fresh
    run over the changed images (numbers and shard bytes)."""
    data0, base = stores
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    data = tmp_path / "data"
    shutil.copytree(data0, data)  # copy2: modification times kept, so the stored shards still match
    out = tmp_path / "out"
    shutil.copytree(base / "ref", out)
    assert _verify(out, data, capfd)[0] == 0
    files = sorted((data / "imagenet-val").rglob("*.JPEG"))
    assert files[9].parent.name == "n07920052"  # position 9 (shard 1): an espresso
    files[9].write_bytes(files[3].read_bytes())  # now a missile
    fresh = tmp_path / "fresh"
    run(_cfg(data, fresh))
    assert _metrics(fresh) != _metrics(base / "ref")  # the replaced image changes top-1
    capfd.readouterr()
    _run_and_check(data, out, fresh, _entry_dir(out), SHARD_1, 2, capfd)


def test_a_damaged_results_database_gets_the_same_words_from_run_and_verify(stores, tmp_path, capfd):
    data, base = stores
    out = tmp_path / "out"
    shutil.copytree(base / "ref", out)
    (out / "results.sqlite").write_bytes(b"garbage" * 100)
    capfd.readouterr()
    assert cli.main(["run", "--models", SPEC, "--analyses", "accuracy", "--data-root", str(data), "--out", str(out),
                     "--device", "cpu", "--workers", "0", "--no-report", "--no-progress",
                     "--option", "accuracy_datasets=imagenet-val"]) == 2
    run_err = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("beyond-inet: error:")]
    assert len(run_err) == 1 and "results.sqlite" in run_err[0]
    rc, err = _verify(out, data, capfd)
    assert rc == 2
    assert run_err[0].removeprefix("beyond-inet: error: ") in err


def test_stat_per_image_is_cheap(shared_data):
    """Checking images costs one stat per file: bounded here at 1000 real files (measured: docs/store.md)."""
    import time

    from beyond_inet.engine.store import image_identities

    folder = shared_data / "imagenet-sample-images"
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[:1000]
    if len(files) < 1000:
        pytest.skip("imagenet-sample-images has fewer than 1000 images")

    class Files:
        def sample_id(self, i):
            return os.path.basename(files[i])

        def source(self, i):
            return files[i]

    t0 = time.perf_counter()
    got = image_identities(Files(), np.arange(1000), range(1000))
    dt = time.perf_counter() - t0
    st = os.stat(files[3])
    assert got[3] == [os.path.basename(files[3]), st.st_size, st.st_mtime_ns]
    assert dt < 1.0  # a few ms when cached; generous for a loaded CI machine


def test_entries_of_the_older_format_are_never_read_and_verify_says_so(stores, tmp_path, capfd, monkeypatch):
    """A format-1 entry (no `format` in meta.json, shards without entry key or images) is not damage: no
    run's key points to it any more. verify counts it and exits 0."""
    data, base = stores
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    out = tmp_path / "out"
    shutil.copytree(base / "ref", out)
    old = out / "store" / "0123456789abcdef0123"
    old.mkdir()
    m = json.loads((_entry_dir(out) / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({k: v for k, v in m.items() if k != "format"}))
    from beyond_inet.engine.store import Entry, shard_bytes

    e = Entry(old, 12, 5)
    for s in range(3):  # as format 1 wrote them: no entry key, no images
        t, meta = Entry(_entry_dir(out), 12, 5).read_shard(s)
        meta = {k: v for k, v in meta.items() if k not in ("entry", "images", "xxh3_64", "codecs")}
        e.shard_path(s).write_bytes(shard_bytes(t, meta))
    rc, said = _verify(out, data, capfd)
    assert rc == 0 and "1 entries of an older store format" in said, said
