"""IntroVAC / VAC against hand computations: the classification loss over the n + 1 outputs,
the residual block's order, re-encodings at the posterior mean, and Sec. 4.2's edits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from latent_jax import data as data_lib
from latent_jax.methods import introvac as introvac_lib
from latent_jax.nets import resnet


def _build(labels=("Eyeglasses",), **extra):
    c = tiny.config(**extra)
    c.data.labels = labels
    c.data.read_threads = 0
    spec = data_lib.get_data_spec(c.data)
    cls = introvac_lib.IntroVAC if c.introspection.enabled else introvac_lib.VAC
    method = cls(c, spec, 8)
    return c, method, method.init(jax.random.PRNGKey(0))


def _batch(c, n=8, seed=3):
    rng = np.random.default_rng(seed)
    h = int(c.data.image_size)
    return {"image": jnp.asarray(rng.uniform(size=(n, h, h, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 2, size=(n, len(c.data.labels))), jnp.float32)}


def _bce(logits, targets):
    logits = np.asarray(logits, np.float64)
    return np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


def test_classification_loss_trains_the_fake_logit_on_real_images():
    """Phase 0 (pre-training) sees only real images: L_CL is the mean BCE of all n + 1 outputs
    against [y, real], so the fake column of C gets a gradient. With the old loss (the n
    attribute logits only) that gradient was exactly zero and the loss a mean over n entries."""
    c, method, states = _build(**{"optim.classifier.name": "sgd",
                                  "optim.classifier.learning_rate": "1.0",
                                  "optim.classifier.weight_decay": "0.0"})
    # A classifier whose fake logit is far from zero, so both terms are visible.
    kernel = states["classifier"].params["linear"]["kernel"]
    kernel = kernel.at[:, -1].set(jnp.linspace(-1.0, 1.0, kernel.shape[0]))
    states = dict(states, classifier=states["classifier"].replace(
        params={"linear": {"kernel": kernel}}))
    batch = _batch(c)
    rng = jax.random.PRNGKey(5)
    new_states, metrics = jax.jit(method.train_step, static_argnums=(3,))(states, batch, rng, 0)

    # The code the step classifies: its own sample of q(z|x) in training mode.
    k_eps = jax.random.split(rng, 6)[0]
    mu, logvar, _ = method._encode_train(states["encoder"].params,
                                         states["encoder"].batch_stats, batch["image"])
    z = np.asarray(mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mu.shape), np.float64)
    logits = z @ np.asarray(kernel, np.float64)
    n, k = logits.shape
    targets = np.concatenate([np.asarray(batch["label"]), np.zeros((n, 1))], axis=-1)
    np.testing.assert_allclose(float(metrics["loss/classification"]),
                               _bce(logits, targets).mean(), rtol=1e-5)
    # SGD with lr 1: the change of C's kernel is minus its gradient, beta_CL * dL_CL/dW.
    expected_grad = float(c.loss.classification) * z.T @ (
        (1.0 / (1.0 + np.exp(-logits)) - targets) / (n * k))
    delta = np.asarray(new_states["classifier"].params["linear"]["kernel"] - kernel)
    np.testing.assert_allclose(-delta, expected_grad, rtol=1e-4, atol=1e-7)
    assert np.abs(delta[:, -1]).max() > 1e-3


def test_vac_has_no_fake_logit_and_averages_over_the_labels():
    c, method, states = _build(**{"introspection.enabled": "False"})
    assert states["classifier"].params["linear"]["kernel"].shape[-1] == 1
    logits = jnp.asarray([[0.3], [-1.2]])
    y = jnp.asarray([[1.0], [0.0]])
    np.testing.assert_allclose(float(method.classification_loss(logits, y)),
                               _bce(logits, np.asarray(y)).mean(), rtol=1e-6)


def test_residual_block_adds_the_identity_after_the_second_activation():
    """The reference's block: identity + lrelu(bn(conv(lrelu(bn(conv(x)))))). A 1x1 map makes
    each 3x3 conv a product with its centre tap: x = 2, taps +1 and -1, BatchNorm at its
    initial running statistics (x / sqrt(1 + eps)): out = 2 + lrelu(-2 / (1 + eps)) = 1.6.
    The post-activation order lrelu(h + identity) would give lrelu(2 - 2 / (1 + eps)) ~ 0."""
    block = resnet.ResidualBlock(1)
    x = jnp.full((1, 1, 1, 1), 2.0)
    variables = block.init(jax.random.PRNGKey(0), x, train=False)
    params = jax.tree.map(lambda a: a, variables["params"])
    tap = lambda v: jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(v)  # noqa: E731
    params["conv1"]["kernel"] = tap(1.0)
    params["conv2"]["kernel"] = tap(-1.0)
    out = float(block.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            x, train=False)[0, 0, 0, 0])
    eps = 1e-5
    h = -(2.0 / np.sqrt(1 + eps)) / np.sqrt(1 + eps)
    assert out == pytest.approx(2.0 + 0.2 * h, rel=1e-5)
    assert out == pytest.approx(1.6, abs=1e-4)


def test_reencoded_images_are_classified_at_the_posterior_mean():
    c, method, states = _build()
    x = _batch(c)["image"]
    enc, cls = states["encoder"], states["classifier"]
    args = (enc.params, enc.batch_stats, cls.params, x)
    a = method._reencode_logits(*args, jax.random.PRNGKey(1))
    b = method._reencode_logits(*args, jax.random.PRNGKey(2))
    mu, _, _ = method._encode_train(enc.params, enc.batch_stats, x)
    logits = method.classifier.apply({"params": cls.params}, mu)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_allclose(np.asarray(a[1]), np.asarray(logits[:, -1]), rtol=1e-6)

    c2, sampled, _ = _build(**{"introspection.reencode": "sample"})
    s1 = sampled._reencode_logits(*args, jax.random.PRNGKey(1))
    s2 = sampled._reencode_logits(*args, jax.random.PRNGKey(2))
    assert not np.allclose(np.asarray(s1[1]), np.asarray(s2[1]))


def test_unknown_reencode_choice_names_the_key():
    c = tiny.config(**{"introspection.reencode": "median"})
    spec = data_lib.get_data_spec(c.data)
    with pytest.raises(ValueError, match="config.introspection.reencode"):
        introvac_lib.IntroVAC(c, spec, 8)


def test_edits_move_by_delta_along_the_renormalised_sum_of_directions():
    """Sec. 4.2: one attribute moves mu by `strength` along its unit normal; two attributes move
    it by `strength_multi` along the renormalised sum of their unit normals (the reference),
    not by the unnormalised sum's length."""
    c, method, states = _build(labels=("Eyeglasses", "Smiling"),
                               **{"edit.strength": "4.0", "edit.strength_multi": "5.0"})
    w = np.zeros((method.latent_dim, 3), np.float32)
    w[0, 0], w[1, 1] = 2.0, 0.5   # orthogonal rows of different lengths; column 2 is "fake"
    states = dict(states, classifier=states["classifier"].replace(
        params={"linear": {"kernel": jnp.asarray(w)}}))
    z = jnp.asarray(np.random.default_rng(0).normal(size=(4, method.latent_dim)), jnp.float32)
    changes = jnp.asarray([[1, 0], [0, -1], [1, 1], [0, 0]], jnp.float32)
    moved = np.asarray(method.edit_latent(states, z, changes) - z)
    np.testing.assert_allclose(moved[0, :2], [4.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(moved[1, :2], [0.0, -4.0], atol=1e-5)
    np.testing.assert_allclose(moved[2, :2], [5.0 / np.sqrt(2)] * 2, atol=1e-5)
    np.testing.assert_allclose(moved[3], 0.0, atol=0)
    np.testing.assert_allclose(np.linalg.norm(moved, axis=-1), [4.0, 4.0, 5.0, 0.0], atol=1e-5)
    # An explicit strength applies to every row.
    forced = np.asarray(method.edit_latent(states, z, changes, strength=2.0) - z)
    np.testing.assert_allclose(np.linalg.norm(forced, axis=-1), [2.0, 2.0, 2.0, 0.0], atol=1e-5)


def test_eyefacial_preset_uses_the_papers_two_strengths():
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg_introvac", tiny.CONFIG.split(":")[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    eye, facial, both = (mod.get_config(p) for p in ("celeba_eye", "celeba_facial",
                                                    "celeba_eyefacial"))
    assert (eye.edit.strength, facial.edit.strength) == (3.0, 4.0)
    assert (both.edit.strength, both.edit.strength_multi) == (4.0, 5.0)
