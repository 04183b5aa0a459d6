"""GPU throughput of a standard inference pass (bf16 autocast, channels_last), against the model's own limit,
with JPEGs decoded by the CPU loader workers or on the GPU (nvJPEG, `--gpu-decode`).

Per model (random weights; nothing is downloaded):
  forward-only     batches already decoded, cropped and on the GPU: the ceiling for any input pipeline;
  pass, CPU decode `infer.run_pass` over the JPEG folder: workers decode + crop, the GPU runs the model,
                   shards are written (what `beyond-inet run --device cuda` does);
  pass, GPU decode the same with the workers only reading bytes (`--gpu-decode`);
  [--compile]      forward-only and the CPU-decode pass again with torch.compile.
It also reports how far the GPU-decoded outputs are from the CPU-decoded ones (top-1 agreement, max |logit
difference|): the decoders differ by about one grey level.

Self-contained: synthesises --n JPEGs (random crops of scikit-image's photos, ImageNet-like sizes) in a
temporary ImageFolder; writes a JSON of every figure to --out. Skips (exit 0) when no GPU is visible,
unless --allow-cpu (a smoke test of the script itself).

    python benchmarks/bench_gpu.py --out gpu-bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table

MODELS = ["convnext-sup@random", "vit-sup@random"]
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041", "n01514668")


def _photos():
    import numpy as np

    try:
        from skimage import data

        pics = [data.chelsea(), data.coffee(), data.rocket(), data.astronaut(), data.stereo_motorcycle()[0],
                data.hubble_deep_field()]
        return [p[..., :3] for p in pics]
    except Exception:  # noqa: BLE001 - no scikit-image: smooth random images instead
        rng = np.random.default_rng(0)
        out = []
        for _ in range(6):
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            from PIL import Image

            out.append(np.asarray(Image.fromarray(small).resize((640, 480), Image.BICUBIC)))
        return out


def _write_chunk(args) -> None:
    import numpy as np
    from PIL import Image

    root, start, stop, seed = args
    rng = np.random.default_rng(seed)
    pics = _photos()
    for k in range(start, stop):
        p = pics[k % len(pics)]
        h, w = p.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = Image.fromarray(np.ascontiguousarray(p[y:y + ch, x:x + cw]))
        short = int(rng.integers(333, 501))  # ImageNet val: shorter side mostly 333..500
        s = short / min(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)
        d = Path(root) / "imagenet-val" / WNIDS[k % len(WNIDS)]
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"ILSVRC2012_val_{k + 1:08d}.JPEG", quality=90)


def synthesize(root: Path, n: int) -> Path:
    """`root/imagenet-val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`, n images, written in parallel."""
    from multiprocessing import get_context

    procs = max(1, min(16, os.cpu_count() or 1))
    step = -(-n // procs)
    chunks = [(str(root), i, min(n, i + step), i) for i in range(0, n, step)]
    with get_context("spawn").Pool(procs) as pool:
        pool.map(_write_chunk, chunks)
    return root


def measure_model(spec: str, ds, args, tmp: Path, deadline: float) -> dict:
    import numpy as np
    import torch

    from beyond_inet.data.views import build_view
    from beyond_inet.engine import infer
    from beyond_inet.engine.store import Store
    from beyond_inet.models import create_model

    dev = torch.device(args.device)
    res: dict = {"model": spec}
    model = create_model(spec)
    model.module.eval().to(dev)
    if dev.type == "cuda":
        model.module.to(memory_format=torch.channels_last)
    res["weights"] = model.weights_id
    res["preprocessing"] = model.preprocessing.describe()
    pos = np.arange(len(ds))
    view = build_view("standard", model.preprocessing)

    # Forward-only: one batch of real decoded images, on the device, run repeatedly.
    x = torch.stack([view(ds.load(i)) for i in range(min(args.batch_size, len(ds)))])
    reps = max(1, -(-args.batch_size // x.shape[0]))
    x = x.repeat(reps, 1, 1, 1)[: args.batch_size].to(dev)

    def forward_only(compile_: bool) -> float:
        fwd = infer._Forward(model, dev, args.batch_size, amp=True, compile=compile_)
        for _ in range(3):
            fwd(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.forward_batches):
            fwd(x)  # returns numpy: includes the device->host copy of logits/features, as a pass does
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return args.forward_batches * args.batch_size / (time.perf_counter() - t)

    def pass_(name: str, gpu_decode: bool, compile_: bool = False) -> tuple[float, object]:
        store = Store(tmp / f"store-{spec.replace(':', '_').replace('@', '_')}-{name}")
        warm = store.entry("warm", len(pos), {})
        infer.run_pass(model, ds, pos, {"standard": warm}, args.device, args.batch_size, args.workers, True,
                       shards=[0], gpu_decode=gpu_decode, compile=compile_)  # warm-up: workers, kernels, nvJPEG
        e = store.entry("timed", len(pos), {})
        t = time.perf_counter()
        st = infer.run_pass(model, ds, pos, {"standard": e}, args.device, args.batch_size, args.workers, True,
                            gpu_decode=gpu_decode, compile=compile_)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        return st.images / dt, e.load()

    steps = [("forward_only_img_s", lambda: forward_only(False)),
             ("pass_cpu_decode_img_s", lambda: pass_("cpu", False)),
             ("pass_gpu_decode_img_s", lambda: pass_("gpu", True))]
    if args.compile:
        steps += [("forward_only_compiled_img_s", lambda: forward_only(True)),
                  ("pass_cpu_decode_compiled_img_s", lambda: pass_("cpu-compiled", False, True))]
    outs = {}
    for key, fn in steps:
        if time.time() > deadline:
            res[key] = None
            res.setdefault("skipped", []).append(key)
            continue
        try:
            got = fn()
            if isinstance(got, tuple):
                res[key], outs[key] = got
            else:
                res[key] = got
        except Exception as e:  # noqa: BLE001 - keep the other figures
            res[key] = None
            res.setdefault("errors", {})[key] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    lim = res.get("forward_only_img_s")
    for key in ("pass_cpu_decode_img_s", "pass_gpu_decode_img_s"):
        if lim and res.get(key):
            res[key.replace("_img_s", "_ratio")] = res[key] / lim
    if "pass_cpu_decode_img_s" in outs and "pass_gpu_decode_img_s" in outs:
        a, b = outs["pass_cpu_decode_img_s"], outs["pass_gpu_decode_img_s"]
        if a.ids == b.ids:
            res["gpu_vs_cpu_decode_top1_agreement"] = float((a.logits.argmax(1) == b.logits.argmax(1)).mean())
            res["gpu_vs_cpu_decode_max_logit_diff"] = float(np.abs(a.logits - b.logits).max())
            res["logit_std"] = float(a.logits.std())
    if dev.type == "cuda":
        res["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    model = None  # free the weights before the next model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-bench.json", help="JSON file for every figure")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--n", type=int, default=4000, help="synthetic JPEGs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="loader workers")
    p.add_argument("--forward-batches", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (adds minutes)")
    p.add_argument("--budget-s", type=float, default=420, help="skip remaining measurements after this")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU (smoke test)")
    args = p.parse_args(argv)

    import torch

    start = time.time()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device visible: bench_gpu skipped")
        Path(args.out).write_text(json.dumps({"skipped": "no CUDA device"}, indent=1))
        return {"skipped": "no CUDA device"}
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {machine()}")
    from beyond_inet.data import catalog

    fig: dict = {"machine": machine(), "device": args.device, "batch_size": args.batch_size, "workers": args.workers,
                 "n_images": args.n, "amp": "bf16 autocast" if args.device == "cuda" else "fp32",
                 "torch": torch.__version__, "models": []}
    try:
        import torchvision

        fig["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        t = time.perf_counter()
        synthesize(Path(tmp) / "data", args.n)
        fig["synthesis_s"] = time.perf_counter() - t
        ds = catalog.open_dataset("imagenet-val", str(Path(tmp) / "data"))
        sizes = [os.path.getsize(pth) for pth in ds._paths[:200]]  # type: ignore[attr-defined]
        fig["mean_jpeg_kib"] = sum(sizes) / len(sizes) / 1024
        print(f"{len(ds)} JPEGs synthesised in {fig['synthesis_s']:.1f} s (mean {fig['mean_jpeg_kib']:.0f} KiB)")
        for spec in args.models:
            try:
                r = measure_model(spec, ds, args, Path(tmp), start + args.budget_s)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                r = {"model": spec, "errors": {"build": f"{type(e).__name__}: {e}"}}
            fig["models"].append(r)
            Path(args.out).write_text(json.dumps(fig, indent=1))  # partial results survive a later failure
    fig["wall_s"] = time.time() - start

    def f(x):
        return "-" if x is None else (f"{x:.0f}" if x >= 10 else f"{x:.3f}")

    rows = []
    for r in fig["models"]:
        rows.append([r["model"], f(r.get("forward_only_img_s")), f(r.get("pass_cpu_decode_img_s")),
                     f(r.get("pass_cpu_decode_ratio")), f(r.get("pass_gpu_decode_img_s")),
                     f(r.get("pass_gpu_decode_ratio")), f(r.get("gpu_vs_cpu_decode_top1_agreement"))])
    print_table(f"images/s, batch {args.batch_size}, {args.workers} loader workers, {fig['amp']}",
                ["model", "forward-only", "pass CPU-dec", "/limit", "pass GPU-dec", "/limit", "top-1 agree"], rows)
    if args.compile:
        print_table("torch.compile", ["model", "forward-only", "pass CPU-dec"],
                    [[r["model"], f(r.get("forward_only_compiled_img_s")), f(r.get("pass_cpu_decode_compiled_img_s"))]
                     for r in fig["models"]])
    Path(args.out).write_text(json.dumps(fig, indent=1))
    print(f"\nwrote {args.out} ({fig['wall_s']:.0f} s)")
    return fig


if __name__ == "__main__":
    main()
