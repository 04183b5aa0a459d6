"""The model contract: logits over ImageNet-1k plus pooled features, with its own preprocessing."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing carried with each model: Resize(shorter side) -> CenterCrop -> Normalize.

    `resize` is the shorter-side size before the crop (256 for a 0.875 crop at 224); `input_size`
    the square crop the model sees.
    """

    input_size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def crop_pct(self) -> float:
        return self.input_size / self.resize

    def describe(self) -> str:
        return (f"Resize({self.resize}, {self.interpolation}) CenterCrop({self.input_size}) "
                f"Normalize(mean={tuple(round(m, 6) for m in self.mean)}, std={tuple(round(s, 6) for s in self.std)})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def at_resolution(self, r: int) -> "Preprocessing":
        """The paper's resolution sweep: Resize(int(r * resize / input_size)) + CenterCrop(r)."""
        return replace(self, input_size=r, resize=int(r * self.resize / self.input_size))

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, interpolation: str, mean, std) -> "Preprocessing":
        import math

        return cls(input_size=input_size, resize=math.floor(input_size / crop_pct), interpolation=interpolation,
                   mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


@dataclass
class VisionModel:
    """A classifier over the 1000 ImageNet classes that also exposes pooled features.

    `forward(x)` takes a normalised batch [B, 3, H, W] and returns (logits [B, 1000], features [B, D]).
    `rebuild(r)` returns the same model at input resolution r (ViT position embeddings resampled).
    """

    spec: str
    module: torch.nn.Module
    preprocessing: Preprocessing
    forward_fn: Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    weights_id: str
    rebuild_fn: Callable[[int], "VisionModel"] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # CLIP models: class names -> the [D, K] zero-shot head for those classes (prompts as for ImageNet), so a
    # user's own classes can be scored from the stored image embeddings. None for other models.
    zero_shot_head: Callable[[Sequence[str]], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_fn(self.module, x)

    def rebuild(self, resolution: int) -> "VisionModel":
        if resolution == self.preprocessing.input_size:
            return self
        if self.rebuild_fn is None:
            from beyond_inet.errors import UserError

            raise UserError(f"model {self.spec!r} cannot be rebuilt at resolution {resolution}")
        return self.rebuild_fn(resolution)

    def to(self, device: str | torch.device) -> "VisionModel":
        self.module.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "weights": self.weights_id, "preprocessing": self.preprocessing.describe(),
                **self.info}


def hash_state_dict(module: torch.nn.Module) -> str:
    """A short content hash of a module's parameters and buffers (the store key's weights part)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
