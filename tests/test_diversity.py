"""Class-conditional sample metrics (paper 002): MS-SSIM against TensorFlow's values, Eq. 12's
intra-class diversity, the judge score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latent_jax.evaluate import diversity

# tf.image.ssim_multiscale(a, b, max_val=1.0, power_factors=...) of TensorFlow 2.21.0 on the
# inputs `_pairs` makes (the first scales' power factors renormalised below 176 px).
TENSORFLOW = {
    64: (0.6820016503334045, 0.680931568145752, 0.6684691309928894),
    32: (0.6425855159759521, 0.679065465927124, 0.6639768481254578),
    176: (0.6214208006858826, 0.6161705851554871, 0.6114037036895752),
}


def _pairs():
    rng = np.random.default_rng(7)
    for size in (64, 32, 176):
        base = rng.random((3, size, size, 3)).astype(np.float32)
        yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
        smooth = np.stack([np.sin(6 * xx + k) * np.cos(4 * yy) * 0.5 + 0.5 for k in range(3)],
                          -1)
        a = np.clip(0.7 * smooth[None] + 0.3 * base, 0, 1).astype(np.float32)
        b = np.clip(np.roll(a, 2, axis=2) * 0.9 + 0.05, 0, 1).astype(np.float32)
        yield size, a, b


def test_ms_ssim_matches_tensorflow():
    for size, a, b in _pairs():
        got = np.asarray(diversity.ms_ssim(a, b))
        np.testing.assert_allclose(got, TENSORFLOW[size], atol=2e-5, err_msg=str(size))


def test_scales_that_fit_the_image():
    assert diversity.scales_for(176) == diversity.POWER_FACTORS     # all five, as published
    assert len(diversity.scales_for(64)) == 3 and len(diversity.scales_for(32)) == 2
    assert sum(diversity.scales_for(64)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        diversity.scales_for(8)


def test_intra_class_diversity_counts_self_pairs():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.random((1, 32, 32, 3)).astype(np.float32), 4, axis=0)
    assert diversity.intra_class_diversity(same) == pytest.approx(0.0, abs=1e-6)
    x = rng.random((3, 32, 32, 3)).astype(np.float32)
    pair = np.asarray([float(diversity.ms_ssim(x[i:i + 1], x[j:j + 1])[0])
                       for i in range(3) for j in range(3)])
    assert diversity.intra_class_diversity(x, batch=2) == pytest.approx(1 - pair.mean(), abs=1e-6)


def test_judge_score_is_the_inception_score_formula():
    # Confident and balanced over 4 classes: the score is the number of classes.
    assert diversity.judge_score(np.eye(4)[[0, 1, 2, 3] * 5]) == pytest.approx(4.0, rel=1e-6)
    # One class only: 1.
    assert diversity.judge_score(np.eye(4)[[2] * 7]) == pytest.approx(1.0, rel=1e-6)
    p = np.asarray([[0.7, 0.3], [0.2, 0.8]])
    m = p.mean(0)
    want = math.exp(np.mean([np.sum(r * np.log(r / m)) for r in p]))
    assert diversity.judge_score(p) == pytest.approx(want)
    joint = diversity.joint_class_probs(np.asarray([[0.9, 0.2]]))
    np.testing.assert_allclose(joint, [[0.1 * 0.8, 0.1 * 0.2, 0.9 * 0.8, 0.9 * 0.2]])
