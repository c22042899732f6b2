"""Image preprocessing: the crops and resizes of the papers' reference code, on uint8 images.

Every resize is PIL's `Image.resize(..., resample=Image.BILINEAR)` on the uint8 image. PIL
scales the bilinear (triangle) filter's support with the scale factor when it shrinks an
image, so downscaling averages over the whole footprint of an output pixel (antialiased,
area-like) instead of sampling two source pixels; upscaling is plain bilinear interpolation.
This is what torchvision's `Resize` does on PIL images, i.e. what the reference code ran.
Pixel centres are aligned (PIL's convention: output pixel `i` samples source coordinate
`(i + 0.5) * in / out - 0.5`). Crops are integer box crops, no resampling.

Methods (`config.data.preprocess`):
- `introvac_crop` (IntroVAC): resize the whole image to 256 x 256 (CelebA's 218 x 178 is
  stretched non-uniformly: x256/218 vertically, x256/178 horizontally), crop the box
  rows 32..224 and columns 32..224 (192 x 192; PIL box `(32, 32, 224, 224)`), resize to
  `size` x `size`.
- `center_crop` (IFcVAEGAN): crop the central square of side `min(H, W)` (178 x 178 on CelebA,
  rows 20..198), resize to `size` x `size`.
- `resize` (CCVAE): resize the whole image to `size` x `size`, no crop (aspect not kept).
- `none`: the image unchanged (images already rendered at the final size).
- `raw`: non-image data (the Swiss roll's 3-D points) unchanged, no shape check.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

INTROVAC_RESIZE = 256
INTROVAC_BOX = (32, 32, 224, 224)  # PIL box: (left, upper, right, lower)

_RESAMPLE = Image.Resampling.BILINEAR


def _to_pil(image: np.ndarray) -> Image.Image:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image [H, W, 1 or 3], got shape {image.shape}")
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _to_numpy(pil: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(pil, dtype=np.uint8)
    if channels == 1:
        out = out[..., None]
    return out


def _resize_pil(pil: Image.Image, height: int, width: int) -> Image.Image:
    if pil.size == (width, height):
        return pil
    return pil.resize((width, height), resample=_RESAMPLE)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """The whole image resized to `size` x `size` (no crop)."""
    pil = _to_pil(image)
    return _to_numpy(_resize_pil(pil, size, size), image.shape[-1])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central `min(H, W)` square, resized to `size` x `size`."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    pil = _to_pil(image).crop((left, top, left + side, top + side))
    return _to_numpy(_resize_pil(pil, size, size), image.shape[-1])


def introvac_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to 256 x 256, crop rows/cols 32..224, resize to `size` x `size` (IntroVAC)."""
    pil = _resize_pil(_to_pil(image), INTROVAC_RESIZE, INTROVAC_RESIZE)
    pil = pil.crop(INTROVAC_BOX)
    return _to_numpy(_resize_pil(pil, size, size), image.shape[-1])


def identity(image: np.ndarray, size: int) -> np.ndarray:
    """The image unchanged; it must already be `size` x `size`."""
    image = np.asarray(image)
    if image.shape[:2] != (size, size):
        raise ValueError(f"preprocess 'none' needs {size}x{size} images, got {image.shape}")
    return image


def raw(example: np.ndarray, size: int) -> np.ndarray:
    """Non-image data (e.g. the Swiss roll's points), returned unchanged."""
    del size
    return np.asarray(example)


PREPROCESSORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "introvac_crop": introvac_crop,
    "center_crop": center_crop,
    "resize": resize,
    "none": identity,
    "raw": raw,
}


def preprocess(image: np.ndarray, method: str, size: int) -> np.ndarray:
    """Applies `config.data.preprocess` = `method`; returns uint8 `[size, size, C]`."""
    try:
        fn = PREPROCESSORS[method]
    except KeyError:
        raise ValueError(f"unknown preprocessing {method!r}; known: {sorted(PREPROCESSORS)}")
    return fn(image, size)
