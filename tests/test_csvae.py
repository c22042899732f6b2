"""CSVAE and its baselines (paper 001): gradient routing, edits, priors, config errors, the Swiss
roll data and probe, the trainer end to end, Table 4's pooled metric."""

import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny

METHODS = ("csvae", "vae", "condvae", "condvae_info")


def _config(method, preset="swiss_roll", **overrides):
    spec = importlib.util.spec_from_file_location(
        f"cfg_{method}", os.path.join(tiny.REPO, "configs", f"{method}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(preset)
    small = {"data.synthetic.num_train": 256, "data.synthetic.num_validation": 64,
             "data.synthetic.num_test": 64, "batch_size": 32, "model.mlp_hidden": (16, 16),
             "model.adversary_hidden": (16,), "num_steps": 4, "checkpoint.every_steps": 100,
             "log_every_steps": 1}
    if preset != "swiss_roll":
        small.update({"data.image_size": 16, "data.subset.positives": (), "model.channels": (8, 16),
                      "model.hidden": 16, "model.z_dim": 4, "batch_size": 8, "grid_size": 2,
                      "evaluate_at_end": False})
    # The shrinking settings of keys this method reads (`config_keys`: VAE has no adversary).
    small = {k: v for k, v in small.items() if k.split(".")[0] not in ("model", "loss")
             or k.split(".")[1] in c[k.split(".")[0]]}
    small.update(overrides)
    c.update_from_flattened_dict(small)
    return c


def _method(config):
    from latent_jax import methods
    from latent_jax.data import pipeline

    spec = pipeline.get_data_spec(config.data)
    return methods.get_method(config, spec, steps_per_epoch=8), spec


def _batch(config, n=32):
    from latent_jax.data import pipeline

    it = pipeline.make_train_iterator(config.data, global_batch_size=n, seed=0)
    return {k: jnp.asarray(v) for k, v in next(it).items()}


def _moved(before, after):
    return any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before),
                                                      jax.tree.leaves(after)))


@pytest.mark.parametrize("method", ["csvae", "condvae_info"])
def test_adversary_objective_moves_only_the_adversary(method):
    """beta5 alone: the adversary learns, encoder and decoder do not move (z is detached)."""
    c = _config(method, **{"loss.reconstruction": 0.0, "loss.kl_z": 0.0,
                           "loss.encoder_adversarial": 0.0, "loss.adversary": 1.0})
    if "kl_w" in c.loss:                     # condvae_info has no w prior (config_keys)
        c.loss.kl_w = 0.0
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(m.train_step, static_argnums=3)(states, _batch(c),
                                                           jax.random.PRNGKey(1), 0)
    assert _moved(states["adversary"].params, new["adversary"].params)
    assert not _moved(states["encoder"].params, new["encoder"].params)
    assert not _moved(states["decoder"].params, new["decoder"].params)
    assert np.isfinite(float(metrics["loss/adversary_nll"]))


@pytest.mark.parametrize("method", ["csvae", "condvae_info"])
def test_encoder_adversarial_term_moves_only_the_encoder(method):
    """beta4 alone (M2 for csvae, -CE for condvae_info): the encoder moves, the adversary and
    the decoder do not."""
    c = _config(method, **{"loss.reconstruction": 0.0, "loss.kl_z": 0.0,
                           "loss.encoder_adversarial": 10.0, "loss.adversary": 0.0})
    if "kl_w" in c.loss:                     # condvae_info has no w prior (config_keys)
        c.loss.kl_w = 0.0
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    new, _ = jax.jit(m.train_step, static_argnums=3)(states, _batch(c), jax.random.PRNGKey(1), 0)
    assert _moved(states["encoder"].params, new["encoder"].params)
    assert not _moved(states["adversary"].params, new["adversary"].params)
    assert not _moved(states["decoder"].params, new["decoder"].params)


def test_m2_is_the_negative_entropy_and_raising_it_is_what_the_encoder_avoids():
    from latent_jax.methods import csvae

    logits = jnp.array([[0.0], [3.0], [-3.0]])
    ne = csvae.bernoulli_neg_entropy(logits)[:, 0]
    p = jax.nn.sigmoid(logits[:, 0])
    np.testing.assert_allclose(ne, p * np.log(p) + (1 - p) * np.log(1 - p), rtol=1e-5)
    assert float(ne[0]) == pytest.approx(-np.log(2.0), rel=1e-5)   # maximal entropy: minimal M2
    assert float(ne[1]) > float(ne[0])


def test_gaussian_kl_matches_closed_form_and_priors_follow_the_label():
    from latent_jax.methods import csvae

    kl = csvae.gaussian_kl(jnp.array(1.0), jnp.log(jnp.array(0.25)), 3.0, 2.0)
    expected = np.log(2.0 / 0.5) + (0.25 + 4.0) / 8.0 - 0.5
    assert float(kl) == pytest.approx(expected, rel=1e-5)
    m, _ = _method(_config("csvae"))
    mean, std = m.prior_of_w(jnp.array([[1.0], [0.0]]))
    np.testing.assert_allclose(mean, [[0, 0], [3, 3]])
    np.testing.assert_allclose(std, [[0.1, 0.1], [1, 1]])


@pytest.mark.parametrize("method", METHODS)
def test_loss_decreases_on_the_swiss_roll(method):
    c = _config(method)
    m, _ = _method(c)
    from latent_jax.data import pipeline

    it = pipeline.make_train_iterator(c.data, global_batch_size=32, seed=0)
    step = jax.jit(m.train_step, static_argnums=3)
    states = m.init(jax.random.PRNGKey(0))
    losses = []
    for i in range(120):
        batch = {k: jnp.asarray(v) for k, v in next(it).items()}
        states, metrics = step(states, batch, jax.random.PRNGKey(i), 0)
        losses.append(float(metrics["loss/reconstruction"]))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses[::10]


def _capture_code(m):
    """Makes decode_code return the decoder's input, so edits expose the code they decode."""
    m.decode_code = lambda states, code: code
    return m


def _jit_edit(m):
    return jax.jit(m.edit, static_argnames=("strength",))


def _with_class_means(m, states, means):
    """Sets the running class statistics so that class_means() returns `means` [k, 2, d]."""
    enc = states["encoder"]
    latent = dict(enc.buffers["class_stats"])
    latent["count"] = jnp.ones_like(latent["count"])
    latent["sum"] = jnp.asarray(means, jnp.float32)
    states = dict(states)
    states["encoder"] = enc.replace(buffers={"class_stats": latent})
    np.testing.assert_allclose(m.class_means(states), means)
    return states


def test_csvae_edit_sets_the_label_subspace_to_the_target_class_mean():
    c = _config("csvae", preset="synthetic_glassesfacialhair")
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    k, d = 2, 2
    means = np.arange(k * 2 * k * d, dtype=np.float32).reshape(k, 2, k * d)
    states = _with_class_means(m, states, means)
    x = _batch(c, 8)["image"][:3]
    _capture_code(m)
    changes = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    edit = _jit_edit(m)
    code = np.asarray(edit(states, x, changes))
    w = code[:, :k * d]
    np.testing.assert_allclose(w[0, :2], means[0, 1, :2])      # add Eyeglasses: W_0 <- m(y0=1)
    np.testing.assert_allclose(w[1, :2], means[0, 0, :2])      # remove: W_0 <- m(y0=0)
    np.testing.assert_allclose(w[2, 2:], means[1, 1, 2:])      # add FacialHair: W_1 <- m(y1=1)
    # z comes from q(z|x) unchanged, and the untouched subspace keeps its encoding
    y_src = jax.jit(m.infer_labels)(states, x, changes)
    posts = jax.jit(m.posteriors)(states, x, y_src)
    np.testing.assert_allclose(code[:, k * d:], posts["z"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w[0, 2:], posts["w"][0][0, 2:], rtol=1e-5, atol=1e-6)
    # strength s interpolates/extrapolates from the source class mean
    code2 = np.asarray(edit(states, x, changes, strength=2.0))
    np.testing.assert_allclose(code2[0, :2], means[0, 0, :2] + 2 * (means[0, 1, :2] - means[0, 0, :2]))


def test_vae_and_condvae_edits_follow_section_4_3():
    c = _config("vae", preset="synthetic_glasses")
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    dim = m.latent_dim
    means = np.random.default_rng(0).normal(size=(1, 2, dim)).astype(np.float32)
    states = _with_class_means(m, states, means)
    x = _batch(c, 8)["image"][:2]
    mu = jax.jit(m.posteriors)(states, x, jnp.zeros((2, 1)))["z"][0]
    _capture_code(m)
    code = np.asarray(_jit_edit(m)(states, x, jnp.array([[1.0], [-1.0]])))
    np.testing.assert_allclose(code[0], mu[0] - means[0, 0] + means[0, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(code[1], mu[1] - means[0, 1] + means[0, 0], rtol=1e-5, atol=1e-5)

    c = _config("condvae", preset="synthetic_glasses")
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    _capture_code(m)
    code = np.asarray(_jit_edit(m)(states, x, jnp.array([[1.0], [-1.0]]), strength=2.5))
    np.testing.assert_allclose(code[:, -1], [2.5, 0.0])              # decoded with p * y^1
    mu_src = jax.jit(m.posteriors)(states, x, jnp.array([[0.0], [1.0]]))["z"][0]  # source y
    np.testing.assert_allclose(code[:, :-1], mu_src, rtol=1e-5, atol=1e-6)


def test_unchanged_labels_are_inferred_by_the_elbo():
    c = _config("condvae", preset="synthetic_glassesfacialhair")
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    x = _batch(c, 8)["image"][:4]
    changes = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = np.asarray(jax.jit(m.infer_labels)(states, x, changes))
    assert y[0, 0] == 0 and y[1, 0] == 1 and y[2, 1] == 0 and y[3, 1] == 1
    neg_elbo = jax.jit(m.neg_elbo)
    for i, l in ((0, 1), (1, 1), (2, 0), (3, 0)):
        e0 = neg_elbo(states, x, jnp.asarray(y).at[i, l].set(0.0))
        e1 = neg_elbo(states, x, jnp.asarray(y).at[i, l].set(1.0))
        assert y[i, l] == float(e1[i] < e0[i])


def test_csvae_grid_spans_both_prior_regions_and_pca_for_higher_dims():
    """The 2-D grid is centred between mu_1 = (0, 0) (y = 1) and mu_2 = (3, 3) (y = 0): both
    prior means lie inside it with at least 1.5 of margin (a grid around mu_2 alone put the
    positives' mean on its corner)."""
    c = _config("csvae", preset="synthetic_glasses")
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    pts = np.asarray(m.subspace_points(states, 0, 5, 3.0))
    assert pts.shape == (25, 2)
    np.testing.assert_allclose(pts.mean(0), [1.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(pts.min(0), [-1.5, -1.5], atol=1e-6)
    np.testing.assert_allclose(pts.max(0), [4.5, 4.5], atol=1e-6)
    for mean in ([0.0, 0.0], [3.0, 3.0]):
        assert np.all(pts.min(0) <= np.asarray(mean) - 1.5)
        assert np.all(pts.max(0) >= np.asarray(mean) + 1.5)
        assert np.min(np.linalg.norm(pts - np.asarray(mean), axis=-1)) < 0.8   # a point near it
    c = _config("csvae", preset="synthetic_glasses", **{
        "model.w_dim": 3, "prior.positive_mean": (0.0,) * 3, "prior.positive_std": (0.1,) * 3,
        "prior.negative_mean": (3.0,) * 3, "prior.negative_std": (1.0,) * 3})
    m, _ = _method(c)
    states = m.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(500, 3)) * [3.0, 0.5, 0.1] + [1, 2, 3]
    stats = {"sum": np.zeros((1, 2, 3)), "sq": np.zeros((1, 2, 3, 3)), "count": np.ones((1, 2))}
    stats["sum"][0, 1] = pos.mean(0)
    stats["sq"][0, 1] = pos.T @ pos / len(pos)
    enc = states["encoder"]
    states["encoder"] = enc.replace(buffers={"class_stats": jax.tree.map(jnp.asarray, stats)})
    pts = np.asarray(m.subspace_points(states, 0, 3, 0.0))
    np.testing.assert_allclose(pts[4], pos.mean(0), atol=1e-4)        # grid centre: the mean
    spread = pts[[0, 8]] - pos.mean(0)                                  # (-2, -2) and (2, 2)
    axis = spread[1] / np.linalg.norm(spread[1])
    assert abs(axis[0]) > 0.98                                          # along the top PCs


@pytest.mark.parametrize("key, override", [
    ("config.model.w_dim", {"model.w_dim": 0}),
    ("config.prior.positive_mean", {"prior.positive_mean": (0.0, 0.0, 0.0)}),
    ("config.prior.negative_std", {"prior.negative_std": (1.0, -1.0)}),
    ("config.loss.likelihood", {"loss.likelihood": "laplace"}),
    ("config.model.kind", {"model.kind": "transformer"}),
])
def test_bad_config_names_the_key(key, override):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _method(_config("csvae", **override))


def test_conv_net_on_points_is_refused_by_name():
    with pytest.raises(ValueError, match=r"config\.model\.kind"):
        _method(_config("vae", **{"model.kind": "conv"}))


def test_swiss_roll_generator_and_pipeline():
    from latent_jax.data import pipeline, swiss_roll

    src = swiss_roll.SwissRoll("train", seed=0, num_examples=5000)
    pts = src.points
    r = np.hypot(pts[:, 0], pts[:, 2])
    assert pts.shape == (5000, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(r, src.t, rtol=1e-5)                   # (t cos t, t sin t)
    assert 1.5 * np.pi <= src.t.min() and src.t.max() <= 4.5 * np.pi
    assert 0 <= pts[:, 1].min() and pts[:, 1].max() <= 21
    np.testing.assert_array_equal(src.labels, pts[:, 0] > 10)
    assert 0.05 < src.labels.mean() < 0.4
    test = swiss_roll.SwissRoll("test", seed=0, num_examples=100)
    assert not np.allclose(test.points[:5], pts[:5])                   # splits differ
    c = _config("csvae")
    spec = pipeline.get_data_spec(c.data)
    assert spec.image_shape == (3,) and spec.label_names == ("x_gt_10",)
    b = _batch(c)
    assert b["image"].shape == (32, 3) and float(jnp.max(jnp.abs(b["image"]))) > 5  # not /255
    np.testing.assert_array_equal(np.asarray(b["label"][:, 0]), np.asarray(b["image"][:, 0]) > 10)


def test_swiss_roll_matches_sklearn_distribution_when_available():
    sk = pytest.importorskip("sklearn.datasets")
    from latent_jax.data import swiss_roll

    ours, _ = swiss_roll.make_swiss_roll(20000, np.random.default_rng(0))
    theirs, _ = sk.make_swiss_roll(20000, random_state=0)
    np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=0.3)
    np.testing.assert_allclose(ours.std(0), theirs.std(0), rtol=0.03)
    assert abs((ours[:, 0] > 10).mean() - (theirs[:, 0] > 10).mean()) < 0.02


def test_logistic_probe():
    sys.path.insert(0, os.path.join(tiny.REPO, "launch"))
    import swiss_roll as sr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    y = x[:, 0] + 0.5 * x[:, 1] > 0.3
    assert sr.probe_accuracy(x[:1000], y[:1000], x[1000:], y[1000:]) > 0.97
    noise = rng.normal(size=(2000, 2))
    acc = sr.probe_accuracy(noise[:1000], y[:1000], noise[1000:], y[1000:])
    assert acc < max(y[1000:].mean(), 1 - y[1000:].mean()) + 0.05


@pytest.mark.parametrize("method", METHODS)
def test_methods_train_through_the_shared_trainer(method, tmp_path):
    from latent_jax import train

    c = _config(method, num_steps=3)
    train.train_and_evaluate(c, str(tmp_path / method))
    with open(tmp_path / method / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert os.path.isdir(tmp_path / method / "checkpoints" / "3")


def test_csvae_conv_run_writes_attribute_transfer_grids(tmp_path):
    from latent_jax import train

    c = _config("csvae", preset="synthetic_glassesfacialhair", num_steps=2)
    train.train_and_evaluate(c, str(tmp_path / "run"))
    pngs = os.listdir(tmp_path / "run" / "images")
    for name in ("attribute_grid_Eyeglasses", "attribute_grid_FacialHair",
                 "attribute_grid_Eyeglasses_FacialHair", "edits"):
        assert any(p.startswith(name) for p in pngs), (name, pngs)


def test_pooled_edit_success_weights_both_directions():
    from latent_jax.evaluate import metrics

    class Judge:
        attribute_names = ("Eyeglasses", "Smiling")

        def index(self, name):
            return self.attribute_names.index(name)

        def predict(self, x):
            return np.stack([x[:, 0, 0, 0] > 0.5, np.zeros(len(x), bool)], -1)

    class Caps:
        def edit(self, x, changes):   # adds glasses to every image, removes none
            out = x.copy()
            out[:, 0, 0, 0] = 1.0
            return out

    labels = np.array([[0.0]] * 6 + [[1.0]] * 3)
    images = np.zeros((9, 2, 2, 3), np.float32)
    images[6:, 0, 0, 0] = 1.0
    data = metrics.EvalSet(images=images, attributes=np.concatenate([labels, 0 * labels], 1),
                           attribute_names=Judge.attribute_names, labels=labels,
                           label_names=("Eyeglasses",))
    pred = Judge().predict(images)
    res = metrics.edit_metrics(Caps(), Judge(), data, pred, pred)
    assert res["settings"][0]["success"] == 1.0 and res["settings"][1]["success"] == 0.0
    assert res["pooled_success"]["Eyeglasses"] == pytest.approx(6 / 9)   # Table 4's "final"
    assert res["edit_success_pooled"] == pytest.approx(6 / 9)
