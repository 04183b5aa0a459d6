"""Keep Triton out of CPU-only processes: 100 MB resident that nothing on a CPU can use.

torchvision imports `torch._dynamo` (for `is_compile_supported`), and `torch._dynamo` imports Triton whenever
the package is installed, as the CUDA build of torch ships it. Triton only compiles GPU kernels, and torch
reports it unusable without a GPU anyway (`torch.utils._triton.has_triton()` is False: torch's CPU compiler
backend is C++). So when Triton is first asked for and torch sees no CUDA or XPU device, the import is
refused, which torch handles as "Triton not installed". With a GPU nothing changes. Opt out with
BEYOND_INET_KEEP_TRITON=1.
"""
from __future__ import annotations

import importlib.abc
import os
import sys

BLOCKED = "triton"


def _gpu_visible() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:  # asked for before torch: not torch's import; leave it alone
        return True
    try:
        if torch.cuda.is_available():
            return True
        xpu = getattr(torch, "xpu", None)
        return bool(xpu is not None and xpu.is_available())
    except Exception:  # a broken driver probe: keep torch's own behaviour
        return True


class _TritonOnlyWithGpu(importlib.abc.MetaPathFinder):
    """Decides once, at the first `import triton`; afterwards it is a no-op."""

    def find_spec(self, name, path=None, target=None):
        if name != BLOCKED:
            return None
        uninstall()
        if _gpu_visible():
            return None
        sys.modules[BLOCKED] = None  # every later `import triton` raises ModuleNotFoundError too
        raise ModuleNotFoundError(f"{BLOCKED} is not loaded without a GPU (BEYOND_INET_KEEP_TRITON=1 loads it)",
                                  name=BLOCKED)


def install() -> None:
    """Register the finder unless opted out or Triton is already loaded."""
    if os.environ.get("BEYOND_INET_KEEP_TRITON") or BLOCKED in sys.modules:
        return
    if not any(isinstance(f, _TritonOnlyWithGpu) for f in sys.meta_path):
        sys.meta_path.insert(0, _TritonOnlyWithGpu())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TritonOnlyWithGpu)]
