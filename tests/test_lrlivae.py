"""Lr-LiVAE (paper 002) and its baselines: the losses against hand computations, which player
each term reaches, the GM steps inside one iteration, the capabilities' class handling."""

from __future__ import annotations

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tiny
from latent_jax import train
from latent_jax.errors import ConfigError
from latent_jax.methods import lrlivae as lr


def config_module(name="lrlivae"):
    path = os.path.join(tiny.REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"lrlivae_test_cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def config(name="lrlivae", preset="tiny", **overrides):
    c = config_module(name).get_config(preset)
    c.update_from_flattened_dict(overrides)
    return c


def experiment(tmp_path, name="lrlivae", **overrides):
    return train.Experiment(config(name, **overrides), str(tmp_path / "run"))


def one_step(exp, states, seed=0):
    it = train.data_lib.make_train_iterator(exp.data, global_batch_size=int(exp.config.batch_size),
                                            seed=seed)
    batch = exp.next_batch(it)
    # The step donates its input states: step a copy, so that `states` can be compared.
    new, metrics, _ = exp.step_fn(0)(jax.tree.map(lambda a: a.copy(), states), batch,
                                     jax.random.PRNGKey(seed))
    return batch, new, metrics


def _changed(a, b):
    return any(not np.allclose(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------ classes
def test_joint_classes_round_trip_and_edit_targets():
    classes = lr.JointClasses(("Eyeglasses", "Hair_MULTI", "Smiling"))
    assert classes.radices == (2, 6, 2) and classes.num_classes == 24
    c = jnp.arange(24)
    np.testing.assert_array_equal(classes.index(classes.labels(c)), c)
    np.testing.assert_array_equal(classes.labels(c), classes.table())
    src = classes.index(jnp.asarray([[0.0, 5.0, 1.0], [1.0, 0.0, 0.0]]))
    changes = jnp.asarray([[1.0, 1.0, -1.0], [-1.0, -1.0, 0.0]])
    np.testing.assert_array_equal(classes.labels(classes.target(src, changes)),
                                  [[1, 0, 0], [0, 5, 0]])   # categorical moves cyclically


def test_per_label_columns_marginalise_the_joint_posterior():
    classes = lr.JointClasses(("Eyeglasses", "Smiling"))          # classes (g, s) -> 2g + s
    p = np.asarray([[0.1, 0.2, 0.3, 0.4]])
    cols = np.asarray(lr.per_label_columns(jnp.log(jnp.asarray(p)), classes))
    np.testing.assert_allclose(cols[0], [math.log(0.7 / 0.3), math.log(0.6 / 0.4)], rtol=1e-5)


# ------------------------------------------------------------------------------ losses
def test_gm_loss_is_the_papers_in_log_space_and_keeps_its_gradient_far_from_the_means():
    """Eq. 7-8 against a float64 hand computation; 300 units away from every mean (where the
    reference's product of densities underflows to 0 and its +1e-4 floor gives a constant loss
    with zero gradient) the loss stays finite and its gradient is not zero."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 4))
    log_var = rng.normal(scale=0.3, size=(3, 4))
    z = rng.normal(size=(5, 4))
    c = np.asarray([0, 1, 2, 1, 0])
    l_cls, l_lkd, _ = lr.LrLiVAE.gm_terms(None, jnp.asarray(z), jnp.asarray(means),
                                          jnp.asarray(log_var), jnp.asarray(c))
    var = np.exp(log_var)
    logn = np.stack([-0.5 * np.sum((z - means[k]) ** 2 / var[k] + np.log(2 * np.pi * var[k]),
                                   -1) for k in range(3)], -1)
    post = np.exp(logn) / np.exp(logn).sum(-1, keepdims=True)
    np.testing.assert_allclose(l_lkd, -logn[np.arange(5), c], rtol=1e-5)
    np.testing.assert_allclose(l_cls, -np.log(post[np.arange(5), c]), rtol=1e-4)

    far = jnp.full((1, 4), 300.0)
    grad = jax.grad(lambda m: lr.LrLiVAE.gm_terms(None, far, m, jnp.asarray(log_var),
                                                  jnp.asarray([1]))[0][0])(jnp.asarray(means))
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 1e-3


def test_ambiguous_prior_is_the_mixtures_moments():
    """Eq. 11 with p(c) = 1/C: the mean and variance of the equal-weight mixture."""
    rng = np.random.default_rng(1)
    means, log_var = rng.normal(size=(4, 3)), rng.normal(scale=0.5, size=(4, 3))
    mu_t, log_var_t = lr.ambiguous_prior(jnp.asarray(means), jnp.asarray(log_var))
    draws = np.concatenate([m + np.exp(0.5 * lv) * rng.normal(size=(200_000, 3))
                            for m, lv in zip(means, log_var)])
    np.testing.assert_allclose(mu_t, draws.mean(0), atol=0.02)
    np.testing.assert_allclose(np.exp(log_var_t), draws.var(0), rtol=0.02)


def test_adversarial_losses_log_and_hinge():
    m = lr.LrLiVAE.__new__(lr.LrLiVAE)
    real, rec, prior = jnp.asarray([2.0]), jnp.asarray([-0.5]), jnp.asarray([0.5])
    m.adversarial = "log"
    sp = lambda v: math.log1p(math.exp(v))
    np.testing.assert_allclose(m._d_loss(real, rec, prior), sp(-2.0) + sp(-0.5) + sp(0.5),
                               rtol=1e-6)
    np.testing.assert_allclose(m._g_loss(rec, prior), sp(0.5) + sp(-0.5), rtol=1e-6)
    m.adversarial = "hinge"
    np.testing.assert_allclose(m._d_loss(real, rec, prior), 0.0 + 0.5 + 1.5, rtol=1e-6)
    np.testing.assert_allclose(m._g_loss(rec, prior), 0.5 - 0.5, atol=1e-7)


def test_paper_weights_are_computed_from_the_sizes(tmp_path):
    exp = experiment(tmp_path)
    m = exp.method
    h, w, _ = exp.spec.image_shape
    assert m.w_kl == pytest.approx(10.0 / (h * w)) and m.w_rec_u == pytest.approx(1.0 / m.du)
    assert m.w_lkd == 0.1


# ------------------------------------------------------------------------------ players
def test_one_iteration_makes_n_gm_plus_one_updates_of_encoder_s(tmp_path):
    """Algorithm 1 inside one jitted step: n_gm GM updates (each its own batch) then the
    end-to-end update; the optimizers count them, and the schedules use that count."""
    exp = experiment(tmp_path)          # the tiny preset: n_gm = 2
    assert exp.batches_per_step == 3
    assert exp.method.updates_per_step("encoder_s") == 3
    assert exp.method.updates_per_step("mixture") == 2
    assert exp.method.updates_per_step("encoder_s", "gm") == 2
    assert exp.method.updates_per_step("encoder_s", "end_to_end") == 1
    batch, new, metrics = one_step(exp, exp.init_states())
    assert batch["image"].shape[:2] == (int(exp.config.batch_size), 3)
    count = lambda opt_state: int(jax.tree.leaves(opt_state)[0])  # noqa: E731
    assert count(new["encoder_s"].opt_state["gm"]) == 2
    assert count(new["encoder_s"].opt_state["end_to_end"]) == 1
    assert count(new["mixture"].opt_state) == 2 and count(new["decoder"].opt_state) == 1
    # The reference reuses the last GM batch for the end-to-end update.
    assert experiment(tmp_path, **{"train.fresh_batch": False}).batches_per_step == 2
    assert "loss/gm_cls" in metrics and "loss/discriminator" in metrics


def _adam(opt_state):
    return next(s for s in opt_state if isinstance(s, optax.ScaleByAdamState))


def test_encoder_s_has_one_optimizer_state_per_loss(tmp_path):
    """As the reference's id_opt (L_GM) and id_rec_opt (the end-to-end loss), two Adam instances
    on one trunk: after one iteration (one GM step, then the end-to-end step) the 'gm' state is
    exactly a fresh Adam state updated by the GM gradient alone, and the 'end_to_end' state
    holds the end-to-end gradient alone (b1 = 0: first moment g, second (1 - b2) g^2). A state
    shared by both would hold both gradients in either. Other players keep one plain state."""
    exp = experiment(tmp_path, **{"train.n_gm": 1})
    m, init = exp.method, exp.init_states()
    batch, new, metrics = one_step(exp, init)
    opt = new["encoder_s"].opt_state
    assert set(opt) == {"gm", "end_to_end"}
    assert not isinstance(new["decoder"].opt_state, dict)

    sub = lr.sub_batch(batch, 0, 2)                     # the GM step's batch
    x, c = jnp.asarray(sub["image"]), m.classes.index(jnp.asarray(sub["label"]))
    means, log_var = m._mixture(init)
    p0 = init["encoder_s"].params

    def l_gm(p):                                          # Eq. 7-9 at the initial parameters
        l_cls, l_lkd, _ = m.gm_terms(m.encoder_s.apply({"params": p}, x), means, log_var, c)
        return jnp.mean(l_cls + m.w_lkd * l_lkd)

    g_gm = jax.grad(l_gm)(p0)
    tx = m.tx("encoder_s")["gm"]
    _, want = tx.update(g_gm, tx.init(p0), p0)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(opt["gm"])):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6 * float(np.abs(a).max()) + 1e-12)
    assert float(metrics["grad_norm/encoder_s_gm"]) == pytest.approx(
        float(lr.base.tree_l2(g_gm)), rel=1e-4)

    adam = _adam(opt["end_to_end"])
    assert int(adam.count) == 1
    assert float(lr.base.tree_l2(adam.mu)) == pytest.approx(
        float(metrics["grad_norm/encoder_s"]), rel=1e-5)
    for mu, nu in zip(jax.tree.leaves(adam.mu), jax.tree.leaves(adam.nu)):
        np.testing.assert_allclose(nu, 0.1 * np.square(mu), rtol=1e-5,
                                   atol=1e-6 * float(np.abs(nu).max()) + 1e-20)


def test_the_end_to_end_lkd_weight_changes_only_encoder_s_end_to_end_update(tmp_path):
    """`loss.lkd_end_to_end` (the reference's 1.0) weights L_lkd in line 25 only: the GM steps,
    the mixture and every other player update as with the paper's 0.1."""
    exp = experiment(tmp_path)
    assert exp.method.w_lkd_e2e == exp.method.w_lkd == 0.1
    init = exp.init_states()
    _, a, _ = one_step(exp, init)
    heavy = experiment(tmp_path, **{"loss.lkd_end_to_end": 1.0})
    assert heavy.method.w_lkd_e2e == 1.0 and heavy.method.w_lkd == 0.1
    _, b, _ = one_step(heavy, init)
    assert not _changed(a["encoder_s"].opt_state["gm"], b["encoder_s"].opt_state["gm"])
    for p in ("mixture", "encoder_u", "decoder", "latent_adversary", "discriminator"):
        assert not _changed(a[p], b[p]), p
    assert _changed(a["encoder_s"].opt_state["end_to_end"], b["encoder_s"].opt_state["end_to_end"])


def test_reference_presets_lower_only_the_log_variances_learning_rate(tmp_path):
    """Lr-LiVAE.py's lr_ipt: the precisions' LR / 10 every 10 of the reference's epochs of
    iterations (each reading n_gm batches: every 10 n_gm epochs here), the means' constant, in a
    group of the mixture's optimizer; the paper presets have no groups. The reference presets
    also weight the end-to-end L_lkd by 1.0."""
    mod = config_module()
    for preset in ("synthetic_reference", "identities_reference"):
        c = mod.get_config(preset)
        g = c.optim.mixture.groups.log_var
        assert tuple(g.params) == ("log_var",) and g.schedule.kind == "piecewise"
        assert tuple(g.schedule.boundaries_epochs[:2]) == (30, 60) and g.schedule.factor == 0.1
        assert c.loss.lkd_end_to_end == 1.0 and c.loss.lkd == 0.1
    assert mod.get_config("synthetic").optim.mixture.get("groups") is None

    cfg = mod.reference_choices(config())                 # tiny: n_gm = 2, every 20 epochs
    spec = train.data_lib.get_data_spec(cfg.data)
    m = lr.LrLiVAE(cfg, spec, steps_per_epoch=5)        # 5 * n_gm = 10 mixture updates per epoch
    tx = m.tx("mixture")
    params = {"means": jnp.zeros((2, 3)), "log_var": jnp.zeros((2, 3))}
    ones = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def lr_after(n):
        state = jax.lax.fori_loop(0, n, lambda _, s: tx.update(ones, s, params)[1],
                                  tx.init(params))
        return jax.tree.map(lambda u: -u[0, 0], tx.update(ones, state, params)[0])

    before, after = lr_after(199), lr_after(200)   # Adam's step at a constant gradient: the LR
    assert float(before["means"]) == pytest.approx(5e-4, rel=1e-5)
    assert float(before["log_var"]) == pytest.approx(5e-4, rel=1e-5)
    assert float(after["means"]) == pytest.approx(5e-4, rel=1e-5)
    assert float(after["log_var"]) == pytest.approx(5e-5, rel=1e-5)

    cfg.optim.mixture.groups.log_var.params = ("log_variance",)
    with pytest.raises(ConfigError, match="groups.log_var.params: no parameter 'log_variance'"):
        lr.LrLiVAE(cfg, spec, steps_per_epoch=5).tx("mixture").init(params)


def test_each_end_to_end_term_reaches_only_its_players(tmp_path):
    """With no GM steps: the mixture does not move in the end-to-end update (lines 25-29 do not
    update it); the GAN terms do not reach the encoders (the same encoder updates with and
    without them) but do reach the decoder; with the weights of encoder_u's terms at zero it
    does not move, though L_rec still reaches encoder_s and the decoder."""
    sgd = {f"optim.{p}.name": "sgd" for p in ("encoder_s", "mixture", "encoder_u",
                                              "latent_adversary", "decoder", "discriminator")}
    base_cfg = dict(sgd, **{"train.n_gm": 0})
    exp = experiment(tmp_path, **base_cfg)
    init = exp.init_states()
    _, with_gan, _ = one_step(exp, init)
    assert not _changed(init["mixture"], with_gan["mixture"])
    no_gan = experiment(tmp_path, **dict(base_cfg, **{"loss.generator_adversarial": 0.0}))
    _, without, _ = one_step(no_gan, init)
    for p in ("encoder_s", "encoder_u"):
        for a, b in zip(jax.tree.leaves(with_gan[p].params), jax.tree.leaves(without[p].params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert _changed(with_gan["decoder"].params, without["decoder"].params)

    frozen_u = experiment(tmp_path, **dict(base_cfg, **{
        "loss.reconstruction_encoder_u": 0.0, "loss.kl": 0.0, "loss.encoder_adversarial": 0.0}))
    _, out, _ = one_step(frozen_u, init)
    assert not _changed(init["encoder_u"].params, out["encoder_u"].params)
    assert _changed(init["encoder_s"].params, out["encoder_s"].params)


def test_without_the_pixel_discriminator_there_is_no_discriminator_player(tmp_path):
    exp = experiment(tmp_path, **{"model.pixel_discriminator": False})
    assert "discriminator" not in exp.method.player_names()
    _, new, metrics = one_step(exp, exp.init_states())
    assert "loss/discriminator" not in metrics and set(new) == set(exp.method.player_names())


@pytest.mark.parametrize("adversarial", ["log", "hinge"])
def test_the_discriminator_is_spectrally_normalised_with_either_loss(tmp_path, adversarial):
    """SN is its own key (on in every preset, as [29]'s and the reference's D), not the hinge
    loss's: D's output does not change when every kernel is scaled (W / sigma(W)), its power
    iteration's u moves with each step, and `loss.spectral_norm=False` removes it."""
    def scaled_output_changes(exp, states):
        m, d = exp.method, states["discriminator"]
        x = jnp.asarray(exp.preview_batch()["image"][:2])
        c = jnp.asarray([0, 1])
        big = jax.tree_util.tree_map_with_path(
            lambda path, v: v * 10.0 if "kernel" in jax.tree_util.keystr(path) else v, d.params)
        return not np.allclose(m.discriminator.apply(d.variables, x, c),
                               m.discriminator.apply(dict(d.variables, params=big), x, c),
                               rtol=1e-4, atol=1e-5)

    exp = experiment(tmp_path, **{"loss.adversarial": adversarial})
    assert exp.config.loss.spectral_norm is True
    init = exp.init_states()
    assert init["discriminator"].batch_stats      # the power iteration's u and sigma
    assert not scaled_output_changes(exp, init)
    _, new, _ = one_step(exp, init)
    assert _changed(init["discriminator"].batch_stats, new["discriminator"].batch_stats)

    off = experiment(tmp_path, **{"loss.adversarial": adversarial, "loss.spectral_norm": False})
    states = off.init_states()
    assert not states["discriminator"].batch_stats and scaled_output_changes(off, states)


# ------------------------------------------------------------------------------ capabilities
def test_sample_draws_z_s_from_its_class_and_edit_without_change_reconstructs(tmp_path):
    exp = experiment(tmp_path)
    m, states = exp.method, exp.init_states()
    x = jnp.asarray(exp.preview_batch()["image"][:2])
    same = jax.jit(m.edit)(states, x, jnp.zeros((2, m.num_labels)))
    np.testing.assert_allclose(same, jax.jit(m.reconstruct)(states, x), atol=1e-5)
    # An edit moves z_s to the target class keeping its standardised offset.
    means, log_var = m._mixture(states)
    z_s = m.encoder_s.apply(states["encoder_s"].variables, x)
    src = jnp.argmax(m.class_log_posterior(states, z_s), -1)
    dst = m.classes.target(src, jnp.ones((2, m.num_labels)))
    offset = (z_s - means[src]) / jnp.exp(0.5 * log_var[src])
    expected = means[dst] + jnp.exp(0.5 * log_var[dst]) * offset
    mu_u, _ = m.encoder_u.apply(states["encoder_u"].variables, x)
    np.testing.assert_allclose(
        jax.jit(m.edit)(states, x, jnp.ones((2, m.num_labels))),
        m.decode(states, jnp.concatenate([expected, mu_u], -1)), atol=1e-5)


def test_swap_and_sweep_move_z_s_and_z_u_as_figures_6_and_5(tmp_path):
    """swap(a, b) decodes a's z_s with b's z_u (the mean); sweep keeps z_s and sets one z_u
    coordinate. Either would fail with the halves of the code the other way round."""
    exp = experiment(tmp_path)
    m, states = exp.method, exp.init_states()
    x = jnp.asarray(exp.preview_batch()["image"][:2])
    a, b = x, x[:, ::-1]      # b: the same faces mirrored
    z_s = lambda v: m.encoder_s.apply(states["encoder_s"].variables, v)  # noqa: E731
    z_u = lambda v: m.encoder_u.apply(states["encoder_u"].variables, v)[0]  # noqa: E731
    assert m.relevant_code_mask().sum() == m.ds and m.sweep_dims() == m.du
    np.testing.assert_allclose(jax.jit(m.swap)(states, a, b),
                               m.decode(states, jnp.concatenate([z_s(a), z_u(b)], -1)),
                               atol=1e-5)
    values = jnp.asarray([-2.0, 0.5])
    g = jax.jit(m.sweep, static_argnums=(2,))(states, a, 1, values)
    assert g.shape == (2, 2) + a.shape[1:]
    for k, v in enumerate(values):
        code = jnp.concatenate([z_s(a), z_u(a).at[:, 1].set(v)], -1)
        np.testing.assert_allclose(g[:, k], m.decode(states, code), atol=1e-5)


@pytest.mark.parametrize("name", ["cvae", "cvaegan"])
def test_baselines_condition_on_the_joint_class(tmp_path, name):
    exp = experiment(tmp_path, name)
    m, states = exp.method, exp.init_states()
    y = jnp.asarray([[0.0, 0.0], [1.0, 1.0]])
    a, _ = jax.jit(m.sample)(states, jax.random.PRNGKey(0), y)
    b, _ = jax.jit(m.sample)(states, jax.random.PRNGKey(0), y[::-1])
    assert not np.allclose(a[0], b[0])     # the same z decoded with another class differs
    # classify is the posterior over joint classes marginalised per label.
    x = jnp.asarray(exp.preview_batch()["image"][:2])
    log_post = m.class_log_posterior(states, x)
    # jitted against eager: the ELBO scores are large, so allow for float32 reassociation.
    np.testing.assert_allclose(jax.jit(m.classify)(states, x),
                               lr.per_label_columns(log_post, m.classes), rtol=1e-4, atol=1e-4)
    if name == "cvae":   # the class posterior is the softmax of every class's ELBO
        p_e, p_d = states["encoder"].params, states["decoder"].params
        elbo = np.stack([-np.asarray(m.neg_elbo(p_e, p_d, x, jnp.full((2,), k, jnp.int32))[0])
                         for k in range(m.classes.num_classes)], axis=-1)
        np.testing.assert_allclose(log_post, jax.nn.log_softmax(elbo, axis=-1), rtol=1e-4,
                                   atol=1e-3)


def test_the_2d_toy_with_mlps(tmp_path):
    """Sec. 4.1's toy: 3 classes apart in x, y uniform in [-2, 2] for every class; lrlivae and
    cvaegan build MLPs for the vectors, train a step and sample points of the asked class."""
    from latent_jax.data import toy2d

    points, classes = toy2d.make_points(3000, np.random.default_rng(0))
    for k, centre in enumerate(toy2d.CLASS_CENTRES):
        assert abs(points[classes == k, 0].mean() - centre) < 0.05
        assert points[classes == k, 1].min() >= -2 and points[classes == k, 1].max() <= 2
    for name in ("lrlivae", "cvaegan"):
        toy = importlib.util.spec_from_file_location(
            f"toy_{name}", os.path.join(tiny.REPO, "configs", f"{name}.py"))
        mod = importlib.util.module_from_spec(toy)
        toy.loader.exec_module(mod)
        cfg = mod.get_config("toy")
        cfg.data.synthetic.update(dict(num_train=256, num_validation=32, num_test=32))
        exp = train.Experiment(cfg, str(tmp_path / name))
        assert exp.spec.image_shape == (2,) and exp.spec.label_names == ("Toy_CLASS",)
        states = exp.init_states()
        _, new, metrics = one_step(exp, states)
        assert all(np.isfinite(float(v)) for v in metrics.values())
        x, _ = jax.jit(exp.method.sample)(new, jax.random.PRNGKey(0), jnp.asarray([[0.], [2.]]))
        assert x.shape == (2, 2)


def test_figure_4a_varies_random_codes_within_each_class_under_one_z_u(tmp_path):
    """Figure 4(a): row c decodes z^(i) * sigma_c + mu_c with z^(i) shared by a column and one
    z_u for the grid: two classes with the same Gaussian give the same row, a class with
    sigma ~ 0 a constant row, and the grid is among every run's images."""
    from latent_jax import visualize

    exp = experiment(tmp_path)
    m, states = exp.method, exp.init_states()
    assert m.has("class_interpolation")
    p = states["mixture"].params
    means = p["means"].at[1].set(p["means"][0])
    log_var = p["log_var"].at[1].set(p["log_var"][0]).at[2].set(-60.0)
    states = dict(states, mixture=states["mixture"].replace(
        params=dict(p, means=means, log_var=log_var)))
    g = np.asarray(jax.jit(lambda s, r: m.class_interpolation(s, r, jnp.arange(3), 5))(
        states, jax.random.PRNGKey(1)))
    assert g.shape == (3, 5) + m.image_shape
    np.testing.assert_allclose(g[0], g[1], atol=1e-6)             # same Gaussian, same row
    assert np.abs(g[0, 0] - g[0, -1]).max() > 1e-4                # varies within a class
    np.testing.assert_allclose(g[2], np.broadcast_to(g[2, :1], g[2].shape), atol=1e-5)
    grids = visualize.make_grids(m, states, exp.preview_batch()["image"][:2],
                                 exp.preview_batch()["label"][:2], jax.random.PRNGKey(0))
    assert grids["class_interpolation"].ndim == 3
