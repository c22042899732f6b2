"""CCVAE, DIVA and M2: the bounds against direct computations, interventions, walks, and
semi-supervised training through the shared trainer."""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from latent_jax import data as data_lib
from latent_jax.methods import ccvae as ccvae_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ("Male", "Smiling", "Eyeglasses", "Hair_MULTI")


def tiny_config(method="ccvae", fraction=0.5, **extra):
    spec = importlib.util.spec_from_file_location(f"cfg_{method}",
                                                  os.path.join(REPO, "configs", f"{method}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(f"synthetic,{fraction}")
    if "num_classifier_samples" in c.loss:    # M2 reads no classifier sampling (config_keys)
        c.loss.num_classifier_samples = 7
    c.update_from_flattened_dict({
        "data.image_size": 16, "data.labels": LABELS, "data.synthetic.num_train": 64,
        "data.synthetic.num_validation": 16, "data.synthetic.num_test": 16,
        "data.read_threads": 0, "data.prefetch": 0,
        "model.channels": (8, 16), "model.top": 16, "model.free_dims": 3,
        "batch_size": 8, "num_steps": 6,
        "evaluate_at_end": False, "log_every_steps": 1, "checkpoint.every_steps": 2,
        "checkpoint.asynchronous": False, "grid_size": 2, **extra})
    return c


def build(method="ccvae", **extra):
    c = tiny_config(method, **extra)
    spec = data_lib.get_data_spec(c.data)
    m = ccvae_lib.CCVAE if method == "ccvae" else (ccvae_lib.DIVA if method == "diva"
                                                    else ccvae_lib.M2)
    method_obj = m(c, spec, 8)
    states = method_obj.init(jax.random.PRNGKey(0))
    return c, method_obj, states


def _perturbed(states, key=1, scale=0.5):
    """Random non-trivial parameters (the initial classifier weights are all ones)."""
    params = states["model"].params
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(key), len(leaves))
    leaves = [l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def _manual_log_q(params, z_c, y, method):
    """sum_i log q(y_i|z_c^i) straight from the classifier parameters (numpy)."""
    cls = jax.device_get(params["classifier"])
    total = np.zeros(z_c.shape[:-1])
    for i, name in enumerate(method.label_names):
        zi = np.asarray(z_c[..., i:i + 1], np.float64)
        if method.layout.categorical[i]:
            k = np.asarray(cls[f"label{i}"]["kernel"], np.float64)
            b = np.asarray(cls[f"label{i}"]["bias"], np.float64)
            logits = zi @ k + b
            logits = logits - logits.max(-1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            total += np.take_along_axis(logp, np.broadcast_to(
                y[:, i].astype(int), logp.shape[:-1])[..., None], -1)[..., 0]
        else:
            logit = zi[..., 0] * float(cls[f"w{i}"][0]) + float(cls[f"b{i}"])
            p = 1.0 / (1.0 + np.exp(-logit))
            total += np.where(y[:, i] > 0.5, np.log(p), np.log1p(-p))
    return total


def test_log_q_y_given_x_is_the_k_sample_estimate():
    _, m, states = build()
    params = _perturbed(states)
    rng = np.random.default_rng(0)
    b = 5
    loc = jnp.asarray(rng.normal(size=(b, 4)), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.3, 1.5, size=(b, 4)), jnp.float32)
    y = np.array([[1, 0, 1, 2], [0, 0, 0, 5], [1, 1, 0, 0], [0, 1, 1, 3], [1, 1, 1, 1]],
                 np.float32)
    key = jax.random.PRNGKey(3)
    got = np.asarray(m.log_q_y_given_x(params, loc, scale, jnp.asarray(y), key))
    z = np.asarray(loc)[None] + np.asarray(scale)[None] * np.asarray(
        jax.random.normal(key, (7, b, 4)))
    per = _manual_log_q(params, z, y, m)                     # [K, B]
    expected = np.log(np.mean(np.exp(per), axis=0))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # a vanishing posterior scale: q(y|x) -> q(y|z_c = loc)
    tight = np.asarray(m.log_q_y_given_x(params, loc, scale * 1e-6, jnp.asarray(y), key))
    np.testing.assert_allclose(tight, _manual_log_q(params, np.asarray(loc), y, m), atol=1e-4)


def test_supervised_bound_weight_and_terms_match_a_direct_computation():
    _, m, states = build()
    params = _perturbed(states)
    rng = np.random.default_rng(1)
    b = 4
    loc_c = jnp.asarray(rng.normal(size=(b, 4)), jnp.float32)
    scale_c = jnp.asarray(rng.uniform(0.5, 1.0, size=(b, 4)), jnp.float32)
    z_c = loc_c + 0.3
    y = np.array([[1, 0, 1, 2], [0, 0, 0, 5], [1, 1, 0, 0], [0, 1, 1, 3]], np.float32)
    lq, kls, log_py = m.label_terms(params, loc_c, scale_c, z_c)
    log_px = jnp.asarray(rng.normal(-50, 5, size=b), jnp.float32)
    kl_free = jnp.asarray(rng.uniform(0, 3, size=b), jnp.float32)
    key = jax.random.PRNGKey(9)
    bound, extra = m.supervised_bound(
        params, (log_px, kl_free, lq, kls, log_py, loc_c, scale_c, z_c), jnp.asarray(y), key)
    # direct: KL of each label's 1-D Gaussian against its class's prior entry
    locs, scales = (jax.device_get(t) for t in m.prior_tables({"model": states["model"].replace(
        params=params)}))
    kl_c = np.zeros(b)
    for i in range(4):
        c = y[:, i].astype(int)
        mq, sq = np.asarray(loc_c[:, i], np.float64), np.asarray(scale_c[:, i], np.float64)
        mp, sp = np.asarray(locs[i])[c, 0], np.asarray(scales[i])[c, 0]
        kl_c += np.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5
    log_qyzc = _manual_log_q(params, np.asarray(z_c), y, m)
    log_qyx = np.asarray(m.log_q_y_given_x(params, loc_c, scale_c, jnp.asarray(y), key))
    freqs = data_lib.label_frequencies(tiny_config().data)
    log_p_y = sum(np.log(np.clip(freqs[n][y[:, i].astype(int)], 1e-6, None))
                  for i, n in enumerate(LABELS))
    w = np.exp(log_qyzc - log_qyx)
    # sampled (default): log N(z_c; prior of y) - log N(z_c; q) at the z_c that w sees
    def log_n(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
    log_ratio = np.zeros(b)
    for i in range(4):
        c = y[:, i].astype(int)
        zi = np.asarray(z_c[:, i], np.float64)
        log_ratio += (log_n(zi, np.asarray(locs[i])[c, 0], np.asarray(scales[i])[c, 0])
                      - log_n(zi, np.asarray(loc_c[:, i]), np.asarray(scale_c[:, i])))
    expected = (w * (np.asarray(log_px) - np.asarray(kl_free) + log_ratio - log_qyzc)
                + log_qyx + log_p_y)
    np.testing.assert_allclose(np.asarray(extra["train/weight"]), w, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(bound), expected, rtol=1e-4, atol=1e-3)
    m.weighted_kl = "analytic"
    bound_a, _ = m.supervised_bound(
        params, (log_px, kl_free, lq, kls, log_py, loc_c, scale_c, z_c), jnp.asarray(y), key)
    expected_a = (w * (np.asarray(log_px) - np.asarray(kl_free) - kl_c - log_qyzc)
                  + log_qyx + log_p_y)
    np.testing.assert_allclose(np.asarray(bound_a), expected_a, rtol=1e-4, atol=1e-3)
    m.weighted_kl = "sampled"
    # the weight passes no gradient to z_c (the encoder); the bound's other terms do
    def weight_of(zc):
        _, ex = m.supervised_bound(params, (log_px, kl_free, lq, kls, log_py, loc_c, scale_c,
                                            zc), jnp.asarray(y), key)
        return jnp.sum(ex["train/weight"])
    assert not np.any(np.asarray(jax.grad(weight_of)(z_c)))


def test_unsupervised_terms_enumerate_categorical_and_sample_binary_labels():
    _, m, states = build()
    params = _perturbed(states)
    rng = np.random.default_rng(2)
    b = 3
    loc_c = jnp.asarray(rng.normal(size=(b, 4)), jnp.float32)
    scale_c = jnp.asarray(rng.uniform(0.5, 1.0, size=(b, 4)), jnp.float32)
    lq, kls, log_py = m.label_terms(params, loc_c, scale_c, loc_c)
    exact = []
    for i in range(4):
        q = np.exp(np.asarray(lq[i], np.float64))
        np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)   # a distribution over classes
        inner = np.asarray(log_py[i])[None] - np.asarray(lq[i]) - np.asarray(kls[i])
        exact.append(sum(q[:, c] * inner[:, c] for c in range(q.shape[1])))
    # the categorical label alone (index 3) is enumerated: exact, whatever the key
    only_cat = ccvae_lib.CCVAE.unsupervised_label_terms
    got = [np.asarray(only_cat(m, lq, kls, log_py, jax.random.PRNGKey(s))) for s in range(400)]
    got = np.stack(got)                                        # [S, B]
    binary_part = sum(exact[:3])
    # Monte Carlo over the binary labels' samples converges to their exact expectation
    np.testing.assert_allclose(got.mean(0), binary_part + exact[3], rtol=0.05, atol=0.3)
    assert got.std(0).max() > 1e-3                             # the binary labels are sampled
    lq_bin_fixed = [jnp.log(jnp.stack([jnp.zeros(b), jnp.ones(b)], -1) + 1e-30)
                    if i < 3 else lq[i] for i in range(4)]     # certain binary labels
    got_fixed = np.stack([np.asarray(only_cat(m, lq_bin_fixed, kls, log_py,
                                                jax.random.PRNGKey(s))) for s in range(5)])
    assert np.ptp(got_fixed, axis=0).max() < 1e-4              # nothing random left: enumeration


def test_p_y_is_the_supervised_label_frequency():
    c, m, _ = build(fraction=0.25)
    freqs = data_lib.label_frequencies(c.data)
    for i, n in enumerate(LABELS):
        np.testing.assert_allclose(np.exp(m.log_py[i]), np.clip(freqs[n], 1e-6, None), rtol=1e-5)
    sup = data_lib.supervised_positions(64, 0.25, 0)
    src = data_lib.make_source(c.data, "train")
    male = np.mean([src[int(i)]["label"][0] for i in sup])
    np.testing.assert_allclose(np.exp(m.log_py[0][1]), male, rtol=1e-5)


def test_intervention_moves_only_the_edited_labels_z_c():
    _, m, states = build()
    states = {"model": states["model"].replace(params=_perturbed(states))}
    locs, _ = m.prior_tables(states)
    z = jax.random.normal(jax.random.PRNGKey(4), (3, m.latent_dim))
    changes = jnp.zeros((3, 4)).at[:, 1].set(jnp.array([1.0, -1.0, 0.0]))
    out = m.edit_latent(states, z, changes, strength=1.0)
    diff = np.abs(np.asarray(out - z))
    assert diff[:, [0, 2, 3]].max() == 0 and diff[:, 4:].max() == 0
    np.testing.assert_allclose(out[0, 1], locs[1][1, 0], rtol=1e-6)
    np.testing.assert_allclose(out[1, 1], locs[1][0, 0], rtol=1e-6)
    assert diff[2].max() == 0
    half = m.edit_latent(states, z, changes, strength=0.5)
    np.testing.assert_allclose(half[0, 1], (z[0, 1] + locs[1][1, 0]) / 2, rtol=1e-5)
    # and the decoded edit is the decode of that latent
    x = jax.random.uniform(jax.random.PRNGKey(5), (3, 16, 16, 3))
    np.testing.assert_allclose(
        m.edit(states, x, changes), m.decode(states, m.edit_latent(
            states, m.encode(states, x), changes)), atol=1e-6)


def test_latent_walks_use_each_labels_own_limits():
    _, m, states = build()
    states = {"model": states["model"].replace(params=_perturbed(states))}
    locs, _ = m.prior_tables(states)
    for i in range(3):
        v = m.walk_values(states, i, 5)
        np.testing.assert_allclose(v[0], locs[i][0], rtol=1e-6)
        np.testing.assert_allclose(v[-1], locs[i][1], rtol=1e-6)
        assert not np.allclose(v[-1], locs[3][1])
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 16, 16, 3))
    walk = m.latent_walk(states, x, 0, 3)
    np.testing.assert_allclose(walk[-1], m.intervene(states, x, 0, locs[0][1]), atol=1e-4)
    pair = m.latent_walk_pair(states, x, 0, 2, 3)
    assert pair.shape == (3, 3, 2, 16, 16, 3)
    z = m.encode(states, x).at[:, 0].set(locs[0][0, 0]).at[:, 2].set(locs[2][1, 0])
    np.testing.assert_allclose(pair[0, -1], m.decode(states, z), atol=1e-4)


def test_diva_supervised_bound_uses_the_auxiliary_classifier_weight():
    _, m, states = build("diva", **{"loss.classifier_weight": 10.0})
    params = _perturbed(states)
    rng = np.random.default_rng(3)
    loc_c = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    scale_c = jnp.ones((2, 4))
    y = jnp.asarray([[1, 0, 1, 2], [0, 1, 0, 4]], jnp.float32)
    lq, kls, log_py = m.label_terms(params, loc_c, scale_c, loc_c)
    parts = (jnp.zeros(2), jnp.zeros(2), lq, kls, log_py, loc_c, scale_c, loc_c)
    b10, _ = m.supervised_bound(params, parts, y, None)
    m.alpha = 0.0
    b0, _ = m.supervised_bound(params, parts, y, None)
    log_qyz = _manual_log_q(params, np.asarray(loc_c), np.asarray(y), m)
    np.testing.assert_allclose(np.asarray(b10 - b0), 10.0 * log_qyz, rtol=1e-4)


def test_the_trainer_does_not_name_methods():
    src = open(os.path.join(REPO, "latent_jax", "train.py")).read().lower()
    for name in ("ccvae", "diva", "'m2'", '"m2"', "introvac", "labeled"):
        assert name not in src


def test_m2_posterior_scale_sees_only_the_image():
    """M2's q(z|y, x) (Kingma et al.; report App. A.1): mean mu(y, x), scale sigma(x). Changing
    the label input moves the location and leaves the scale unchanged."""
    c, method, states = build("m2")
    params = _perturbed(states)
    x = jax.random.uniform(jax.random.PRNGKey(2), (4, 16, 16, 3))
    y0 = jnp.zeros((4, len(LABELS)))
    y1 = y0.at[:, 0].set(1.0).at[:, 3].set(2.0)
    from latent_jax.methods.ccvae import M2Model
    loc0, scale0 = method._apply(params, M2Model.encode, x, method.y_code(y0))
    loc1, scale1 = method._apply(params, M2Model.encode, x, method.y_code(y1))
    np.testing.assert_array_equal(np.asarray(scale0), np.asarray(scale1))
    assert np.abs(np.asarray(loc0 - loc1)).max() > 1e-4
