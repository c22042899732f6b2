"""Edit locality, class-conditional Wasserstein distances of per-label codes, the PNG figures,
and a CCVAE evaluation report end to end."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from latent_jax.evaluate import latent as latent_lib
from latent_jax.evaluate import metrics as metrics_lib

import test_evaluate as fake   # the fake bar world, its oracle method and judge


def test_wasserstein_1d_hand_examples():
    assert latent_lib.wasserstein_1d([0.0, 1.0], [0.0, 1.0]) == 0.0
    np.testing.assert_allclose(latent_lib.wasserstein_1d([0.0, 1.0], [0.0, 3.0]), 1.0)
    a = np.random.default_rng(0).normal(size=500)
    np.testing.assert_allclose(latent_lib.wasserstein_1d(a, a + 2.5), 2.5, rtol=1e-9)
    # unequal sizes: point mass at 0 vs uniform on {0, 1, 2}: (0 + 1 + 2) / 3
    np.testing.assert_allclose(latent_lib.wasserstein_1d([0.0], [0.0, 1.0, 2.0]), 1.0)
    np.testing.assert_allclose(latent_lib.wasserstein_1d([0.0, 2.0], [1.0]),
                               latent_lib.wasserstein_1d([1.0], [0.0, 2.0]))


def test_edit_locality_hand_example():
    ref = np.zeros((2, 4, 4, 3))
    edited = ref.copy()
    region = np.zeros((2, 4, 4), bool)
    region[:, :2, :2] = True                      # a quarter of the image
    edited[0, 0, 0, 0] = 0.3                      # image 0: 0.3 inside, 0.1 outside
    edited[0, 3, 3, 1] = 0.1
    edited[1, 1, 1, :] = 0.2                      # image 1: all inside
    out = latent_lib.edit_locality(edited, ref, region)
    np.testing.assert_allclose(out["locality"], (0.75 + 1.0) / 2)
    np.testing.assert_allclose(out["region_share"], 0.25)
    np.testing.assert_allclose(out["locality_over_share"], 3.5)
    assert out["n_changed"] == 2
    same = latent_lib.edit_locality(ref, ref, region)   # no change: undefined, not zero
    assert np.isnan(same["locality"]) and same["n_changed"] == 0
    # Float rounding of a no-op edit is no change (it scored a locality of noise before).
    noise = ref + np.where(np.arange(16).reshape(1, 4, 4, 1) % 5 == 0, 1e-6, 0.0)
    rounded = latent_lib.edit_locality(noise, ref, region)
    assert np.isnan(rounded["locality"]) and rounded["n_changed"] == 0
    faint = edited.copy()
    faint[0, 3, 3, 2] = 0.001                     # below half an 8-bit level: ignored
    np.testing.assert_allclose(latent_lib.edit_locality(faint, ref, region)["locality"],
                               (0.75 + 1.0) / 2)


def test_locality_reaches_every_methods_edits_through_evaluate_method():
    data = fake.make_eval_set(label_names=("Eyeglasses", "Smiling"))
    regions = {}
    for k, name in enumerate(fake.ATTRS):
        m = np.zeros((len(data), fake.SIZE, fake.SIZE), bool)
        r, c = fake._bar_slices(k)
        m[:, r, c] = True
        regions[name] = m
    data.regions = regions
    res = fake._run(fake.OracleMethod(data.label_names), data)
    for s in res["edit"]["settings"]:
        assert s["locality"] == 1.0                         # the oracle edits its bar only
        np.testing.assert_allclose(s["region_share"], 12 / 256)
    leaky = fake._run(fake.OracleMethod(data.label_names, leak=fake.ATTRS.index("Male")), data)
    for s in leaky["edit"]["settings"]:
        assert s["locality"] < 0.7                          # half of the change is elsewhere
    head = metrics_lib.headline(res)
    assert head["edit_locality"] == 1.0 and head["edit_locality/Smiling/add"] == 1.0
    assert res["latent"] is None                            # the oracle has no label codes


def test_latent_code_metrics_binary_and_categorical():
    rng = np.random.default_rng(0)
    n = 600
    y_bin = rng.integers(0, 2, n)
    y_cat = rng.integers(0, 3, n)
    codes = np.stack([np.where(y_bin == 1, 2.0, -2.0) + 0.1 * rng.normal(size=n),
                      rng.normal(size=n)], -1)             # the categorical code ignores y
    labels = np.stack([y_bin, y_cat], -1).astype(np.float32)
    out = latent_lib.latent_code_metrics(codes, labels, ["A", "Hair"], [False, True])
    np.testing.assert_allclose(out["binary"]["A"]["wasserstein"], 4.0, atol=0.05)
    cat = out["categorical"]["Hair"]
    assert cat["classes"] == [0, 1, 2]
    assert cat["pairwise_wasserstein_mean"] < 0.3           # not separated
    assert cat["nearest_mean_accuracy"] < 0.5
    sep = latent_lib.latent_code_metrics(np.stack([codes[:, 0], 3.0 * y_cat], -1), labels,
                                         ["A", "Hair"], [False, True])
    assert sep["categorical"]["Hair"]["nearest_mean_accuracy"] == 1.0


def test_figures_are_pngs(tmp_path):
    latent_lib.bar_chart_png({"Male": 3.0, "Smiling": 1.0, "Eyeglasses": float("nan")},
                             str(tmp_path / "bars.png"), title="W1")
    latent_lib.bar_chart_png(None, str(tmp_path / "grouped.png"),
                             series={"ccvae": {"Male": 3.0, "Smiling": 1.0},
                                     "diva": {"Male": 2.0, "Smiling": 0.5}})
    codes = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.stack([np.arange(50) % 2, np.arange(50) % 3], -1)
    latent_lib.histograms_png(codes, labels, ["Male", "Hair"], str(tmp_path / "hist.png"))
    for name in ("bars.png", "grouped.png", "hist.png"):
        img = np.asarray(Image.open(tmp_path / name))
        assert img.ndim == 3 and img.std() > 10             # something was drawn


def test_ccvae_report_has_locality_wasserstein_and_figures(tmp_path):
    from latent_jax import train
    from test_ccvae import tiny_config

    c = tiny_config("ccvae", fraction=0.5, evaluate_at_end=True)
    c.update_from_flattened_dict({
        "eval.judge.steps": 20, "eval.judge.test_examples": 16, "eval.judge.width": 8,
        "eval.judge.feature_dim": 8, "eval.judge.cache_dir": str(tmp_path / "judges"),
        "eval.num_examples": 16, "eval.num_samples": 4, "eval.batch_size": 8})
    train.train_and_evaluate(c, str(tmp_path / "run"))
    report = json.load(open(tmp_path / "run" / "eval" / "latest.json"))
    head, res = report["headline"], report["results"]
    assert 0.0 <= head["edit_locality"] <= 1.0
    assert set(res["latent"]["binary"]) == {"Male", "Smiling", "Eyeglasses"}
    assert "Hair_MULTI" in res["latent"]["categorical"]
    assert "Hair_MULTI" in res["classification"]["categorical_accuracy"]
    assert "classify_accuracy/Hair_MULTI" in head
    step = report["run"]["step"]
    for name in (f"wasserstein_{step}.png", f"embeddings_{step}.png"):
        assert os.path.getsize(tmp_path / "run" / "eval" / name) > 500
    md = open(tmp_path / "run" / "eval" / f"report_{step}.md").read()
    assert "locality" in md and "Per-label latent codes" in md
