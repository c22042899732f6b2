"""Linear probes: they read what a code carries linearly, and only that."""

import numpy as np

from latent_jax.evaluate import probes


CENTRES = np.random.default_rng(7).normal(size=(5, 3)) * 3.0


def _codes(n, rng, k=5):
    """Relevant dims hold the class (noisy centres), irrelevant dims two factors."""
    classes = np.arange(n) % k
    factors = rng.normal(size=(n, 2))
    centres = CENTRES
    relevant = centres[classes] + 0.3 * rng.normal(size=(n, 3))
    irrelevant = np.concatenate([factors @ np.array([[1.0, 0.5], [-0.5, 1.0]]),
                                 rng.normal(size=(n, 1))], axis=1) + 0.05 * rng.normal(size=(n, 3))
    return np.concatenate([relevant, irrelevant], axis=1), classes, factors


def test_probes_find_the_class_in_the_relevant_code_and_the_factors_in_the_rest():
    rng = np.random.default_rng(0)
    tr, te = _codes(400, rng), _codes(200, rng)
    mask = np.array([True] * 3 + [False] * 3)
    out = probes.disentanglement_probes(tr[0], te[0], mask, classes_train=tr[1],
                                        classes_test=te[1], factors_train=tr[2],
                                        factors_test=te[2], factor_names=("a", "b"))
    assert out["class_accuracy"]["relevant"] > 0.95
    assert out["class_accuracy"]["irrelevant"] < 0.4          # chance 0.2
    assert out["chance"] == 0.2 and out["dims"] == {"relevant": 3, "irrelevant": 3}
    assert out["mean_factor_r2"]["irrelevant"] > 0.98
    assert abs(out["mean_factor_r2"]["relevant"]) < 0.05
    assert set(out["factor_r2"]) == {"a", "b"}
    assert "| a |" in probes.format_probes(out)


def test_r2_is_one_for_an_exact_linear_map_and_negative_for_a_worse_than_mean_fit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 4))
    t = x @ np.array([1.0, -2.0, 0.0, 0.5]) + 3.0
    assert np.allclose(probes.probe_r2(x[:80], t[:80], x[80:], t[80:], ridge=0.0), 1.0)
    # Targets unrelated to x: R^2 around zero or below, never near one.
    noise = rng.normal(size=100)
    assert probes.probe_r2(x[:80], noise[:80], x[80:], noise[80:])[0] < 0.2


def test_accuracy_is_exact_on_separable_classes_and_handles_one_class():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    y = np.array([0, 0, 1, 1])
    assert probes.probe_accuracy(x, y, x, y) == 1.0
    assert probes.probe_accuracy(x, np.zeros(4), x, np.array([0, 0, 0, 1])) == 0.75
