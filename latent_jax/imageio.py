"""Reading user images for `--mode=edit`."""

from __future__ import annotations

import numpy as np
from PIL import Image

from latent_jax.errors import ConfigError


def load_image(path: str, size: int) -> np.ndarray:
    """PNG/JPEG -> float32 [size, size, 3] in [0, 1]: central square crop, then resize.

    Models are trained on square images; for CelebA-trained models give aligned faces
    (the crop used in training is the config's `data.preprocess`).
    """
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR)
            return np.asarray(im, np.float32) / 255.0
    except OSError as e:
        raise ConfigError(f"--images: cannot read {path} as an image: {e}") from e
