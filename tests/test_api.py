"""`beyond_inet.evaluate` / `load_results`: the same run as the CLI, returned as a DataFrame."""
from __future__ import annotations

import csv
import math

import pytest

import beyond_inet
from beyond_inet.errors import UserError

LITE0 = "packaged:efficientnet_lite0"


def test_evaluate_returns_the_stored_table_and_load_results_reads_it(tiny_imagenet, tmp_path):
    out = tmp_path / "out"
    ev = beyond_inet.evaluate(LITE0, "accuracy", data_root=tiny_imagenet, out=out, bootstrap=100, report=False,
                              workers=0, accuracy_datasets="imagenet-val")
    assert ev.out == out and ev.report is None and ev.summary["images"] == 12
    assert list(ev.results.columns) == ["model", "dataset", "analysis", "metric", "value", "ci_low", "ci_high", "n"]
    # The DataFrame is exactly results.csv, read independently.
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ev.results) > 0
    for want, got in zip(rows, ev.results.itertuples()):
        assert (want["model"], want["dataset"], want["metric"]) == (got.model, got.dataset, got.metric)
        assert math.isclose(float(want["value"]), got.value, rel_tol=1e-9) and int(want["n"]) == got.n
    assert set(ev.results.dataset) == {"imagenet-val"}  # the typed option (a string) became a list
    again = beyond_inet.load_results(out)
    assert again.results.equals(ev.results) and again.summary == {}
    # A second call reuses the stored outputs: no inference.
    ev2 = beyond_inet.evaluate([LITE0], ["accuracy"], data_root=tiny_imagenet, out=out, bootstrap=100, report=False,
                               workers=0, accuracy_datasets=["imagenet-val"])
    assert ev2.summary["jobs"] == 0 and ev2.results.equals(ev.results)


@pytest.mark.parametrize("kwargs,needle", [
    ({"limit": 0}, "--limit must be an integer >= 1"),
    ({"pug_rul": "paper"}, "did you mean 'pug_rule'"),
    ({"probe": "adam"}, "choose one of lbfgs, paper"),
    ({"device": "tpu"}, "use auto, cpu or cuda"),
])
def test_bad_input_raises_user_error_before_work(kwargs, needle, tiny_imagenet, tmp_path):
    with pytest.raises(UserError, match=needle):
        beyond_inet.evaluate(LITE0, data_root=tiny_imagenet, out=tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()


def test_load_results_of_a_folder_without_a_run(tmp_path):
    with pytest.raises(UserError, match="holds no results.sqlite"):
        beyond_inet.load_results(tmp_path)
