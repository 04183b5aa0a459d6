"""--decisions folders: read into observers, and every bad file refused with one line (exit 2) before any model."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from beyond_inet import cli
from beyond_inet.data import decisions
from beyond_inet.errors import UserError

HEADER = ["subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename"]


def write(folder: Path, name: str, rows: list[list[str]], header=HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return p


def model_rows(subj: str = "net") -> list[list[str]]:
    return [[subj, "1", "1", "NaN", "bicycle", "airplane", "NaN", "airplane1-bicycle2.png"],
            [subj, "1", "2", "NaN", "cat", "cat", "NaN", "cat1-clock2.png"]]


def human_rows() -> list[list[str]]:
    return [["subject-01", "1", "1", "0.9", "na", "airplane", "0", "0001_s5n_s01_0_airplane_00_airplane1-bicycle2.png"],
            ["subject-01", "1", "2", "0.8", "clock", "cat", "0", "0002_s5n_s01_0_cat_00_cat1-clock2.png"]]


def test_a_raw_data_folder_and_a_dataset_folder_give_the_same_observers(tmp_path):
    ds = tmp_path / "raw" / "cue-conflict"
    write(ds, "cue-conflict_net_session-1.csv", model_rows())
    write(ds, "cue-conflict_subject-01_session_1.csv", human_rows())
    (tmp_path / "raw" / "performances").mkdir()
    write(tmp_path / "raw" / "performances", "net.csv", [["x"]], header=["a"])  # not a dataset folder
    a = decisions.read_observers([tmp_path / "raw"])
    b = decisions.read_observers([ds])
    assert [(o.name, o.human, o.trials) for o in a] == [(o.name, o.human, o.trials) for o in b]
    assert {o.name: o.human for o in a} == {"net": False, "subject-01": True}
    assert [t.response for t in a[1].trials["cue-conflict"]] == ["na", "clock"]


def test_header_names_are_matched_without_case(tmp_path):
    """model-vs-human writes ``Session`` in some human files."""
    write(tmp_path / "colour", "colour_subject-01_session_1.csv",
          [["subject-01", "1", "1", "1", "cat", "cat", "bw", "0001_cl_s01_bw_cat_40_n1_1.png"]],
          header=[h.capitalize() if h == "session" else h for h in HEADER])
    assert decisions.read_observers([tmp_path])[0].trials["colour"][0].condition == "bw"


@pytest.mark.parametrize("rows,header,needle", [
    (model_rows(), HEADER[:4] + HEADER[5:], "missing column(s) object_response"),
    ([["net", "1", "1", "NaN", "cow", "airplane", "NaN", "airplane1-bicycle2.png"]], HEADER,
     "object_response 'cow' is not one of the 16 categories"),
    ([["net", "1", "1", "NaN", "na", "airplane", "NaN", "airplane1-bicycle2.png"]], HEADER,
     "only a human subject may answer 'na'"),
    ([["net", "1", "1", "NaN", "cat", "zebra", "NaN", "airplane1-bicycle2.png"]], HEADER,
     "category 'zebra' is not one of the 16 categories"),
    (model_rows() + [model_rows()[0]], HEADER, "trial 1 of session 1 of net is repeated"),
    (model_rows() + [["net", "1", "3", "NaN", "cat", "airplane", "NaN", "airplane1-bicycle2.png"]], HEADER,
     "net has two trials named airplane1-bicycle2.png"),
])
def test_bad_files_are_refused_with_file_and_line(tmp_path, rows, header, needle):
    write(tmp_path / "cue-conflict", "cue-conflict_net_session-1.csv", rows, header)
    with pytest.raises(UserError, match="cue-conflict_net_session-1.csv") as e:
        decisions.read_observers([tmp_path])
    assert needle in str(e.value)


def test_the_same_file_given_twice_is_a_repeated_trial(tmp_path):
    write(tmp_path / "cue-conflict", "cue-conflict_net_session-1.csv", model_rows())
    with pytest.raises(UserError, match="repeated"):
        decisions.read_observers([tmp_path, tmp_path / "cue-conflict"])


def test_images_are_checked_against_a_full_dataset_under_the_data_root(tmp_path, shared_data):
    root = tmp_path / "data"
    shutil.copytree(shared_data / "edge", root / "edge")
    ok = [["net", "1", "1", "NaN", "cat", "airplane", "NaN", "airplane1.png"]]
    write(tmp_path / "d" / "edge", "edge_net_session-1.csv", ok)
    assert decisions.read_observers([tmp_path / "d"], root)[0].trials["edge"][0].image == "airplane1.png"
    write(tmp_path / "d" / "edge", "edge_net_session-1.csv",
          [["net", "1", "1", "NaN", "cat", "airplane", "NaN", "airplane999.png"]])
    with pytest.raises(UserError, match="airplane999.png.*is not in the edge dataset"):
        decisions.read_observers([tmp_path / "d"], root)


def test_the_cli_refuses_a_bad_file_in_one_line_before_any_model(tmp_path, capsys, monkeypatch):
    write(tmp_path / "d" / "cue-conflict", "cue-conflict_net_session-1.csv",
          [["net", "1", "1", "NaN", "cow", "airplane", "NaN", "airplane1-bicycle2.png"]])
    import beyond_inet.models as models

    def no_build(*a, **k):
        raise AssertionError("a model was built before the decisions were checked")

    monkeypatch.setattr(models, "create_model", no_build)
    rc = cli.main(["run", "--models", "packaged:efficientnet_lite0", "--analyses", "shape-bias",
                   "--decisions", str(tmp_path / "d"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "object_response 'cow'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_decisions_that_are_not_a_folder_are_refused(tmp_path, capsys):
    rc = cli.main(["run", "--decisions", str(tmp_path / "nope"), "--analyses", "shape-bias",
                   "--out", str(tmp_path / "out")])
    assert rc == 2 and "--decisions" in capsys.readouterr().err


def test_a_run_without_models_or_decisions_is_refused(tmp_path, capsys):
    rc = cli.main(["run", "--analyses", "shape-bias", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "no models given" in err and "--decisions" in err
