"""Image files: reading user images for `--mode=edit`, writing PNGs and image grids."""

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
    return load_image_with_crop(path, size)[0]


def describe_crop(crop: dict) -> str:
    """One line saying what `load_image_with_crop` did to an input."""
    w, h = crop["original_size"]
    left, top, s = crop["box"][0], crop["box"][1], crop["box"][2] - crop["box"][0]
    cut = "" if (w, h) == (s, s) else f", centre square {s}x{s} at ({left}, {top})"
    return f"{w}x{h}{cut}, resized to {crop['size']}x{crop['size']}"


def load_image_with_crop(path, size: int) -> tuple[np.ndarray, dict]:
    """`load_image` and what it did: {'original_size': (W, H), 'box': (left, top, right,
    bottom) of the square crop, 'size': size}; `paste_back` uses it."""
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
    crop = {"original_size": (w, h), "box": (left, top, left + s, top + s), "size": size}
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0), crop


def paste_back(path, edited, crop: dict) -> np.ndarray:
    """The inverse of the crop: `edited` ([size, size, 3] in [0, 1]) resized to the square it
    was cut from and pasted into the original image at `path`. uint8 [H, W, 3]."""
    with epath.Path(path).open("rb") as f, Image.open(f) as im:
        frame = Image.fromarray(to_uint8(_to_float_rgb(im)))
    left, top, right, bottom = crop["box"]
    face = Image.fromarray(to_uint8(edited)).resize((right - left, bottom - top),
                                                    Image.BILINEAR)
    frame.paste(face, (left, top))
    return np.asarray(frame)


# ---------------------------------------------------------------------------------------------
# Writing images and grids
# ---------------------------------------------------------------------------------------------


def to_uint8(images) -> np.ndarray:
    """uint8 arrays pass through; anything else is read as [0, 1] floats, clipped and rounded
    (NaN becomes 0)."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    array = np.nan_to_num(np.asarray(array, np.float32), nan=0.0)
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def as_image(array) -> np.ndarray:
    """uint8 [H, W, C] with C in {1, 3, 4}; [H, W] becomes [H, W, 1]."""
    image = to_uint8(array)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"an image must be [H, W] or [H, W, C] with C in (1, 3, 4), got "
                         f"shape {image.shape}")
    return image


def make_grid(images, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> np.ndarray:
    """Tiles [N, H, W, C] images (float in [0, 1] or uint8; C 1 or 3) into a uint8 [H', W', 3]
    grid of ``nrow`` images per row (default ceil(sqrt(N))), row-major, ``padding`` pixels of
    ``pad_value`` between and around them, as torchvision's make_grid:
    H' = rows * (H + padding) + padding, W' = nrow * (W + padding) + padding."""
    array = to_uint8(images)
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[-1] not in (1, 3):
        raise ValueError(f"make_grid expects [N >= 1, H, W, C in (1, 3)] images, got shape "
                         f"{array.shape}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, h, w, _ = array.shape
    ncol = int(nrow) if nrow else int(np.ceil(np.sqrt(n)))
    if ncol <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    ncol = min(ncol, n)
    rows = -(-n // ncol)
    cells = np.full((rows * ncol, h + padding, w + padding, 3), to_uint8(pad_value), np.uint8)
    cells[:n, padding:, padding:] = np.broadcast_to(array, (n, h, w, 3))
    grid = cells.reshape(rows, ncol, h + padding, w + padding, 3).swapaxes(1, 2)
    grid = grid.reshape(rows * (h + padding), ncol * (w + padding), 3)
    return np.pad(grid, ((0, padding), (0, padding), (0, 0)),
                  constant_values=to_uint8(pad_value))


def save_png(path, array) -> str:
    """Saves an image ([H, W] or [H, W, C], C in 1/3/4; uint8 or float in [0, 1]) as PNG,
    creating parent folders; `path` may be local or remote (etils.epath). Returns the path."""
    path = epath.Path(path)
    image = as_image(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(f, format="PNG")
    return str(path)


def save_grid(path, images, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> np.ndarray:
    """:func:`make_grid` then :func:`save_png`; returns the grid."""
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    save_png(path, grid)
    return grid


def upscale(image, min_size: int = 96) -> np.ndarray:
    """Nearest-neighbour upscaling of an image [H, W, C] (or a batch [N, H, W, C]) by the
    smallest integer factor that makes its height at least `min_size` (1 if it already is)."""
    image = to_uint8(image)
    h = image.shape[-3]
    k = max(1, -(-int(min_size) // h))
    return image.repeat(k, axis=-3).repeat(k, axis=-2)


def labelled_grid(rows, row_labels=(), column_labels=(), *, min_cell: int = 96,
                  marks=None, padding: int = 4) -> np.ndarray:
    """A readable grid: `rows` is a list of [N, H, W, C] image batches (float in [0, 1] or
    uint8; one grid row each, N columns), each cell upscaled (nearest neighbour) to at least
    `min_cell` px, `row_labels` written left of the rows, `column_labels` above the columns;
    `marks` (bool [rows, N]) draws a red frame around the marked cells (e.g. rejected
    samples). Returns uint8 [H', W', 3]."""
    from PIL import ImageDraw, ImageFont

    cells = [upscale(np.asarray(r), min_cell) for r in rows]
    if not cells or any(c.ndim != 4 for c in cells):
        raise ValueError("labelled_grid: rows must be [N, H, W, C] batches")
    n = max(c.shape[0] for c in cells)
    ch, cw = cells[0].shape[1:3]
    font = ImageFont.load_default(size=max(10, min(18, ch // 7)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = lambda s: measure.textbbox((0, 0), s, font=font)[2]
    left = (max(text_w(s) for s in row_labels) + 2 * padding) if row_labels else 0
    top = (font.size + 2 * padding) if column_labels else 0
    width = left + n * (cw + padding) + padding
    height = top + len(cells) * (ch + padding) + padding
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, batch in enumerate(cells):
        y = top + padding + r * (ch + padding)
        if r < len(row_labels):
            draw.text((padding, y + ch // 2), row_labels[r], fill="black", font=font, anchor="lm")
        for i in range(batch.shape[0]):
            x = left + padding + i * (cw + padding)
            img = batch[i] if batch.shape[-1] == 3 else np.repeat(batch[i], 3, axis=-1)
            canvas.paste(Image.fromarray(img), (x, y))
            if marks is not None and np.asarray(marks)[r, i]:
                draw.rectangle((x, y, x + cw - 1, y + ch - 1), outline=(220, 0, 0), width=3)
    for i, label in enumerate(column_labels[:n]):
        x = left + padding + i * (cw + padding)
        label = label if text_w(label) <= cw else label[:max(1, cw // max(1, font.size // 2))]
        draw.text((x + cw // 2, padding), label, fill="black", font=font, anchor="mt")
    return np.asarray(canvas)
