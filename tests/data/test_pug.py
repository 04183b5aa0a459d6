"""PUG readers: a tiny fake folder tree and a tiny parquet in the facebook/PUG_ImageNet schema."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from beyond_inet.data.pug import (FACTORS, PugFolder, PugParquet, class_names, factors_present,
                                  infer_factor_rows, load_class_mapping, open_pug)
from beyond_inet.errors import UserError

MAPPING = {"Goldfish": [1], "Shirt": [841], "Sweatshirt": [841], "Bridge": [821, 839]}
# sorted: Bridge 0, Goldfish 1, Shirt 2, Sweatshirt 3


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format="PNG")
    return buf.getvalue()


def _folder(tmp_path):
    root = tmp_path / "pug-imagenet"
    files = [("Worlds", "Shirt", "a.png", (255, 0, 0)), ("Worlds", "Bridge", "b.png", (0, 255, 0)),
             ("Worlds", "Bridge", "c.jpg", (0, 0, 255)), ("Scene_Light", "Goldfish", "d.png", (9, 9, 9))]
    for factor, cls, name, color in files:
        d = root / factor / cls
        d.mkdir(parents=True, exist_ok=True)
        Image.new("L" if name == "c.jpg" else "RGB", (5, 4), color[0] if name == "c.jpg" else color).save(d / name)
    (root / "Worlds" / "Bridge" / "notes.txt").write_text("not an image")
    (root / "class_to_imagenet_idx.json").write_text(json.dumps(MAPPING))
    return root


def test_folder_reader(tmp_path):
    root = _folder(tmp_path)
    r = PugFolder(root, "Worlds")
    assert len(r) == 3
    assert [r.sample_id(i) for i in range(3)] == ["Worlds/Bridge/b.png", "Worlds/Bridge/c.jpg", "Worlds/Shirt/a.png"]
    assert [r.label(i) for i in range(3)] == [0, 0, 2]
    img = r.load(2)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0)
    assert r.load(1).mode == "RGB"              # grayscale file converted
    assert r.classes == class_names(MAPPING) == ["Bridge", "Goldfish", "Shirt", "Sweatshirt"]
    assert factors_present(root) == ["Worlds", "Scene_Light"]
    assert open_pug(tmp_path, "Scene_Light").label(0) == 1


def test_folder_errors(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(UserError, match="Camera_Yaw"):
        PugFolder(root, "Camera_Yaw")
    (root / "Worlds" / "Unicorn").mkdir()
    with pytest.raises(UserError, match="Unicorn"):
        PugFolder(root, "Worlds")
    with pytest.raises(UserError, match="class_to_imagenet_idx.json"):
        load_class_mapping(tmp_path / "nope.json")


DEFAULTS = {"world_name": "City", "camera_pitch": 0, "camera_yaw": 0, "camera_roll": 0,
            "character_rotation_pitch": 0, "character_rotation_yaw": 0, "character_rotation_roll": 0,
            "character_scale": 1.0, "character_texture": "Default", "scene_light": "Default"}
ROWS = [  # (label, changes vs defaults, colour)
    ("Shirt", {}, (1, 0, 0)),                              # base render: in every factor
    ("GoldFish", {"world_name": "Desert"}, (2, 0, 0)),     # label spelled differently from the JSON key
    ("Bridge", {"world_name": "Forest"}, (3, 0, 0)),
    ("Bridge", {"camera_yaw": 45}, (4, 0, 0)),
    ("Sweatshirt", {"camera_yaw": 90}, (5, 0, 0)),
    ("Unknown_thing", {"character_scale": 1.5}, (6, 0, 0)),
]


def _parquet(path, rows, with_factor=False, split_at=3):
    cols = {"image": [], "character_label": [], "character_name": [], **{c: [] for c in DEFAULTS}}
    if with_factor:
        cols["factor"] = []
    for label, change, color in rows:
        cols["image"].append({"bytes": _png(color), "path": None})
        cols["character_label"].append(label)
        cols["character_name"].append(label + "_asset")
        for c, v in DEFAULTS.items():
            cols[c].append(change.get(c, v))
        if with_factor:
            cols["factor"].append("Worlds" if "world_name" in change else "Camera_Yaw")
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("character_label", pa.string()), ("character_name", pa.string()),
                        ("world_name", pa.string()), ("camera_pitch", pa.int64()), ("camera_yaw", pa.int64()),
                        ("camera_roll", pa.int64()), ("character_rotation_pitch", pa.int64()),
                        ("character_rotation_yaw", pa.int64()), ("character_rotation_roll", pa.int64()),
                        ("character_scale", pa.float64()), ("character_texture", pa.string()),
                        ("scene_light", pa.string())] + ([("factor", pa.string())] if with_factor else []))
    pq.write_table(pa.table(cols, schema=schema), path, row_group_size=split_at)


def test_parquet_reader_all_rows(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    _parquet(d / "train-00000-of-00002.parquet", ROWS[:4])
    _parquet(d / "train-00001-of-00002.parquet", ROWS[4:])
    r = PugParquet(d, MAPPING)
    assert len(r) == 6
    assert [r.label(i) for i in range(6)] == [2, 1, 0, 0, 3, -1]
    assert r.unknown_labels == ["Unknown_thing"]
    assert [r.load(i).getpixel((0, 0))[0] for i in range(6)] == [1, 2, 3, 4, 5, 6]   # across row groups and files
    assert r.sample_id(0) == "train-00000-of-00002/0000000" and len({r.sample_id(i) for i in range(6)}) == 6


def test_parquet_factor_inference(tmp_path):
    f = tmp_path / "pug.parquet"
    _parquet(f, ROWS)
    worlds = PugParquet(f, MAPPING, factor="Worlds")
    assert [worlds.load(i).getpixel((0, 0))[0] for i in range(len(worlds))] == [1, 2, 3]
    assert worlds.sample_id(0).startswith("Worlds/")
    yaw = PugParquet(f, MAPPING, factor="Camera_Yaw")
    assert [yaw.label(i) for i in range(len(yaw))] == [2, 0, 3]
    assert len(PugParquet(f, MAPPING, factor="Object_Scale")) == 2
    assert len(PugParquet(f, MAPPING, factor="Scene_Light")) == 1   # only the base render
    # explicit defaults override the most-frequent-value rule
    cols = {c: [DEFAULTS[c] if c not in ch else ch[c] for _, ch, _ in ROWS] for c in DEFAULTS}
    # with scale 1.5 as the default, row 5 is the base render and row 0 differs only in scale
    assert infer_factor_rows(cols, "Object_Scale", {**DEFAULTS, "character_scale": 1.5}) == [0, 5]


def test_parquet_factor_column(tmp_path):
    f = tmp_path / "pug.parquet"
    _parquet(f, ROWS, with_factor=True)
    assert len(PugParquet(f, MAPPING, factor="Worlds")) == 2
    assert len(PugParquet(f, MAPPING, factor="Camera_Yaw")) == 4


def test_parquet_wrong_schema(tmp_path):
    f = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), f)
    with pytest.raises(UserError, match="character_label"):
        PugParquet(f, MAPPING)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .parquet"):
        PugParquet(tmp_path / "empty", MAPPING)


def test_factor_list():
    assert len(FACTORS) == 10 and FACTORS[0] == "Worlds" and FACTORS[-1] == "Scene_Light"


def test_catalog_reads_the_parquet_release(tmp_path):
    from beyond_inet.data import catalog

    root = tmp_path / "pug-imagenet"
    (root / "data").mkdir(parents=True)
    _parquet(root / "data" / "train-00000-of-00001.parquet", ROWS)
    (root / "class_to_imagenet_idx.json").write_text(json.dumps(MAPPING))
    assert catalog.parts("pug-imagenet", tmp_path) == list(FACTORS)
    ds = catalog.open_dataset("pug-imagenet/Camera_Yaw", tmp_path)
    assert [ds.label(i) for i in range(len(ds))] == [2, 0, 3]
    assert ds.load(1).getpixel((0, 0))[0] == 4 and ds.fingerprint()
