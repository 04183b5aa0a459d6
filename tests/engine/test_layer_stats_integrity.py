"""Layer statistics (CKA's store) verify what they read, as the output store does: a damaged chunk or
meta.json is moved aside and recomputed by the next pass (only that chunk), damage found while CKA reads
is one line, and `beyond-inet verify` checks them too."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from beyond_inet.engine import layer_stats as ls
from beyond_inet.engine.layer_stats import LayerStats, StatsConfig, compute_layer_stats
from beyond_inet.engine.store import StoreDamaged

CFG = StatsConfig(n_images=12, batch_size=4, types=("block",), reduce="mean")


@pytest.fixture
def stored(tiny_imagenet, tmp_path, monkeypatch):
    from beyond_inet.engine.plan import DatasetCache
    from beyond_inet.models import create_model

    monkeypatch.setattr(ls, "SHARD_SIZE", 4)  # one batch per chunk: 3 chunks
    model = create_model("timm:test_vit@random")
    ds, pos, fp = DatasetCache(str(tiny_imagenet), None).get("imagenet-val")

    def again(damaged=None):
        return compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path / "layer-stats", CFG,
                                   damaged=damaged)

    stats = again()
    good = {c: stats.chunk_path(c).read_bytes() for c in range(stats.n_chunks)}
    return stats, good, again, model


def _flip_last(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-5] ^= 0x20  # a byte of the last Gram matrix: only the hash can see it
    p.write_bytes(bytes(b))


DAMAGES = {
    "flipped-bytes": lambda st: _flip_last(st.chunk_path(1)),
    "copied-over": lambda st: shutil.copyfile(st.chunk_path(0), st.chunk_path(1)),
    "truncated": lambda st: st.chunk_path(1).write_bytes(st.chunk_path(1).read_bytes()[:300]),
    "empty": lambda st: st.chunk_path(1).write_bytes(b""),
}


def test_chunks_carry_a_hash_and_their_index(stored):
    from beyond_inet.engine.store import open_file, read_safetensors_head

    stats, _, _, _ = stored
    f, size = open_file(stats.chunk_path(2))
    with f:
        head = read_safetensors_head(f, size, "batches")
    assert [name for name, _ in head.hashes] == ["xxh3_64"] and head.meta["chunk"] == 2


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_chunk_is_moved_aside_and_only_it_recomputed(stored, kind):
    stats, good, again, model = stored
    DAMAGES[kind](stats)
    ls.FORWARD_CALLS.clear()
    found = []
    redone = again(found)
    assert ls.FORWARD_CALLS.get(model.spec, 0) == 1  # chunk 1's one batch, nothing else
    assert [Path(d.path).name for d in found] == ["chunk-00001.safetensors"]
    assert Path(found[0].moved_to).exists()
    assert {c: redone.chunk_path(c).read_bytes() for c in range(3)} == good
    assert len(list(redone.batches())) == 3


def test_a_corrupt_meta_json_is_moved_aside_and_the_statistics_recomputed(stored):
    stats, good, again, model = stored
    (stats.root / "meta.json").write_text('{"n_chunks": 3, "lay')
    ls.FORWARD_CALLS.clear()
    found = []
    redone = again(found)
    assert [Path(d.path).name for d in found] == ["meta.json"] and ls.FORWARD_CALLS[model.spec] == 3
    assert {c: redone.chunk_path(c).read_bytes() for c in range(3)} == good
    assert json.loads((stats.root / "meta.json").read_text())["n_chunks"] == 3


def test_damage_found_while_cka_reads_is_one_line_and_the_next_pass_recomputes(stored):
    stats, good, again, model = stored
    _flip_last(stats.chunk_path(2))
    with pytest.raises(StoreDamaged, match="chunk-00002.safetensors are damaged \\(checksum mismatch") as e:
        list(LayerStats.open(stats.root).batches())
    assert "\n" not in str(e.value) and not stats.chunk_path(2).exists()
    ls.FORWARD_CALLS.clear()
    redone = again()
    assert ls.FORWARD_CALLS[model.spec] == 1 and redone.chunk_path(2).read_bytes() == good[2]


def test_verify_command_checks_layer_statistics(stored, capsys):
    from beyond_inet.cli import main

    stats, _, _, _ = stored
    out = stats.root.parent.parent
    assert main(["verify", str(out)]) == 0
    assert "1 layer-statistics folders, 3 chunks" in capsys.readouterr().out
    _flip_last(stats.chunk_path(0))
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert "chunk-00000.safetensors (checksum mismatch" in err and len(err.strip().splitlines()) == 1
    assert stats.chunk_path(0).exists()  # verify moves nothing


def _edit_meta(stats, change) -> None:
    mp = stats.root / "meta.json"
    meta = json.loads(mp.read_text())
    change(meta)
    mp.write_text(json.dumps(meta))


def _cut_layers(m):
    m["layers"], m["types"] = m["layers"][:-1], m["types"][:-1]


META_DAMAGES = {  # each one a meta.json that parses but is not what the pass wrote
    "layer-list-cut": _cut_layers,
    "layers-renamed": lambda m: m.__setitem__("layers", [f"x.{n}" for n in m["layers"]]),
    "layers-not-a-list": lambda m: m.__setitem__("layers", "blocks.0"),
    "types-length": lambda m: m.__setitem__("types", m["types"][:-1]),
    "unknown-type": lambda m: m.__setitem__("types", ["conv"] * len(m["types"])),
    "n_images-string": lambda m: m.__setitem__("n_images", "12"),
    "n_batches-range": lambda m: m.__setitem__("n_batches", 99),
    "n_chunks-zero": lambda m: m.__setitem__("n_chunks", 0),
    "batch-size-changed": lambda m: m["config"].__setitem__("batch_size", 6),
    "seed-missing": lambda m: m["config"].pop("shuffle_seed"),
    "not-an-object": lambda m: (m.clear(), m.__setitem__("n_chunks", 3)),
}


@pytest.mark.parametrize("kind", list(META_DAMAGES))
def test_a_meta_json_off_its_schema_is_damage_recomputed_once(stored, kind, caplog):
    stats, good, again, model = stored
    _edit_meta(stats, META_DAMAGES[kind])
    ls.FORWARD_CALLS.clear()
    found = []
    with caplog.at_level("WARNING", logger="beyond_inet"):
        redone = again(found)  # the old code: RuntimeError (cut layer list) or chunks moved aside one by one
    assert [Path(d.path).name for d in found] == ["meta.json"], found
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert {c: redone.chunk_path(c).read_bytes() for c in range(3)} == good and redone.complete()
    assert LayerStats.open(stats.root) is not None and ls.FORWARD_CALLS[model.spec] == 3
    ls.FORWARD_CALLS.clear()
    found = []
    again(found)  # the next rerun finds everything sound
    assert found == [] and ls.FORWARD_CALLS.get(model.spec, 0) == 0


def test_a_cut_layer_list_without_stored_chunks_is_recomputed_not_an_error(stored):
    stats, good, again, model = stored
    _edit_meta(stats, _cut_layers)
    for c in range(3):
        stats.chunk_path(c).unlink()  # nothing to compare the layer list with: the model's first batch is
    found = []
    redone = again(found)  # the old code: RuntimeError("layers ran in a different order ...") on every rerun
    assert [Path(d.path).name for d in found] == ["meta.json"] and "layer list" in found[0].reason
    assert {c: redone.chunk_path(c).read_bytes() for c in range(3)} == good
    assert again().layers == redone.layers


def test_repeated_damage_keeps_one_corrupt_copy_per_file(stored):
    stats, good, again, _ = stored
    for _ in range(3):
        (stats.root / "meta.json").write_text("{")
        again()
        _flip_last(stats.chunk_path(1))
        again()
        _flip_last(stats.chunk_path(2))
        with pytest.raises(StoreDamaged):
            list(LayerStats.open(stats.root).batches())
        again()
    names = sorted(p.name for p in stats.root.iterdir())
    assert [n for n in names if "corrupt" in n] == ["chunk-00001.safetensors.corrupt",
                                                   "chunk-00002.safetensors.corrupt", "meta.json.corrupt"]
    assert {c: stats.chunk_path(c).read_bytes() for c in range(3)} == good


@pytest.mark.parametrize("kind", list(META_DAMAGES))
def test_verify_and_run_agree_on_a_meta_json_off_its_schema(stored, kind, capsys):
    """`beyond-inet verify` applies the run's own meta.json checks: every case a run treats as damage, verify
    reports (exit 2, naming meta.json) and moves nothing."""
    from beyond_inet.cli import main

    stats, _, _, _ = stored
    _edit_meta(stats, META_DAMAGES[kind])
    before = (stats.root / "meta.json").read_bytes()
    assert main(["verify", str(stats.root.parent.parent)]) == 2
    err = capsys.readouterr().err
    assert "meta.json" in err and len(err.strip().splitlines()) == 1
    assert (stats.root / "meta.json").read_bytes() == before
