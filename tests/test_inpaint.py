"""Inpainting (paper 002, Sec. 4.5): masks, the paste formula, the metric, the CLI mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latent_jax.errors import ConfigError
from latent_jax.evaluate import inpaint


def test_masks_are_the_named_regions():
    right = inpaint.mask("right_half", 16)
    assert right[:, 8:].all() and not right[:, :8].any()
    bottom = inpaint.mask("bottom_half", 16)
    assert bottom[8:].all() and not bottom[:8].any()
    eyes = inpaint.mask("eyes", 64)
    ys, xs = np.nonzero(eyes)
    assert 0.38 < ys.min() / 64 < ys.max() / 64 < 0.62 and 0.2 < xs.min() / 64
    mouth = inpaint.mask("nose_mouth", 64)
    assert not (eyes & mouth).any() and np.nonzero(mouth)[0].min() >= np.nonzero(eyes)[0].max()
    with pytest.raises(ConfigError, match="unknown mask"):
        inpaint.mask("left_ear", 16)


def test_inpainting_pastes_the_decode_into_the_mask_only():
    x = np.random.default_rng(0).random((3, 8, 8, 3)).astype(np.float32)
    m = inpaint.mask("right_half", 8)
    seen = []

    def reconstruct(im):
        seen.append(im)
        return np.full_like(im, 0.5)

    corrupted, filled = inpaint.inpaint(reconstruct, x, m)
    assert (corrupted[:, :, 4:] == 0).all() and np.array_equal(corrupted[:, :, :4], x[:, :, :4])
    assert np.array_equal(seen[0], corrupted)            # the model sees the blanked image
    assert np.array_equal(filled[:, :, :4], x[:, :, :4]) and (filled[:, :, 4:] == 0.5).all()
    metrics = inpaint.inpainting_metrics(reconstruct, x, "synthetic_faces")
    np.testing.assert_allclose(metrics["right_half"]["mse"],
                               np.mean((x[:, :, 4:] - 0.5) ** 2), rtol=1e-5)
    assert metrics["right_half"]["mask_share"] == 0.5 and set(metrics) == set(inpaint.MASK_NAMES)


def test_a_mask_file_is_white_where_missing(tmp_path):
    png = np.zeros((32, 32), np.uint8)
    png[:8] = 255
    Image.fromarray(png).save(tmp_path / "m.png")
    m = inpaint.load_mask(tmp_path / "m.png", 16)
    assert m[:4].all() and not m[4:].any()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(ConfigError, match="marks nothing"):
        inpaint.load_mask(tmp_path / "empty.png", 16)
