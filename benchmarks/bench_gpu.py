"""GPU throughput of the paper's four architectures: our inference pass against timm's validate loop and
the pure forward pass, in bf16 and fp32, with JPEGs decoded on the CPU or on the GPU. One command:

    python benchmarks/bench_gpu.py --out gpu-bench.json          # on a GPU: a few minutes
    python benchmarks/bench_gpu.py --smoke                         # anywhere: a few images on the CPU

Per model (`vit-sup`, `convnext-sup`, `vit-clip`, `convnext-clip`, built `@random`: nothing is downloaded)
and per precision (bf16 autocast, fp32), images/s of:
  forward          the model's forward on one real batch already decoded, cropped and on the device, run
                   `--forward-batches` times: the ceiling for any input pipeline;
  ours, CPU decode `infer.run_pass` over the JPEG folder: loader workers decode + crop, the device runs the
                   model, shards are written (what `beyond-inet run` does);
  ours, GPU decode the same with the workers only reading bytes (`--gpu-decode`: nvJPEG on CUDA);
  timm loop        our own equivalent of timm's validate.py loop: a torchvision ImageFolder DataLoader (the
                   same workers, batch size, pinned memory) feeding the model in eval/inference mode under
                   autocast, top-1 counted per batch with `.item()` as timm's meters do; channels_last
                   on CUDA (timm's --channels-last, as ours), no store.
It also reports how far the GPU-decoded outputs are from the CPU-decoded ones (top-1 agreement, max |logit
difference|): the decoders differ by about one grey level. On a CPU, autocast is off, so "bf16" runs fp32.

Self-contained: synthesises --n JPEGs (random crops of scikit-image's photos, ImageNet-like sizes) in a
temporary ImageFolder; writes a JSON of every figure to --out (after each model, so a later failure keeps
the earlier figures). Without a GPU it says so in one line and exits 0, unless --smoke (or --allow-cpu).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table

MODELS = ["vit-sup@random", "convnext-sup@random", "vit-clip@random", "convnext-clip@random"]
PRECISIONS = ("bf16", "fp32")
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


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def timm_loop(model, root: Path, args, dev, amp: bool) -> float:
    """Images/s of a timm-validate.py-style loop (written here, not imported): ImageFolder + DataLoader with
    the model's standard transform, pinned memory and non-blocking copies, channels_last on CUDA (timm's
    --channels-last), forward in eval/inference mode under autocast, top-1 counted per batch with `.item()`
    (timm's meters sync on every batch)."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from beyond_inet.data.views import build_view

    folder = ImageFolder(str(root / "imagenet-val"), transform=build_view("standard", model.preprocessing))
    loader = DataLoader(folder, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        pin_memory=dev.type == "cuda", drop_last=False)
    model.module.eval()
    n, correct = 0, 0
    t = time.perf_counter()
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if dev.type == "cuda":  # timm's --channels-last (the module is channels_last too, as in ours)
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                logits, _ = model.forward(x)
            correct += int((logits.argmax(1) == y).sum().item())
            n += x.shape[0]
    _sync(dev)
    return n / (time.perf_counter() - t)


def measure_model(spec: str, ds, root: Path, args, tmp: Path, deadline: float) -> dict:
    import numpy as np
    import torch

    from beyond_inet.data.views import build_view
    from beyond_inet.engine import infer
    from beyond_inet.engine.store import Store
    from beyond_inet.models import create_model

    dev = torch.device(args.device)
    res: dict = {"model": spec}
    t = time.perf_counter()
    model = create_model(spec)
    res["build_s"] = time.perf_counter() - t
    model.module.eval().to(dev)
    res["weights"] = model.weights_id
    res["preprocessing"] = model.preprocessing.describe()
    pos = np.arange(len(ds))
    view = build_view("standard", model.preprocessing)

    # Forward-only: one batch of real decoded images, on the device, run repeatedly.
    x = torch.stack([view(ds.load(i)) for i in range(min(args.batch_size, len(ds)))])
    reps = max(1, -(-args.batch_size // x.shape[0]))
    x = x.repeat(reps, 1, 1, 1)[: args.batch_size].to(dev)

    def forward_only(amp: bool) -> float:
        cl = x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            for _ in range(2):
                model.forward(cl)
            _sync(dev)
            t = time.perf_counter()
            for _ in range(args.forward_batches):
                model.forward(cl)
            _sync(dev)
        return args.forward_batches * args.batch_size / (time.perf_counter() - t)

    def ours(name: str, amp: bool, gpu_decode: bool) -> tuple[float, object]:
        store = Store(tmp / f"store-{spec.replace(':', '_').replace('@', '_')}-{name}")
        warm = store.entry("warm", len(pos), {})
        infer.run_pass(model, ds, pos, {"standard": warm}, args.device, args.batch_size, args.workers, amp,
                       shards=[0], gpu_decode=gpu_decode)  # warm-up: workers, kernels, nvJPEG
        e = store.entry("timed", len(pos), {})
        t = time.perf_counter()
        st = infer.run_pass(model, ds, pos, {"standard": e}, args.device, args.batch_size, args.workers, amp,
                            gpu_decode=gpu_decode)
        _sync(dev)
        return st.images / (time.perf_counter() - t), e.load()

    for prec in args.precisions:
        amp = prec == "bf16"
        if dev.type == "cuda":  # ours sets channels_last itself; timm's loop and the pure forward see the same
            model.module.to(memory_format=torch.channels_last)
        r: dict = {}
        steps = [("forward_img_s", lambda: forward_only(amp)),
                 ("ours_cpu_decode_img_s", lambda: ours(f"{prec}-cpu", amp, False)),
                 ("ours_gpu_decode_img_s", lambda: ours(f"{prec}-gpu", amp, True)),
                 ("timm_loop_img_s", lambda: timm_loop(model, root, args, dev, amp))]
        outs = {}
        for key, fn in steps:
            if time.time() > deadline:
                r[key] = None
                r.setdefault("skipped", []).append(key)
                continue
            try:
                got = fn()
                if isinstance(got, tuple):
                    r[key], outs[key] = got
                else:
                    r[key] = got
            except Exception as e:  # noqa: BLE001 - keep the other figures
                r[key] = None
                r.setdefault("errors", {})[key] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
        lim = r.get("forward_img_s")
        for key in ("ours_cpu_decode_img_s", "ours_gpu_decode_img_s", "timm_loop_img_s"):
            if lim and r.get(key):
                r[key.replace("_img_s", "_of_forward")] = r[key] / lim
        if r.get("timm_loop_img_s"):
            best = max([v for v in (r.get("ours_cpu_decode_img_s"), r.get("ours_gpu_decode_img_s")) if v] or [0])
            r["ours_best_over_timm"] = best / r["timm_loop_img_s"] if best else None
        if "ours_cpu_decode_img_s" in outs and "ours_gpu_decode_img_s" in outs:
            a, b = outs["ours_cpu_decode_img_s"], outs["ours_gpu_decode_img_s"]
            if a.ids == b.ids:
                r["gpu_vs_cpu_decode_top1_agreement"] = float((a.logits.argmax(1) == b.logits.argmax(1)).mean())
                r["gpu_vs_cpu_decode_max_logit_diff"] = float(np.abs(a.logits - b.logits).max())
        if dev.type == "cuda":
            r["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        res[prec] = r
    model = None  # free the weights before the next model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


SMOKE = {"n": 8, "batch_size": 4, "workers": 1, "forward_batches": 2}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-bench.json", help="JSON file for every figure")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--n", type=int, default=2000, help="synthetic JPEGs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: cores - 1, at most 8; "
                                                             "the same rule as `beyond-inet run --device cuda`)")
    p.add_argument("--forward-batches", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=540, help="skip remaining measurements after this")
    p.add_argument("--smoke", action="store_true",
                   help="on the CPU with 8 images, batch 4, 1 worker, 2 forward batches (unless given): checks the "
                        "script end to end, measures nothing")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU, at the given sizes")
    args = p.parse_args(argv)

    import torch

    from beyond_inet.cores import default_workers

    start = time.time()
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device visible: " + ("running the CPU smoke path" if args.smoke or args.allow_cpu
                                           else "bench_gpu skipped (--smoke runs it on the CPU)"))
        if not (args.smoke or args.allow_cpu):
            Path(args.out).write_text(json.dumps({"skipped": "no CUDA device"}, indent=1))
            return {"skipped": "no CUDA device"}
    if args.smoke:
        given = set(argv if argv is not None else sys.argv[1:])
        for k, v in SMOKE.items():
            if f"--{k.replace('_', '-')}" not in given:
                setattr(args, k, v)
    args.device = "cuda" if cuda and not args.smoke else "cpu"
    if args.workers is None:
        args.workers = default_workers("cuda")
    print(f"machine: {machine()}")
    from beyond_inet.data import catalog

    fig: dict = {"machine": machine(), "device": args.device, "batch_size": args.batch_size, "workers": args.workers,
                 "n_images": args.n, "precisions": args.precisions, "smoke": args.smoke,
                 "torch": torch.__version__, "models": []}
    try:
        import torchvision

        fig["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        t = time.perf_counter()
        root = synthesize(Path(tmp) / "data", args.n)
        fig["synthesis_s"] = time.perf_counter() - t
        ds = catalog.open_dataset("imagenet-val", str(root))
        sizes = [os.path.getsize(pth) for pth in ds._paths[:200]]  # type: ignore[attr-defined]
        fig["mean_jpeg_kib"] = sum(sizes) / len(sizes) / 1024
        print(f"{len(ds)} JPEGs synthesised in {fig['synthesis_s']:.1f} s (mean {fig['mean_jpeg_kib']:.0f} KiB)")
        for spec in args.models:
            try:
                r = measure_model(spec, ds, root, args, Path(tmp), start + args.budget_s)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                r = {"model": spec, "errors": {"build": f"{type(e).__name__}: {e}"}}
            fig["models"].append(r)
            Path(args.out).write_text(json.dumps(fig, indent=1))  # partial results survive a later failure
    fig["wall_s"] = time.time() - start

    def f(x):
        return "-" if x is None else (f"{x:.0f}" if x >= 10 else f"{x:.2f}")

    rows = []
    for r in fig["models"]:
        for prec in args.precisions:
            q = r.get(prec, {})
            rows.append([r["model"], prec if args.device == "cuda" or prec == "fp32" else "bf16 (=fp32 on CPU)",
                         f(q.get("forward_img_s")), f(q.get("ours_cpu_decode_img_s")),
                         f(q.get("ours_gpu_decode_img_s")), f(q.get("timm_loop_img_s")),
                         f(q.get("ours_best_over_timm")), f(q.get("gpu_vs_cpu_decode_top1_agreement"))])
    print_table(f"images/s on {args.device}, {args.n} images, batch {args.batch_size}, {args.workers} loader workers",
                ["model", "precision", "forward", "ours CPU-dec", "ours GPU-dec", "timm loop", "ours/timm",
                 "top-1 agree"], rows)
    Path(args.out).write_text(json.dumps(fig, indent=1))
    print(f"\nwrote {args.out} ({fig['wall_s']:.0f} s)")
    return fig


if __name__ == "__main__":
    main()
