"""benchmarks/bench_gpu.py runs end to end on a CPU with --smoke (so the first GPU it meets gives numbers, not a
traceback): every figure of every precision is measured for a tiny model, and without --smoke a machine
with no GPU gets one line and exit 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu.json"), *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_smoke_path_measures_every_figure(tmp_path):
    r = _run(tmp_path, "--smoke", "--models", "timm:test_resnet@random", "--n", "6", "--workers", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == "no CUDA device visible: running the CPU smoke path"
    fig = json.loads((tmp_path / "gpu.json").read_text())
    assert fig["device"] == "cpu" and fig["smoke"] and fig["n_images"] == 6 and fig["batch_size"] == 4
    (m,) = fig["models"]
    for prec in ("bf16", "fp32"):
        q = m[prec]
        assert "errors" not in q and "skipped" not in q, q
        for key in ("forward_img_s", "ours_cpu_decode_img_s", "ours_gpu_decode_img_s", "timm_loop_img_s"):
            assert q[key] > 0, (prec, key)
        assert q["gpu_vs_cpu_decode_top1_agreement"] is not None
    assert "timm loop" in r.stdout and "ours/timm" in r.stdout


def test_without_gpu_or_smoke_it_says_so_and_exits_0(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "no CUDA device visible: bench_gpu skipped (--smoke runs it on the CPU)"
    assert json.loads((tmp_path / "gpu.json").read_text()) == {"skipped": "no CUDA device"}
