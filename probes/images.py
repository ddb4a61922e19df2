"""Images in, model input out: decoding (with a reason when a file is not an image) and the
model's own preprocessing, read from its folder's `preprocessor_config.json`.

Preprocessing follows the Hugging Face image processors' common path: resize the shorter side to
`size / crop_pct` (bilinear), center-crop `size` x `size`, scale to [0, 1], normalize by
`image_mean` / `image_std`. EfficientNet-Lite (crop 0.875, mean = std = 0.5: inputs in [-1, 1])
and ViT folders (crop 1.0) both fit it.
"""

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from probes.errors import CurateError

PREPROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class ImageSpec:
    size: int  # the model's square input side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0  # share of the resized shorter side the center crop keeps

    @classmethod
    def read(cls, folder: Path) -> "ImageSpec":
        path = folder / PREPROCESSOR
        try:
            config = json.loads(path.read_text())
            size = config["size"]
            side = size if isinstance(size, int) else size.get("height", size.get("shortest_edge"))
            crop = config.get("crop_pct") or 1.0
            return cls(int(side), tuple(config["image_mean"]), tuple(config["image_std"]), crop)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CurateError(f"{path}: no usable image preprocessing ({err})") from None

    def to_json(self) -> dict:
        return {
            "size": self.size,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "crop_pct": self.crop_pct,
        }


@dataclass(frozen=True)
class Decoded:
    image: Image.Image | None  # RGB; None when the bytes are not a readable image
    pixels: int  # width x height of the original (0 when unreadable): what pixel budgets count
    error: str | None = None


def decode(data: bytes | None) -> Decoded:
    """Decode fully now (PIL is lazy), so a truncated file fails here with its reason."""
    if not data:
        return Decoded(None, 0, "not a readable image (no image bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
        return Decoded(image.convert("RGB"), image.width * image.height)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as err:
        return Decoded(None, 0, f"not a readable image ({type(err).__name__}: {err})")
    except Image.DecompressionBombError as err:
        return Decoded(None, 0, f"not a readable image ({err})")


def prepare(images: Sequence[Image.Image], spec: ImageSpec) -> torch.Tensor:
    """[images, 3, size, size] float32 model input."""
    return normalize(crops(images, spec), spec)


def crops(images: Sequence[Image.Image], spec: ImageSpec) -> torch.Tensor:
    """[images, 3, size, size] uint8: each image resized and center-cropped as the model sees
    it, before normalization (a quarter of the memory of the model input)."""
    out = np.empty((len(images), spec.size, spec.size, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(_center_crop(image, spec), np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def normalize(pixels: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """0-255 pixels [images, 3, H, W] (any dtype) -> float32 model input."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def _center_crop(image: Image.Image, spec: ImageSpec) -> Image.Image:
    side = spec.size
    scale = side / spec.crop_pct / min(image.size)
    width = max(side, round(image.width * scale))
    height = max(side, round(image.height * scale))
    image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
