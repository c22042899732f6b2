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
    # Mid-grey by default (the authors' 0 in [-1, 1]), not black.
    assert (corrupted[:, :, 4:] == 0.5).all() and np.array_equal(corrupted[:, :, :4], x[:, :, :4])
    assert np.array_equal(seen[0], corrupted)            # the model sees the filled image
    assert np.array_equal(filled[:, :, :4], x[:, :, :4]) and (filled[:, :, 4:] == 0.5).all()
    metrics = inpaint.inpainting_metrics(reconstruct, x, "synthetic_faces")
    np.testing.assert_allclose(metrics["right_half"]["mse"],
                               np.mean((x[:, :, 4:] - 0.5) ** 2), rtol=1e-5)
    assert metrics["right_half"]["mask_share"] == 0.5 and set(metrics) == set(inpaint.MASK_NAMES)


def test_the_fill_is_a_grey_level_or_each_images_mean_outside_the_mask():
    x = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)
    m = inpaint.mask("right_half", 8)
    black, _ = inpaint.inpaint(lambda im: im, x, m, 0.0)
    assert (black[:, :, 4:] == 0).all()
    mean, _ = inpaint.inpaint(lambda im: im, x, m, "mean")
    want = x[:, :, :4].mean(axis=(1, 2))                          # [N, C], per image
    np.testing.assert_allclose(mean[:, 3, 6], want, rtol=1e-5)
    assert not np.allclose(want[0], want[1])
    assert inpaint.inpainting_metrics(lambda im: im, x, "synthetic_faces", "mean")[
        "eyes"]["fill"] == "mean"
    for bad in ("grey", 1.5, -0.1):
        with pytest.raises(ConfigError, match="--fill"):
            inpaint.inpaint(lambda im: im, x, m, bad)


def test_a_mask_file_is_white_where_missing(tmp_path):
    png = np.zeros((32, 32), np.uint8)
    png[:8] = 255
    Image.fromarray(png).save(tmp_path / "m.png")
    m = inpaint.load_mask(tmp_path / "m.png", 16)
    assert m[:4].all() and not m[4:].any()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(ConfigError, match="marks nothing"):
        inpaint.load_mask(tmp_path / "empty.png", 16)


@pytest.mark.parametrize("name", ["cvaegan", "cvae"])
def test_baselines_reconstruct_and_inpaint_at_the_true_class(tmp_path, name):
    """Lr-LiVAE's Sec. 4.5 gives cVAE-GAN the class label: the evaluation's reconstructions
    (and so its inpaintings) encode and decode at the images' true class, not the class the
    method infers from the (corrupted) image; a user's image without labels still infers it."""
    import importlib.util
    import os

    import jax.numpy as jnp

    import tiny
    from latent_jax import train
    from latent_jax.evaluate import metrics as metrics_lib

    path = os.path.join(tiny.REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"inpaint_cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    exp = train.Experiment(mod.get_config("tiny"), str(tmp_path / "run"))
    m, states = exp.method, exp.init_states()
    batch = exp.preview_batch()
    x, y = np.asarray(batch["image"][:8]), np.asarray(batch["label"][:8], np.float32)
    c = m.classes.index(jnp.asarray(y))
    assert m.reconstructs_given_labels
    caps = metrics_lib.Capabilities(m, states, batch_size=8)
    mu, _ = m.encoder.apply(states["encoder"].variables, jnp.asarray(x), m.onehot(c))
    want = np.asarray(m._decode(states["decoder"].params, mu, c))
    np.testing.assert_allclose(caps.reconstruct(x, y), want, atol=1e-6)
    np.testing.assert_allclose(caps.reconstruct(x), np.asarray(m.reconstruct(states, x)),
                               atol=1e-6)
    # The untrained classifier gets some classes wrong: there the two reconstructions differ.
    wrong = np.asarray(m.predict_class(states, jnp.asarray(x))) != np.asarray(c)
    assert wrong.any()
    diff = np.abs(caps.reconstruct(x, y) - caps.reconstruct(x)).reshape(len(x), -1).max(-1)
    assert (diff[wrong] > 1e-6).all() and (diff[~wrong] < 1e-6).all()


def test_methods_that_infer_nothing_from_labels_reconstruct_alike_with_them(tmp_path):
    import tiny
    from latent_jax import train
    from latent_jax.evaluate import metrics as metrics_lib

    exp = train.Experiment(tiny.config(), str(tmp_path / "run"))
    m, states = exp.method, exp.init_states()
    batch = exp.preview_batch()
    x, y = np.asarray(batch["image"][:8]), np.asarray(batch["label"][:8], np.float32)
    caps = metrics_lib.Capabilities(m, states, batch_size=8)
    assert not m.reconstructs_given_labels
    np.testing.assert_array_equal(caps.reconstruct(x, y), caps.reconstruct(x))
