"""The store verifies what it reads: every kind of damaged file is caught, moved aside, reported once and
recomputed by the same run, which then gives exactly the clean run's numbers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.engine import infer
from beyond_inet.engine.runner import RunConfig, run
from beyond_inet.engine.store import Entry, Store, StoreDamaged
from beyond_inet.report.results import ResultsDB
from conftest import make_imagenet_folder

SPEC = "timm:convnext_atto@random"


# ---- unit level: the checks themselves, on synthetic shards ----------------------------------------
def _entry(tmp_path: Path, n: int = 10, size: int = 4) -> Entry:
    e = Entry(tmp_path / "e", n, size)
    e.root.mkdir(parents=True, exist_ok=True)
    (e.root / "meta.json").write_text(json.dumps({"n_samples": n, "shard_size": size}))
    rng = np.random.default_rng(0)
    for s in range(e.n_shards):
        r = e.shard_range(s)
        keep = [j for j in r if j != 5]  # position 5 "unreadable"
        e.write_shard(s, np.array(keep), [f"img{j}" for j in keep], np.arange(len(keep)),
                      rng.normal(size=(len(keep), 1000)).astype(np.float32),
                      rng.normal(size=(len(keep), 8)).astype(np.float32), None,
                      [("img5", "OSError: truncated")] if 5 in r else [])
    return e


def test_clean_shards_pass_and_load_in_order(tmp_path):
    e = _entry(tmp_path)
    assert e.verify(move=False) == []
    out = e.load()
    assert out.ids == [f"img{j}" for j in range(10) if j != 5] and out.skipped == ["img5"]
    assert out.logits.shape == (9, 1000) and out.features.shape == (9, 8)


def _flip(buf: bytes, at: int) -> bytes:
    return buf[:at] + bytes([buf[at] ^ 0x40]) + buf[at + 1:]


@pytest.mark.parametrize("checksum", ["xxh3_64", "crc32"])  # new shards, and those of older runs
@pytest.mark.parametrize("damage, reason", [
    (lambda b, other: _flip(b, len(b) - 7), "checksum"),               # a byte in the tensor data
    (lambda b, other: _flip(b, 60), "checksum|bad header"),             # a byte inside the header
    (lambda b, other: other, "expected 4..7"),                          # shard 0 copied over shard 1
    (lambda b, other: b[: len(b) // 2], "truncated|checksum"),          # cut short
    (lambda b, other: b"", "empty"),                                    # zero bytes
    (lambda b, other: b[:8] + b"{not json" + b[17:], "bad header"),     # header garbled, length intact
])
def test_every_kind_of_damage_is_caught(tmp_path, monkeypatch, checksum, damage, reason):
    import re

    from beyond_inet.engine.store import ShardDamage, check_shard_bytes

    monkeypatch.setattr("beyond_inet.engine.store.CHECKSUM", checksum)
    e = _entry(tmp_path)
    assert f'\\"{checksum}\\": \\"'.encode() in e.shard_path(1).read_bytes()
    good0, good1 = e.shard_path(0).read_bytes(), e.shard_path(1).read_bytes()
    bad = damage(good1, good0)
    with pytest.raises(ShardDamage, match=reason):
        check_shard_bytes(bad, e.shard_range(1))
    e.shard_path(1).write_bytes(bad)
    found = e.verify(move=True)
    assert [Path(d.path).name for d in found] == ["shard-00001.safetensors"] and re.search(reason, found[0].reason)
    assert not e.shard_path(1).exists() and Path(found[0].moved_to).read_bytes() == bad  # kept, not deleted
    assert e.missing_shards() == [1]


def test_new_shards_carry_an_xxh3_64_of_the_whole_file(tmp_path):
    """The recorded hash is xxhash's own xxh3_64 of the file with the field's 16 hex digits read as zeros."""
    import re

    import xxhash

    from beyond_inet.engine.store import read_header

    e = _entry(tmp_path)
    buf = e.shard_path(0).read_bytes()
    recorded = read_header(e.shard_path(0))["xxh3_64"]
    assert re.fullmatch("[0-9a-f]{16}", recorded) and "crc32" not in read_header(e.shard_path(0))
    zeroed = buf.replace(recorded.encode(), b"0" * 16, 1)
    assert xxhash.xxh3_64_hexdigest(zeroed) == recorded


@pytest.mark.parametrize("checksum", ["xxh3_64", "crc32"])
def test_crc32_and_xxh3_shards_load_alike(tmp_path, monkeypatch, checksum):
    """A store written with CRC-32 (older runs) verifies and loads to the same outputs as an xxh3 one, and a
    store mixing both (an old store resumed by a new run) loads too."""
    from beyond_inet.engine import store as st

    new = _entry(tmp_path / "new")
    monkeypatch.setattr(st, "CHECKSUM", checksum)
    old = _entry(tmp_path / "old")
    assert old.verify(move=False) == []
    a, b = new.load(), old.load()
    assert a.ids == b.ids and np.array_equal(a.logits, b.logits) and np.array_equal(a.features, b.features)
    old.shard_path(1).write_bytes(new.shard_path(1).read_bytes())  # mixed store
    assert old.verify(move=False) == [] and np.array_equal(old.load().logits, a.logits)


@pytest.mark.parametrize("checksum", ["xxh3_64", "crc32"])
def test_a_flipped_hash_field_name_is_not_taken_for_an_old_unhashed_shard(tmp_path, monkeypatch, checksum):
    """Shards that record their range always carried a hash: one whose hash field name is garbled (the
    header still valid JSON) must not pass as a pre-checksum shard with only its positions checked."""
    from beyond_inet.engine.store import ShardDamage, check_shard_bytes

    monkeypatch.setattr("beyond_inet.engine.store.CHECKSUM", checksum)
    e = _entry(tmp_path)
    buf = e.shard_path(1).read_bytes()
    at = buf.index(f'\\"{checksum}\\"'.encode()) + 2  # the field name's first letter
    with pytest.raises(ShardDamage, match="checksum missing"):
        check_shard_bytes(_flip(buf, at), e.shard_range(1))


def test_old_shards_without_checksum_still_load(tmp_path):
    """Shards written before checksums (same key, same engine version) are read, positions still checked."""
    from safetensors.numpy import save

    from beyond_inet.engine.store import ShardDamage, check_shard_bytes

    e = Entry(tmp_path / "e", 4, 4)
    e.root.mkdir()
    (e.root / "meta.json").write_text(json.dumps({"n_samples": 4, "shard_size": 4}))
    t = {"positions": np.arange(4), "labels": np.zeros(4, np.int64), "logits": np.zeros((4, 1000), np.float32),
         "features": np.zeros((4, 3), np.float32)}
    e.shard_path(0).write_bytes(save(t, metadata={"samples": json.dumps({"ids": list("abcd"), "skipped": []})}))
    assert e.verify(move=False) == [] and e.load().ids == list("abcd")
    with pytest.raises(ShardDamage, match="positions outside"):
        check_shard_bytes(e.shard_path(0).read_bytes(), range(4, 8))


def test_corrupt_meta_json_is_moved_aside_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 4)
    e = _entry(tmp_path)
    (e.root / "meta.json").write_text("{not json")
    store = Store(tmp_path)
    with pytest.raises(StoreDamaged, match="corrupt meta.json: not JSON"):  # a load recomputes the entry
        store.existing("e")
    assert (e.root / "meta.json.corrupt-1").read_text() == "{not json"
    again = store.entry("e", 10)
    assert again.missing_shards() == [0, 1, 2]  # no meta: the entry gets a job, which rewrites meta.json
    store.entry("e", 10, {"model": "m"})
    assert json.loads((e.root / "meta.json").read_text())["n_samples"] == 10 and again.missing_shards() == []


# ---- end to end: the run recomputes what was damaged, and gives the clean numbers --------------------
@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean run (3 shards of 5, 4, ... images) to damage copies of."""
    base = tmp_path_factory.mktemp("clean")
    data = make_imagenet_folder(base / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
        run(_cfg(data, base / "out"))
    return data, base / "out"


def _cfg(data, out):
    return RunConfig(models=[SPEC], analyses=["accuracy"], out=str(out), data_root=str(data), num_workers=0,
                     batch_size=4, n_boot=50, progress=False, report=False,
                     options={"accuracy_datasets": ["imagenet-val"]})


def _metrics(out: Path) -> dict:
    db = ResultsDB(out)
    try:
        return {(r.analysis, r.model, r.dataset, r.metric): (r.value, r.n) for r in db.rows()}
    finally:
        db.close()


def _boost_true_class(p: Path) -> None:
    """Overwrite one byte: the top byte of the first sample's logit for its true class becomes 0x7e, a huge
    positive float, so that sample turns correct (what today's store would silently count)."""
    buf = bytearray(p.read_bytes())
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    if "codecs" in json.loads(header["__metadata__"]["samples"]):  # stored compressed: flip a byte inside
        a, b = header["logits" if "logits" in header else "positions"]["data_offsets"]
        buf[8 + n + (a + b) // 2] ^= 0x7E
        p.write_bytes(bytes(buf))
        return
    lab_at = 8 + n + header["labels"]["data_offsets"][0]
    label = int.from_bytes(buf[lab_at:lab_at + 8], "little")
    at = 8 + n + header["logits"]["data_offsets"][0] + 4 * label + 3
    assert buf[at] != 0x7E
    buf[at] = 0x7E
    p.write_bytes(bytes(buf))


DAMAGES = {
    "flipped-bytes": lambda shard, other: _boost_true_class(shard),
    "copied-over": lambda shard, other: shutil.copyfile(other, shard),
    "truncated": lambda shard, other: shard.write_bytes(shard.read_bytes()[:1000]),
    "empty": lambda shard, other: shard.write_bytes(b""),
    "bad-header": lambda shard, other: shard.write_bytes(b"\xff" * 8 + shard.read_bytes()[8:]),
}


@pytest.mark.parametrize("kind", [*DAMAGES, "corrupt-meta"])
def test_damaged_store_is_recomputed_by_the_same_run(clean, tmp_path, kind, capfd, monkeypatch):
    data, ref = clean
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    (entry_dir,) = [p for p in (out / "store").iterdir() if p.is_dir()]
    shard1, shard0 = entry_dir / "shard-00001.safetensors", entry_dir / "shard-00000.safetensors"
    if kind == "corrupt-meta":
        (entry_dir / "meta.json").write_text('{"n_samples": 12, "shard_')
        damaged = entry_dir / "meta.json"
    else:
        DAMAGES[kind](shard1, shard0)
        damaged = shard1
    capfd.readouterr()
    before = infer.FORWARD_CALLS["n"]
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    run(_cfg(data, out))
    calls = infer.FORWARD_CALLS["n"] - before
    assert _metrics(out) == _metrics(ref)  # the damaged bytes never reached a metric
    assert damaged.with_name(damaged.name + ".corrupt-1").exists()  # moved aside, not deleted
    assert sorted(p.name for p in entry_dir.glob("shard-*.safetensors")) == [f"shard-0000{i}.safetensors"
                                                                             for i in range(3)]
    assert (shard1.read_bytes() == (ref / "store" / entry_dir.name / shard1.name).read_bytes())
    # Only the damaged shard was recomputed (5 images, batch 4: 2 forward calls); a bad meta.json costs none.
    assert calls == (0 if kind == "corrupt-meta" else 2)
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("beyond-inet: warning:")]
    assert len(warnings) == 1 and damaged.name in warnings[0]
    db = ResultsDB(out)
    assert [Path(d["path"]).name for d in db.damage()] == [damaged.name]
    db.close()


# ---- one pass: the load hashes what it reads, and the run recomputes what the load finds damaged ------
def test_load_reads_each_byte_once_and_hashes_it(tmp_path, monkeypatch):
    """The hash is fed exactly the bytes of each file, once, during the load's own read: verifying is not
    a second pass over the data."""
    from beyond_inet.engine import store as st

    e = _entry(tmp_path)
    fed, opened = [0], [0]
    real_update, real_open = st._Hasher.update, st.open_file

    def update(self, piece):
        fed[0] += len(memoryview(piece).cast("B"))
        real_update(self, piece)

    def open_shard(path):
        opened[0] += 1
        return real_open(path)

    monkeypatch.setattr(st._Hasher, "update", update)
    e.load(verify=False)
    assert fed[0] == 0
    monkeypatch.setattr(st, "open_file", open_shard)
    e.load()
    total = sum(e.shard_path(s).stat().st_size for s in range(e.n_shards))
    assert fed[0] == total  # every byte of every file, each once
    assert opened[0] == 2 * e.n_shards  # a header pass, then one data pass per shard


def test_load_finds_every_damaged_shard_moves_them_aside_and_says_which(tmp_path):
    from beyond_inet.engine.store import StoreDamaged

    e = _entry(tmp_path)
    for s in (0, 2):
        p = e.shard_path(s)
        p.write_bytes(_flip(p.read_bytes(), p.stat().st_size - 3))  # a data byte: only the hash sees it
    assert e.missing_shards() == []
    with pytest.raises(StoreDamaged, match="shard-00000.safetensors is damaged \\(checksum mismatch.*1 more") as ex:
        e.load()
    assert [Path(d.path).name for d in ex.value.damages] == ["shard-00000.safetensors", "shard-00002.safetensors"]
    assert e.missing_shards() == [0, 2] and all(Path(d.moved_to).exists() for d in ex.value.damages)


def test_load_assembles_gaps_multilabels_and_empty_shards_like_concatenation(tmp_path):
    """Unreadable samples (rows absent), a shard with no readable sample at all, and multi-label rows of
    different widths per shard: the one-copy load equals concatenating each shard's own tensors."""
    e = Entry(tmp_path / "e", 10, 4)
    e.root.mkdir()
    (e.root / "meta.json").write_text(json.dumps({"n_samples": 10, "shard_size": 4}))
    rng = np.random.default_rng(1)
    keep = {0: [0, 2, 3], 1: [], 2: [8, 9]}  # shard 1: every image unreadable
    for s, pos in keep.items():
        r = e.shard_range(s)
        width = 1 + s  # multilabels 1, 2, 3 wide
        e.write_shard(s, np.array(pos, np.int64), [f"i{j}" for j in pos], np.array(pos, np.int64),
                      rng.normal(size=(len(pos), 1000)).astype(np.float32),
                      rng.normal(size=(len(pos), 5)).astype(np.float32),
                      rng.integers(0, 1000, (len(pos), width)),
                      [(f"i{j}", "OSError") for j in r if j not in pos])
    out = e.load()
    parts = [e.read_shard(s)[0] for s in range(3)]
    assert out.ids == ["i0", "i2", "i3", "i8", "i9"] and out.skipped == ["i1", "i4", "i5", "i6", "i7"]
    assert np.array_equal(out.labels, [0, 2, 3, 8, 9])
    assert np.array_equal(out.logits, np.concatenate([p["logits"].reshape(-1, 1000) for p in parts]))
    assert np.array_equal(out.features, np.concatenate([p["features"].reshape(-1, 5) for p in parts]))
    assert out.multilabels.shape == (5, 3)
    assert np.array_equal(out.multilabels[:3, :1], parts[0]["multilabels"]) and (out.multilabels[:3, 1:] == -1).all()
    assert np.array_equal(out.multilabels[3:], parts[2]["multilabels"])


def test_a_shard_damaged_twice_is_one_line_not_a_loop(tmp_path, monkeypatch):
    """A load that finds damage again right after the recompute (a failing disk) stops with one line."""
    from beyond_inet.engine.store import StoreDamaged
    from beyond_inet.pipeline import load_outputs

    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 4)  # as _entry's meta.json says
    e = _entry(tmp_path)
    calls = []

    def damage_shard_1():
        p = e.shard_path(1)
        p.write_bytes(_flip(p.read_bytes(), p.stat().st_size - 3))

    def recompute(err):  # "recomputes" by writing a good shard that is damaged again at once
        calls.append([Path(d.path).name for d in err.damages])
        _entry(tmp_path)
        damage_shard_1()

    damage_shard_1()
    with pytest.raises(StoreDamaged, match="damaged again right after it was recomputed") as ex:
        load_outputs(Store(tmp_path), "e", recompute)
    assert calls == [["shard-00001.safetensors"]] and "\n" not in str(ex.value)


def test_damage_found_after_the_model_left_memory_is_recomputed_with_a_rebuilt_model(clean, tmp_path, capfd,
                                                                                      monkeypatch):
    """Cross-model analyses (here the paired tests of two models) read the store after every model ran and
    was dropped: a shard damaged by then is found by the load's hash, and the model is built again to
    recompute it. The numbers equal those of an undamaged run."""
    from beyond_inet import pipeline

    data, _ = clean
    two = dict(models=[SPEC, "timm:resnet10t@random"], analyses=["accuracy"], data_root=str(data), num_workers=0,
               batch_size=4, n_boot=50, progress=False, report=False,
               options={"accuracy_datasets": ["imagenet-val"]})
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)
    ref = tmp_path / "ref"
    run(RunConfig(out=str(ref), **two))
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    real = pipeline._run_cross_model
    damaged = []

    def damage_then_compare(ctx, analyses, model_keys, store, *a, **k):
        key = model_keys[SPEC][("imagenet-val", "standard")][0]
        shard = store.root / key / "shard-00001.safetensors"
        _boost_true_class(shard)
        damaged.append(shard)
        return real(ctx, analyses, model_keys, store, *a, **k)

    monkeypatch.setattr(pipeline, "_run_cross_model", damage_then_compare)
    capfd.readouterr()
    before = infer.FORWARD_CALLS["n"]
    run(RunConfig(out=str(out), **two))
    assert infer.FORWARD_CALLS["n"] - before == 2  # the 5 images of the damaged shard, batch 4, once
    assert _metrics(out) == _metrics(ref)
    (shard,) = damaged
    assert shard.with_name(shard.name + ".corrupt-1").exists()
    assert shard.read_bytes() == (ref / "store" / shard.parent.name / shard.name).read_bytes()
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("beyond-inet: warning:")]
    assert len(warnings) == 1 and "shard-00001.safetensors (checksum mismatch" in warnings[0]
