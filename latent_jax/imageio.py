"""Reading user images for `--mode=edit`."""

from __future__ import annotations

from etils import epath
import numpy as np
from PIL import Image

from latent_jax.errors import ConfigError

#: Images with more pixels than this are refused before they are decoded (a decompression bomb,
#: or simply far larger than any face crop needs).
MAX_PIXELS = 8192 * 8192

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_float_rgb(im: Image.Image) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1], keeping the bit depth of 16-bit greyscale images (PIL's
    convert('RGB') would clip them to 255, i.e. to white)."""
    if im.mode in _SIXTEEN_BIT:
        grey = np.asarray(im, np.float64)
        peak = 65535.0 if im.mode != "I" or grey.max() <= 65535 else float(grey.max())
        grey = np.clip(grey / peak, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    if im.mode == "F":
        grey = np.clip(np.asarray(im, np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), np.float32) / 255.0


def load_image(path, size: int) -> np.ndarray:
    """PNG/JPEG -> float32 [size, size, 3] in [0, 1]: central square crop, then resize.

    Models are trained on square images; for CelebA-trained models give aligned faces
    (the crop used in training is the config's `data.preprocess`). `path` may be local or
    remote (etils.epath).
    """
    path = epath.Path(path)
    try:
        with path.open("rb") as f, Image.open(f) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ConfigError(f"--images: {path} is too large to decode safely ({w}x{h} "
                                  f"pixels, at most {MAX_PIXELS}); crop or shrink it first")
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            square = _to_float_rgb(im.crop((left, top, left + s, top + s)))
    except Image.DecompressionBombError as e:
        raise ConfigError(f"--images: {path} is too large to decode safely ({e}); crop or "
                          "shrink it first") from None
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"--images: cannot read {path} as an image: {e}") from None
    channels = [np.asarray(Image.fromarray(square[..., c], mode="F").resize(
        (size, size), Image.BILINEAR), np.float32) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
