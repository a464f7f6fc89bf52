"""Vision: any image -> patch features, with a timm tower chosen by name.

Shape letters: B images, H/W pixels, S the tower's square input size, N patches (h*w grid cells
for a CNN feature map, patch tokens for a ViT), Dv the tower's feature size, K classes.

Preprocessing is OpenCV and pure: decode, colour order, resize the short side to S/crop_pct,
centre crop S, normalise with the tower's own mean/std (timm's pretrained config), so a ViT gets
its own numbers the moment its checkpoint is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from encoders.errors import InputError

MAX_PIXELS = 100_000_000  # 10k x 10k; larger is refused before decoding (decompression bombs)


def load_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode an image file (or its bytes) to RGB uint8 (H, W, 3); InputError on anything else."""
    if isinstance(source, (bytes, bytearray)):
        data, name = np.frombuffer(source, np.uint8), "image"
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"no such image file: {path}")
        data, name = np.fromfile(path, np.uint8), path.name
    if data.size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{name} is not an image OpenCV can read (corrupt, or another kind of file)")
    return to_rgb(bgr, "BGR")


def to_rgb(image: np.ndarray, order: Literal["RGB", "BGR"] = "RGB") -> np.ndarray:
    """Any array a camera or decoder gives (gray, RGBA/BGRA, float 0..1) -> RGB uint8 (H, W, 3)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"an image must be HxW, HxWx3 or HxWx4; got shape {a.shape}")
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise InputError(f"image is {a.shape[1]}x{a.shape[0]}; the limit is {MAX_PIXELS // 1_000_000} megapixels")
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float32) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    a = a[:, :, :3]
    return np.ascontiguousarray(a[:, :, ::-1] if order == "BGR" else a)


def crop(rgb: np.ndarray, size: int, crop_pct: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """RGB uint8 (H, W, 3) -> what the tower sees, uint8 (S, S, 3): short side to S/crop_pct, centre
    crop; and that crop's box (x0, y0, x1, y1) in the original image's pixels."""
    h, w = rgb.shape[:2]
    short = max(size, round(size / crop_pct))
    scale = short / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    img = cv2.resize(rgb, (nw, nh), interpolation=interp)
    y, x = (nh - size) // 2, (nw - size) // 2
    sx, sy = w / nw, h / nh
    return img[y:y + size, x:x + size], (x * sx, y * sy, (x + size) * sx, (y + size) * sy)


def preprocess(rgb: np.ndarray, size: int, crop_pct: float, mean, std) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float (3, S, S): short side to S/crop_pct, centre crop."""
    img, _ = crop(rgb, size, crop_pct)
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)  # 3, S, S
    return (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@dataclass
class VisionConfig:
    name: str = "efficientnet_lite0"  # any timm model name
    checkpoint: str | None = None  # timm-format state dict (.safetensors, .pth, .bin); None = random init


class VisionTower(nn.Module):
    """A timm image model used two ways: patch features for the LLM, class probabilities for the cascade."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        # lazy: timm costs ~2.7 s at import (triton with it); compare and eval --server import this, never build a tower
        import timm
        from timm.data import resolve_data_config

        self.config = config
        self.model = timm.create_model(config.name, pretrained=False)
        if config.checkpoint:
            self.model.load_state_dict(_load_state_dict(config.checkpoint), strict=True)
        self.model.eval()
        data = resolve_data_config({}, model=self.model)
        self.size = int(data["input_size"][-1])
        self.crop_pct = float(data.get("crop_pct", 1.0))
        self.mean, self.std = tuple(data["mean"]), tuple(data["std"])
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))  # ViT cls/register tokens
        self.feature_dim = int(self.model.num_features)
        self.num_classes = int(getattr(self.model, "num_classes", 0))
        with torch.no_grad():  # one dummy pass tells the patch grid for any architecture
            f = self.model.forward_features(torch.zeros(1, 3, self.size, self.size))
        self.grid = tuple(f.shape[-2:]) if f.ndim == 4 else _square_grid(f.shape[1] - self.num_prefix_tokens)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images -> (B, 3, S, S) on the tower's device."""
        batch = torch.stack([preprocess(im, self.size, self.crop_pct, self.mean, self.std) for im in images])
        p = next(self.model.parameters())
        return batch.to(p.device, p.dtype)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, S, S) -> patch features (B, N, Dv), and class logits (B, K) when the tower has a head."""
        f = self.model.forward_features(pixels)
        logits = self.model.forward_head(f) if self.num_classes else None
        if f.ndim == 4:  # CNN: B, Dv, h, w -> B, h*w, Dv
            f = f.flatten(2).transpose(1, 2)
        else:  # ViT: B, prefix+N, Dv -> B, N, Dv
            f = f[:, self.num_prefix_tokens:]
        return f, logits

    def crop(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The RGB crop this tower sees of an image, and its box in the image (see crop())."""
        return crop(rgb, self.size, self.crop_pct)

    def class_map(self, features: torch.Tensor, cls: int) -> np.ndarray | None:
        """(N, Dv) patch features -> (h, w) what each grid cell adds to class cls's logit (the class
        activation map), or None when the head is not one linear layer over average-pooled features."""
        head = self.model.get_classifier() if self.num_classes else None
        pool = getattr(getattr(self.model, "global_pool", None), "pool_type", "avg")
        if not isinstance(head, nn.Linear) or pool not in ("avg", "fast"):
            return None
        cam = features.detach().float() @ head.weight[cls].detach().float()
        return cam.reshape(self.grid).cpu().numpy()

    def labels(self) -> list[str]:
        """Human-readable class names when the head is ImageNet-1k."""
        if self.num_classes != 1000:
            return [f"class {i}" for i in range(self.num_classes)]
        from timm.data import ImageNetInfo  # lazy: timm costs ~2.7 s at import (see __init__)

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]


def short_name(label: str) -> str:
    """An ImageNet label's first synonym: "tabby, tabby cat" -> "tabby"."""
    return label.split(",")[0].strip()


def top_classes(logits: torch.Tensor, labels: list[str], k: int = 5) -> list[tuple[str, float]]:
    """(K,) logits -> the k most probable (label, probability) pairs."""
    p = logits.float().softmax(-1)
    values, idx = p.topk(min(k, p.numel()))
    return [(labels[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def _square_grid(n: int) -> tuple[int, int]:
    side = int(round(n ** 0.5))
    return (side, side) if side * side == n else (1, n)


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            return state[key]
    return state


OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")  # Debian opencv-doc (setup.sh installs it)


def load_photo(spec: str) -> np.ndarray:
    """"skimage:NAME" (a scikit-image loader, or a file in its data folder), "matplotlib:FILE" (its
    sample_data) or "opencv:FILE" (Debian opencv-doc's samples) -> RGB uint8."""
    source, name = spec.split(":", 1)
    if source == "opencv":  # Debian opencv-doc's sample photos (setup.sh installs the package)
        path = OPENCV_SAMPLES / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: install Debian's opencv-doc (setup.sh does)")
        return load_image(path)
    if source == "skimage":
        # lazy: scikit-image is a test extra (pyproject.toml), absent from a plain install
        import skimage
        import skimage.data

        if "." in name:  # a file in scikit-image's data folder without a loader function
            return load_image(Path(skimage.data_dir) / name)
        return to_rgb(getattr(skimage.data, name)())
    import matplotlib  # lazy: 0.13 s at import; of all photos only the vision training ones come from it

    return load_image(Path(matplotlib.get_data_path()) / "sample_data" / name)
