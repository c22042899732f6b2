"""Tests of the evaluation: Fréchet distance, the judge and its cache, the metrics and reports."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from latent_jax.evaluate import judge as judge_lib
from latent_jax.evaluate import metrics as metrics_lib
from latent_jax.evaluate import report as report_lib


# ============================================================================ Fréchet distance
def test_frechet_identical_sets_is_zero():
    feats = np.random.default_rng(0).normal(size=(500, 16)) @ np.diag(np.arange(1, 17))
    assert metrics_lib.frechet_distance_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    d = 8
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.2, 3.0, size=d), rng.uniform(0.2, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = metrics_lib.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9)
    # A rotated (non-diagonal) pair has the same distance as the diagonal one.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rot = metrics_lib.frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2,
                                       q @ np.diag(v2) @ q.T)
    assert rot == pytest.approx(expected, rel=1e-6)
    # From samples it converges to the closed form.
    n = 200_000
    f1 = mu1 + rng.normal(size=(n, d)) * np.sqrt(v1)
    f2 = mu2 + rng.normal(size=(n, d)) * np.sqrt(v2)
    assert metrics_lib.frechet_distance_from_features(f1, f2) == pytest.approx(expected, rel=0.03)


def test_frechet_is_symmetric_and_positive():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    b = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10)) + 0.5
    ab = metrics_lib.frechet_distance_from_features(a, b)
    ba = metrics_lib.frechet_distance_from_features(b, a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-8)
    # Rank-deficient covariances (fewer samples than dimensions) do not crash or go negative.
    assert metrics_lib.frechet_distance_from_features(a[:5], b[:5]) >= 0.0


# ============================================================================ a fake world
# Images 16x16x3 whose attributes are bright 2-row bars: attribute k lives in rows 2k..2k+1,
# columns 0..5. The fake judge reads the bars; fake methods write them.
ATTRS = ("Eyeglasses", "Male", "Smiling", "Mustache", "Goatee", "No_Beard", "FacialHair")
SIZE = 16


def _bar_slices(k):
    return slice(2 * k, 2 * k + 2), slice(0, 6)


def render(attrs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = attrs.shape[0]
    x = rng.uniform(0.2, 0.8, size=(n, SIZE, SIZE, 3)).astype(np.float32)
    for k in range(attrs.shape[1]):
        r, c = _bar_slices(k)
        x[:, r, c, :] = attrs[:, k, None, None, None]
    return x


def set_bars(x, values, columns):
    """jnp: sets the bars of attribute `columns` to `values` [B, len(columns)] where not NaN."""
    for i, k in enumerate(columns):
        r, c = _bar_slices(k)
        v = values[:, i][:, None, None, None]
        patch = x[:, r, c, :]
        x = x.at[:, r, c, :].set(jnp.where(jnp.isnan(v), patch, v * jnp.ones_like(patch)))
    return x


def read_bars(x) -> np.ndarray:
    x = np.asarray(x)
    return np.stack([x[:, _bar_slices(k)[0], _bar_slices(k)[1], :].mean(axis=(1, 2, 3))
                     for k in range(len(ATTRS))], axis=1)


class FakeJudge:
    """Duck-typed Judge reading the bars (perfect on the fake world)."""

    def __init__(self, names=ATTRS):
        self.attribute_names = tuple(names)

    def logits_and_features(self, x):
        bars = read_bars(x)
        logits = (bars - 0.5) * 10.0
        feats = np.concatenate([bars, np.asarray(x).reshape(len(x), -1)[:, -24:]], axis=1)
        return logits, feats

    def logits(self, x):
        return self.logits_and_features(x)[0]

    def features(self, x):
        return self.logits_and_features(x)[1]

    def predict(self, x):
        return self.logits(x) > 0

    def index(self, name):
        return self.attribute_names.index(name)

    def summary(self):
        acc = {a: 1.0 for a in self.attribute_names}
        return {"key": "fake", "attribute_names": list(self.attribute_names),
                "test_accuracy": acc, "test_balanced_accuracy": acc,
                "test_positive_rate": acc, "test_predicted_positive_rate": acc,
                "mean_test_accuracy": 1.0, "mean_test_balanced_accuracy": 1.0,
                "train_seconds": 0.0, "loaded_from_cache": True}


def make_eval_set(label_names=("Eyeglasses", "FacialHair"), n=60, seed=0):
    rng = np.random.default_rng(seed)
    attrs = (rng.uniform(size=(n, len(ATTRS))) < 0.4).astype(np.float32)
    images = render(attrs, rng)
    cols = [ATTRS.index(l) for l in label_names]
    return metrics_lib.EvalSet(images=images, attributes=attrs, attribute_names=ATTRS,
                               labels=attrs[:, cols], label_names=label_names)


class OracleMethod:
    """Edits exactly the requested bars, reconstructs perfectly, samples from the labels."""

    def __init__(self, label_names, leak=None, accept_every_other=False, classifier=True):
        self.cols = [ATTRS.index(l) for l in label_names]
        self.leak = leak  # an attribute index the edit also flips
        self.accept_every_other = accept_every_other
        self.classifier = classifier

    def encode(self, states, x):
        return x.reshape(x.shape[0], -1)

    def decode(self, states, z):
        return z.reshape(z.shape[0], SIZE, SIZE, 3)

    def reconstruct(self, states, x):
        return x * states["scale"]

    def edit(self, states, x, changes, strength=None):
        values = jnp.where(changes > 0, 1.0, jnp.where(changes < 0, 0.0, jnp.nan))
        x = set_bars(x, values, self.cols)
        if self.leak is not None:
            r, c = _bar_slices(self.leak)
            x = x.at[:, r, c, :].set(1.0 - x[:, r, c, :])
        return x

    def sample(self, states, rng, y):
        n = y.shape[0]
        x = jax.random.uniform(rng, (n, SIZE, SIZE, 3), minval=0.2, maxval=0.8)
        for k in range(len(ATTRS)):  # other attributes off
            r, c = _bar_slices(k)
            x = x.at[:, r, c, :].set(0.0)
        accepted = jnp.ones((n,), bool)
        if self.accept_every_other:
            accepted = jnp.arange(n) % 2 == 0
            y = jnp.where(accepted[:, None], y, 1.0 - y)  # rejected ones have the wrong label
        return set_bars(x, y, self.cols), accepted

    def classify(self, states, x):
        if not self.classifier:
            return None
        bars = jnp.stack([x[:, _bar_slices(k)[0], _bar_slices(k)[1], :].mean(axis=(1, 2, 3))
                          for k in self.cols], axis=1)
        return (bars - 0.5) * 10.0


class IdentityEditMethod(OracleMethod):
    def edit(self, states, x, changes, strength=None):
        return x


STATES = {"scale": jnp.float32(1.0)}


def _run(method, data, judge=None, num_samples=20, batch_size=16):
    return metrics_lib.evaluate_method(method, STATES, judge or FakeJudge(), data,
                                       batch_size=batch_size, num_samples=num_samples,
                                       rng=jax.random.PRNGKey(0))


# ============================================================================ metrics
def test_oracle_method_scores_perfectly():
    data = make_eval_set()
    res = _run(OracleMethod(data.label_names), data)
    head = metrics_lib.headline(res)
    assert head["recon_l1"] == 0.0 and head["recon_mse"] == 0.0
    assert head["frechet_judge_recon"] == pytest.approx(0.0, abs=1e-6)
    assert head["frechet_judge_sample"] > 0.1  # samples have other attributes off
    assert head["edit_success"] == 1.0
    assert head["edit_preservation"] == 1.0
    assert head["edit_preservation_vs_recon"] == 1.0
    assert head["multi_edit_success"] == 1.0
    assert head["sample_accept_rate"] == 1.0 and head["sample_correct"] == 1.0
    assert head["classify_accuracy"] == 1.0
    assert head["judge_accuracy"] == 1.0
    # 2 labels x 2 directions, each on the images with the opposite true label.
    settings = res["edit"]["settings"]
    assert [(s["label"], s["direction"]) for s in settings] == [
        ("Eyeglasses", "add"), ("Eyeglasses", "remove"), ("FacialHair", "add"),
        ("FacialHair", "remove")]
    labels = data.labels
    assert [s["n"] for s in settings] == [int((labels[:, 0] == 0).sum()),
                                          int((labels[:, 0] == 1).sum()),
                                          int((labels[:, 1] == 0).sum()),
                                          int((labels[:, 1] == 1).sum())]
    assert res["edit"]["multi"]["n"] == int(np.any(labels == 0, axis=1).sum())


def test_preservation_excludes_the_label_and_its_constituents():
    data = make_eval_set()
    res = _run(OracleMethod(data.label_names), data)
    by = {(s["label"], s["direction"]): s for s in res["edit"]["settings"]}
    fh = set(by[("FacialHair", "add")]["preserved_attributes"])
    assert fh == {"Eyeglasses", "Male", "Smiling"}
    eg = set(by[("Eyeglasses", "add")]["preserved_attributes"])
    assert eg == set(ATTRS) - {"Eyeglasses"}
    assert metrics_lib.related_attributes("Mustache", ATTRS) == {"Mustache", "FacialHair"}


def test_identity_edit_gets_false_positive_rate_and_full_preservation():
    data = make_eval_set()
    res = _run(IdentityEditMethod(data.label_names), data)
    judge = FakeJudge()
    pred = judge.predict(data.images)
    for s in res["edit"]["settings"]:
        l = data.label_names.index(s["label"])
        j = judge.index(s["label"])
        source = 0 if s["direction"] == "add" else 1
        rows = data.labels[:, l] == source
        target = 1 - source
        # success = how often the judge already says "target" on the unedited images
        assert s["success"] == pytest.approx(np.mean(pred[rows, j] == target))
        assert s["preservation"] == 1.0 and s["preservation_vs_recon"] == 1.0
    assert metrics_lib.headline(res)["edit_success"] == 0.0  # the fake judge is perfect


def test_identity_edit_with_imperfect_judge_measures_its_error_rate():
    data = make_eval_set(n=80, seed=3)

    class NoisyJudge(FakeJudge):  # flips Eyeglasses on every third image
        def logits_and_features(self, x):
            logits, feats = super().logits_and_features(x)
            flip = (np.asarray(x)[:, -1, -1, 0] * 1000).astype(int) % 3 == 0
            logits[flip, 0] = -logits[flip, 0]
            return logits, feats

    judge = NoisyJudge()
    res = _run(IdentityEditMethod(data.label_names), data, judge=judge)
    pred = judge.predict(data.images)[:, 0]
    truth = data.labels[:, 0]
    s = res["edit"]["settings"][0]
    fpr = np.mean(pred[truth == 0])
    assert 0.1 < fpr < 0.6
    assert s["success"] == pytest.approx(fpr)


def test_leaky_edit_lowers_preservation_by_the_expected_amount():
    data = make_eval_set()
    leak = ATTRS.index("Smiling")
    res = _run(OracleMethod(data.label_names, leak=leak), data)
    by = {(s["label"], s["direction"]): s for s in res["edit"]["settings"]}
    eg = by[("Eyeglasses", "add")]
    assert eg["success"] == 1.0
    assert eg["per_attribute_preservation"]["Smiling"] == 0.0
    assert eg["per_attribute_preservation"]["Male"] == 1.0
    assert eg["preservation"] == pytest.approx(5 / 6)  # 6 preserved attributes, one flipped
    fh = by[("FacialHair", "remove")]
    assert fh["preservation"] == pytest.approx(2 / 3)  # Eyeglasses, Male, Smiling


def test_sample_correct_counts_accepted_samples_only():
    data = make_eval_set()
    res = _run(OracleMethod(data.label_names, accept_every_other=True), data, num_samples=20)
    sm = res["sampling"]
    assert len(sm["settings"]) == 4
    for s in sm["settings"]:
        assert s["n"] == 20 and s["accept_rate"] == 0.5
        assert s["correct"] == 1.0 and s["correct_all"] == 0.5
    assert sm["sample_accept_rate"] == 0.5 and sm["sample_correct"] == 1.0


def test_method_without_classifier_and_reconstruction_error():
    data = make_eval_set(n=40)
    method = OracleMethod(data.label_names, classifier=False)
    res = metrics_lib.evaluate_method(method, {"scale": jnp.float32(0.5)}, FakeJudge(), data,
                                      batch_size=16, num_samples=8, rng=jax.random.PRNGKey(1))
    assert res["classification"] is None
    head = metrics_lib.headline(res)
    assert "classify_accuracy" not in head
    assert head["recon_l1"] == pytest.approx(np.mean(np.abs(data.images * 0.5)), rel=1e-5)
    assert head["recon_mse"] == pytest.approx(np.mean((data.images * 0.5) ** 2), rel=1e-5)
    assert head["frechet_judge_recon"] > 0.01


def test_single_label_has_no_multi_edit_and_unknown_label_is_not_judged():
    data = make_eval_set(label_names=("Smiling",))
    res = _run(OracleMethod(("Smiling",)), data)
    assert res["edit"]["multi"] is None
    assert "multi_edit_success" not in metrics_lib.headline(res)
    # A judge that does not know the label: success NaN, preservation still measured.
    judge = FakeJudge(names=ATTRS)
    judge.attribute_names = tuple(a if a != "Smiling" else "Smiling_unknown" for a in ATTRS)
    res = _run(OracleMethod(("Smiling",)), data, judge=judge)
    s = res["edit"]["settings"][0]
    assert np.isnan(s["success"])
    # ... the renamed column still reads the edited bar, so it is the one attribute not preserved
    assert s["per_attribute_preservation"]["Smiling_unknown"] == 0.0
    assert s["preservation"] == pytest.approx(6 / 7)
    assert any("Smiling" in n for n in res["edit"]["notes"])


# ============================================================================ judge network
def test_judge_chunks_and_pads_any_batch_size():
    module = judge_lib.JudgeNet(num_outputs=3, width=8, feature_dim=16)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    judge = judge_lib.Judge(("a", "b", "c"), module, params, {}, {}, {}, {}, chunk_size=8)
    x = np.random.default_rng(0).uniform(size=(19, 16, 16, 3)).astype(np.float32)
    logits, feats = judge.logits_and_features(x)
    assert logits.shape == (19, 3) and feats.shape == (19, 16)
    direct, _ = module.apply({"params": params}, x)
    np.testing.assert_allclose(logits, np.asarray(direct), rtol=1e-4, atol=1e-5)
    assert judge.predict(x).dtype == bool
    assert judge.logits(x[:0]).shape == (0, 3)


def test_judge_settings_validation():
    with pytest.raises(ValueError, match="config.eval.judge"):
        judge_lib.judge_settings({"stepz": 3})
    with pytest.raises(ValueError, match="config.eval.judge.steps"):
        judge_lib.judge_settings({"steps": 0})
    s = judge_lib.judge_settings({"steps": 7})
    assert s["steps"] == 7 and s["width"] == judge_lib.JUDGE_DEFAULTS["width"]
    with pytest.raises(ValueError, match="config.eval.num_examples"):
        cfg = report_lib.default_eval_config()
        cfg.num_examples = 0
        report_lib.validate_eval_config(cfg)
    report_lib.validate_eval_config(report_lib.default_eval_config())
