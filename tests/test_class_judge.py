"""The class judge (K-way, for categorical labels) and the class-conditional sample metrics it
gives: Lr-LiVAE's Tables 1-2 for identities."""

import types

import jax
import numpy as np
import pytest

from latent_jax import configlib
from latent_jax.evaluate import class_judge as class_judge_lib
from latent_jax.evaluate import metrics

K = 4


def _data_cfg():
    c = configlib.base_config()
    configlib.apply_tiny(c)
    c.data.name = "synthetic_identities"
    c.data.labels = ("Identity",)
    c.data.synthetic.num_identities = K
    return c


def test_the_class_judge_trains_once_then_loads_from_its_cache(tmp_path):
    c = _data_cfg()
    judge_cfg = dict(c.eval.judge.to_dict(), cache_dir=str(tmp_path))
    first = class_judge_lib.get_or_train_class_judge(c.data, "Identity", judge_cfg)
    assert not first.loaded_from_cache and first.num_classes == K
    assert 0.0 <= first.test_accuracy <= 1.0 and first.test_examples == 32
    again = class_judge_lib.get_or_train_class_judge(c.data, "Identity", judge_cfg)
    assert again.loaded_from_cache and again.key == first.key
    x = np.random.default_rng(0).uniform(size=(5, 16, 16, 3)).astype(np.float32)
    lp = first.log_probs(x)
    assert lp.shape == (5, K) and np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(again.log_probs(x), lp, atol=1e-6)
    # Another class count is another judge (another cache key).
    from latent_jax.data import pipeline
    from latent_jax.evaluate import judge as judge_lib

    spec = pipeline.get_data_spec(c.data)
    settings = judge_lib.judge_settings({k: v for k, v in judge_cfg.items() if k != "attributes"})
    keys = {judge_lib.cache_key(c.data, spec, class_judge_lib._cache_attributes("Identity", k),
                                settings, 0) for k in (K, K + 1)}
    assert first.key in keys and len(keys) == 2
    with pytest.raises(ValueError, match="not a categorical label"):
        class_judge_lib.get_or_train_class_judge(c.data, "Eyeglasses", judge_cfg)


class _PixelJudge:
    """Reads the class from the image's mean brightness (class c drawn as c / K)."""

    label, num_classes = "Identity", K

    def log_probs(self, x):
        c = np.clip(np.round(np.asarray(x).mean(axis=(1, 2, 3)) * K), 0, K - 1).astype(int)
        return np.log(np.eye(K)[c] * (1 - 1e-6) + 1e-6 / K)

    def summary(self):
        return {"label": self.label, "test_accuracy": 1.0, "test_examples": 0}


def _caps(follow_class: bool):
    def sample(rng, y):
        c = y[:, 1] if follow_class else np.zeros(len(y))
        x = np.broadcast_to((c / K)[:, None, None, None], (len(y), 16, 16, 3)).astype(np.float32)
        return x.copy(), np.ones(len(y), bool)
    return types.SimpleNamespace(sample=sample)


def _eval_set(n=12):
    labels = np.stack([np.arange(n) % 2, np.arange(n) % K], axis=1).astype(np.float32)
    return metrics.EvalSet(images=np.zeros((n, 16, 16, 3), np.float32),
                           attributes=np.zeros((n, 0)), attribute_names=(), labels=labels,
                           label_names=("Eyeglasses", "Identity"))


def test_categorical_samples_are_scored_per_class_by_the_class_judge():
    good = metrics.categorical_class_sample_metrics(_caps(True), _PixelJudge(), _eval_set(), 8,
                                                    jax.random.PRNGKey(0))
    assert good["per_class"] == 8 and good["n"] == 8 * K
    assert good["class_correct"] == 1.0
    assert good["judge_score"] == pytest.approx(K, rel=1e-3)   # confident and every class
    assert good["intra_class_diversity"] == pytest.approx(0.0, abs=1e-5)   # identical samples
    # A sampler that ignores the class: one class judged, a score of 1.
    bad = metrics.categorical_class_sample_metrics(_caps(False), _PixelJudge(), _eval_set(), 8,
                                                   jax.random.PRNGKey(0))
    assert bad["class_correct"] == pytest.approx(1 / K)
    assert bad["judge_score"] == pytest.approx(1.0, rel=1e-3)


def test_joint_class_samples_are_skipped_beyond_sixteen_classes():
    """Five binary labels are 32 joint classes: no sampling at all, a note instead (CCVAE's 16
    labels would be 65536 classes of num_samples samples each)."""
    n, names = 8, tuple(f"a{i}" for i in range(5))
    data = metrics.EvalSet(images=np.zeros((n, 16, 16, 3), np.float32),
                           attributes=np.zeros((n, 5)), attribute_names=names,
                           labels=(np.arange(n)[:, None] >> np.arange(5) & 1).astype(np.float32),
                           label_names=names)

    def refuse(*a, **k):
        raise AssertionError("sampled")

    judge = types.SimpleNamespace(attribute_names=names)
    out = metrics.class_sample_metrics(types.SimpleNamespace(sample=refuse), judge, data, 4,
                                       jax.random.PRNGKey(0))
    assert "judge_score" not in out and "32 joint classes" in out["notes"][0]
