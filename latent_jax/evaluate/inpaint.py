"""Inpainting (paper 002, Sec. 4.5), for every method (it needs only `reconstruct`): the masked
region is filled with a constant, the image encoded and decoded, and the decode pasted into the
region: x_inp = M x' + (1 - M) x, x' = reconstruct((1 - M) x + M f).

The fill f is mid-grey, 0.5 in [0, 1], by default: the authors' 0 in their [-1, 1] images. A
black fill (0 in [0, 1]) can read as an attribute to the encoder (a dark block over the eyes
looks like dark glasses). `fill='mean'` fills with each image's
mean colour outside the mask.

The paper's four masks (right half, eyes, nose and mouth, bottom half) are not in the authors'
code; here they are fixed boxes in coordinates relative to the (square) model input:
- synthetic_faces: the eyes and the nose-and-mouth boxes bound where the renderer draws the
  glasses and the mouth / moustache over 200 test faces (mean region share above 0.3), the
  nose-and-mouth box reaching up to the eyes' lower edge;
- celeb_a (centre square crop of the aligned images): boxes around the mean positions of the
  aligned landmarks (eyes at about 0.51 of the height, 0.39 / 0.61 of the width; nose 0.65;
  mouth corners 0.75 at 0.41 / 0.59), approximate; celeb_a_identities (the same images) too;
- synthetic_identities: the synthetic faces' boxes (the same renderer and pose ranges).
A mask can also be a PNG (white = missing), resized to the model's size.
"""

from __future__ import annotations

from typing import Callable, Mapping

from etils import epath
import numpy as np
from PIL import Image

from latent_jax.errors import ConfigError

# name -> (top, bottom, left, right), fractions of the height / width; the halves are the same
# for every dataset.
_HALVES = {"right_half": (0.0, 1.0, 0.5, 1.0), "bottom_half": (0.5, 1.0, 0.0, 1.0)}
_SYNTHETIC_BOXES = dict(_HALVES, eyes=(0.40, 0.60, 0.23, 0.77), nose_mouth=(0.60, 0.76, 0.34, 0.66))
_CELEBA_BOXES = dict(_HALVES, eyes=(0.42, 0.60, 0.27, 0.73), nose_mouth=(0.60, 0.84, 0.33, 0.67))
BOXES: Mapping[str, Mapping[str, tuple[float, float, float, float]]] = {
    "synthetic_faces": _SYNTHETIC_BOXES,
    # synthetic_identities paints with the synthetic faces' renderer and its pose ranges.
    "synthetic_identities": _SYNTHETIC_BOXES,
    "celeb_a": _CELEBA_BOXES,
    # the same aligned images, another split
    "celeb_a_identities": _CELEBA_BOXES,
}
MASK_NAMES = ("right_half", "eyes", "nose_mouth", "bottom_half")


def mask(name: str, size: int, dataset: str = "synthetic_faces") -> np.ndarray:
    """bool [size, size], True where the image is missing."""
    boxes = BOXES.get(dataset, BOXES["synthetic_faces"])
    if name not in boxes:
        raise ConfigError(f"--mask: unknown mask {name!r}; use one of {', '.join(MASK_NAMES)} "
                          "or a PNG file (white = missing)")
    top, bottom, left, right = boxes[name]
    m = np.zeros((size, size), bool)
    m[int(round(top * size)):int(round(bottom * size)),
      int(round(left * size)):int(round(right * size))] = True
    return m


def load_mask(path, size: int) -> np.ndarray:
    """A mask PNG (white = missing) resized to [size, size] (nearest neighbour)."""
    try:
        with epath.Path(path).open("rb") as f, Image.open(f) as im:
            grey = np.asarray(im.convert("L").resize((size, size), Image.NEAREST))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--mask: cannot read {path} as an image: {e}") from None
    m = grey > 127
    if not m.any():
        raise ConfigError(f"--mask: {path} marks nothing as missing (white = missing)")
    return m


DEFAULT_FILL = 0.5


def parse_fill(value) -> float | str:
    """A fill value in [0, 1] or 'mean' (from a flag or a config); ConfigError otherwise."""
    if isinstance(value, str) and value.strip() == "mean":
        return "mean"
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = float("nan")
    if not 0.0 <= f <= 1.0:
        raise ConfigError(f"--fill: a grey level in [0, 1] or 'mean', got {value!r}")
    return f


def inpaint(reconstruct: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
            m: np.ndarray, fill: float | str = DEFAULT_FILL) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted, inpainted) for images x [N, H, W, C] and a mask [H, W] or [N, H, W]; the
    missing region filled with `fill` (a grey level, or 'mean': each image's mean colour
    outside the mask)."""
    fill = parse_fill(fill)
    m = np.broadcast_to(m, x.shape[:3])[..., None].astype(x.dtype)
    if fill == "mean":
        keep = 1.0 - m
        value = (np.sum(x * keep, axis=(1, 2), keepdims=True)
                 / np.maximum(np.sum(keep, axis=(1, 2), keepdims=True), 1.0))
    else:
        value = np.asarray(fill, x.dtype)
    corrupted = (x * (1.0 - m) + m * value).astype(x.dtype)
    return corrupted, m * reconstruct(corrupted) + (1.0 - m) * x


def inpainting_metrics(reconstruct: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                       dataset: str, fill: float | str = DEFAULT_FILL) -> dict:
    """Per mask: the mean squared error inside the mask between the inpainted and the original
    images (pixels in [0, 1]), the mask's share of the image and the fill used."""
    out = {}
    for name in MASK_NAMES:
        m = mask(name, images.shape[1], dataset)
        _, filled = inpaint(reconstruct, images, m, fill)
        diff = np.square(filled - images)[:, m]
        out[name] = {"mse": float(diff.mean()), "mask_share": float(m.mean()),
                     "n": int(len(images)), "fill": fill}
    return out
