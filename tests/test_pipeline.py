"""The pipeline's cross-model step: compares_models analyses run once, after every model, with lazy
store-backed access to every model's outputs; the paired tests run whenever two or more models ran."""
from __future__ import annotations

from typing import ClassVar

from beyond_inet import registry
from beyond_inet.analyses import ANALYSES
from beyond_inet.analyses.base import Analysis, AnalysisResult, Context, CrossFetch, Request, Row, register_analysis
from beyond_inet.pipeline import RunConfig, run
from beyond_inet.report.results import ResultsDB

MODELS = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1"]


class CountImages(Analysis):
    """A toy cross-model analysis: how many images every model has on the photos (and which models)."""

    name = "count-images-test"
    compares_models: ClassVar[bool] = True
    calls: ClassVar[list] = []

    def requests(self, ctx: Context) -> list[Request]:
        return [Request("skimage-photos")]

    def compare(self, ctx: Context, models: list[str], fetch: CrossFetch) -> AnalysisResult:
        type(self).calls.append(list(models))
        res = AnalysisResult()
        for m in models:
            out = fetch(m, Request("skimage-photos"))
            res.rows.append(Row(m, "skimage-photos", self.name, "images", float(len(out)), n=len(out)))
        assert fetch(models[0], Request("imagenet-val")) is None  # absent outputs: None, not an error
        return res


def test_cross_model_analyses_run_once_after_all_models(tmp_path):
    register_analysis(CountImages)
    try:
        cfg = RunConfig(models=MODELS, analyses=["accuracy", CountImages.name], out=str(tmp_path),
                        options={"accuracy_datasets": ["skimage-photos"]}, n_boot=100, num_workers=0,
                        report=False, progress=False)
        run(cfg)
    finally:
        del ANALYSES[CountImages.name]
        del registry.ANALYSES[CountImages.name]
    assert CountImages.calls == [MODELS]
    db = ResultsDB(tmp_path)
    rows = db.rows()
    arts = db.artifacts()
    db.close()
    counts = {r.model: r.value for r in rows if r.analysis == CountImages.name}
    assert counts == {m: 5.0 for m in MODELS}
    # the paired tests ran without being asked for, on the accuracy declarations
    tests = arts[("significance", "*", "significance/tests")]["tests"]
    top1 = [t for t in tests if (t["analysis"], t["metric"]) == ("accuracy", "top1")]
    assert len(top1) == 1 and top1[0]["test"] == "mcnemar" and top1[0]["too_few"]  # 4-5 labelled photos
    assert any(r.model == f"{MODELS[0]} vs {MODELS[1]}" and r.metric == "accuracy/top1:diff" for r in rows)
