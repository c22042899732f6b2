"""IFcVAEGAN and the naive cVAEGAN (paper 003): each player's gradient is the gradient of the loss
its equation names (against losses written out here from the paper), the label head trains the
trunk, edits set y_hat, and Table 1's protocol."""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from latent_jax import train
from latent_jax.evaluate import metrics as metrics_lib
from latent_jax.methods import base


def config(name="ifcvaegan", preset="tiny", **overrides):
    path = os.path.join(tiny.REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"ifc_test_cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(preset)
    c.update_from_flattened_dict(overrides)
    return c


def bce(p, t):
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    return -(t * jnp.log(p) + (1 - t) * jnp.log(1 - p))


def paper_losses(m, params, stats, x, y, rng):
    """Eq. 3-12 written out from the paper, as functions of every player's parameters, with
    the method's random draws."""
    k_eps, k_p, k_aux = jax.random.split(rng, 3)
    mu, logvar, y_logit = m.encoder.apply({"params": params["encoder"]}, x)
    y_hat = jax.nn.sigmoid(y_logit)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mu.shape)
    dec = lambda lab, code: m.decoder.apply({"params": params["decoder"], "batch_stats": stats},
                                            lab, code, train=True, mutable=["batch_stats"])[0]
    x_hat = dec(y_hat, z)
    x_p = dec(y, jax.random.normal(k_p, mu.shape))
    C = lambda im: jax.nn.sigmoid(m.discriminator.apply({"params": params["discriminator"]}, im))
    l_rec = jnp.sum(bce(x_hat, x)) / x.shape[0]          # per image summed, batch mean
    l_gan = (jnp.mean(bce(C(x), 1.0)) + jnp.mean(bce(C(x_hat), 0.0))
             + jnp.mean(bce(C(x_p), 0.0))) / 3
    l_class = jnp.mean(bce(y_hat, y))
    l_kl = jnp.mean(jnp.sum(base.kl_to_standard_normal(mu, logvar), -1))
    _, _, y_hh = m.encoder.apply({"params": params["encoder"]}, x_hat)
    l_class_hat = jnp.mean(bce(jax.nn.sigmoid(y_hh), jax.lax.stop_gradient(y_hat)))
    z_aux = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_aux, mu.shape)
    l_aux = jnp.mean(bce(jax.nn.sigmoid(m.auxiliary.apply({"params": params["auxiliary"]},
                                                          z_aux)), y))
    w = m.w
    l_dec = l_rec + w["beta"] * l_class_hat - w["delta"] * l_gan                # Eq. 9
    l_enc = (l_rec + w["alpha"] * l_kl + w["beta"] * l_class_hat + w["rho"] * l_class
             - w["delta"] * l_gan)                                               # Eq. 10
    return {"decoder": l_dec, "encoder": l_enc - w["aux"] * l_aux,              # Eq. 12
            "discriminator": l_gan, "auxiliary": l_aux}                          # Eq. 4, 11


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_each_player_descends_the_loss_its_equation_names(tmp_path, beta):
    """One step with SGD at lr 1: every player's change is minus the gradient, with respect to
    its own parameters, of its loss in the paper: decoder Eq. 9, encoder Eq. 12, discriminator
    Eq. 4 (the text; Algorithm 1 swaps the A and C lines), auxiliary Eq. 7/11 on its own."""
    overrides = {f"optim.{p}.{k}": v for p in ("encoder", "decoder", "discriminator", "auxiliary")
                 for k, v in (("name", "sgd"), ("learning_rate", 1.0), ("momentum", 0.0))}
    overrides["loss.beta"] = beta
    exp = train.Experiment(config(**overrides), str(tmp_path / "run"))
    m, states = exp.method, exp.init_states()
    batch = jax.device_get(exp.next_batch(train.data_lib.make_train_iterator(
        exp.data, global_batch_size=8, seed=0)))
    x, y = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    rng = jax.random.PRNGKey(3)
    params = {p: states[p].params for p in m.player_names()}
    stats = states["decoder"].batch_stats
    new, _ = jax.jit(m.train_step, static_argnums=3)(states, {"image": x, "label": y}, rng, 0)
    for player in m.player_names():
        # Jitted: op by op, the GAN's gradient compiled each primitive apart (20 s more).
        want = jax.jit(jax.grad(lambda p: paper_losses(m, dict(params, **{player: p}), stats, x,
                                                       y, rng)[player]))(params[player])
        got = jax.tree.map(lambda a, b: a - b, params[player], new[player].params)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-6, err_msg=player)


def test_the_label_head_trains_the_trunk(tmp_path):
    """L_class reaches the encoder's convolutions (the reference detaches the head's features,
    so its class terms never train the trunk)."""
    exp = train.Experiment(config(), str(tmp_path / "run"))
    m, states = exp.method, exp.init_states()
    x = jnp.asarray(exp.preview_batch()["image"][:2])
    y = jnp.ones((2, 1))
    grad = jax.grad(lambda p: jnp.mean(base.bce_with_logits(
        m.encoder.apply({"params": p}, x)[2], y)))(states["encoder"].params)
    assert float(jnp.abs(grad["conv0"]["kernel"]).max()) > 0


def test_edit_sets_y_hat_and_keeps_z(tmp_path):
    exp = train.Experiment(config(), str(tmp_path / "run"))
    m, states = exp.method, exp.init_states()
    x = jnp.asarray(exp.preview_batch()["image"][:2])
    mu, y_hat, _ = m._encode(states, x)
    for change, value in ((1.0, 1.0), (-1.0, 0.0)):
        out = m.edit(states, x, jnp.full((2, 1), change))
        want = m.decoder.apply(states["decoder"].variables, jnp.full((2, 1), value), mu)
        np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_allclose(m.edit(states, x, jnp.zeros((2, 1))), m.reconstruct(states, x),
                               atol=1e-6)


def test_presets_are_table_1s_rows():
    best = config(preset="synthetic_smiling")
    assert dict(best.loss)["alpha"] == 0.2 and best.loss.beta == 0.0 and best.loss.aux == 1.0
    assert config(preset="synthetic_smiling,no_aux_class_hat").loss.aux == 0.0
    assert config(preset="synthetic_smiling,no_aux_class_hat").loss.beta == 1.0
    naive = config("cvaegan_naive", preset="synthetic_smiling")
    assert naive.method == "cvaegan_naive" and naive.loss.alpha == 1.0
    assert best.data.image_size == naive.data.image_size == 64
    with pytest.raises(ValueError, match="naive"):
        config(preset="synthetic_smiling,naive")


class _Caps:
    """Edits that paint the image with the value the label is set to."""

    def edit(self, x, changes):
        return np.broadcast_to((changes[:, :1, None, None] > 0).astype(np.float32), x.shape)


class _Judge:
    attribute_names = ("Smiling",)

    def index(self, name):
        return 0

    def predict(self, x):
        return x.reshape(len(x), -1).mean(-1, keepdims=True) > 0.5


def test_table1_protocol_per_source_class():
    labels = np.asarray([[1], [1], [1], [0]], np.float32)
    images = np.full((4, 2, 2, 3), 0.5, np.float32)
    recons = images + np.asarray([0.1, 0.1, 0.1, 0.2], np.float32)[:, None, None, None]
    data = metrics_lib.EvalSet(images, labels, ("Smiling",), labels, ("Smiling",))
    out = metrics_lib.table1_metrics(_Caps(), _Judge(), data, recons)
    by_source = {s["source"]: s for s in out["settings"]}
    assert by_source[1]["n"] == 3 and by_source[0]["n"] == 1
    assert by_source[1]["class0"] == by_source[1]["class1"] == 1.0
    np.testing.assert_allclose(by_source[1]["mse"], 0.01, rtol=1e-5)
    np.testing.assert_allclose(by_source[0]["mse"], 0.04, rtol=1e-5)


def test_edit_and_inpaint_figures_of_trained_runs(tmp_path):
    """launch/edit_figure.py (Figures 2-3) and launch/inpaint_figure.py on a 2-step run: one
    row of inputs, then per run its reconstructions and its decodes with the label at 0 and at
    1; runs trained on other data are refused before anything is restored."""
    import json
    import shutil
    import sys

    from PIL import Image

    from latent_jax import errors

    c = config(num_steps=2, evaluate_at_end=False, grid_size=0)
    c.checkpoint.every_steps = 2
    run = tmp_path / "ifc"
    train.train_and_evaluate(c, str(run))
    sys.path.insert(0, os.path.join(tiny.REPO, "launch"))
    try:
        import edit_figure
        import inpaint_figure
    finally:
        sys.path.pop(0)
    out = tmp_path / "figs" / "edit.png"
    assert edit_figure.main([f"--workdir={run}", f"--workdir={run}", f"--out={out}",
                             "--num_images=2"]) == 0
    grid = np.asarray(Image.open(out))
    size = int(c.data.image_size)
    # Cells are upscaled to >= 64 px: 1 + 2 runs x 3 rows, 2 + 2 columns.
    cell = size * -(-64 // size)
    assert grid.shape[0] >= 7 * cell and grid.shape[1] >= 4 * cell
    assert inpaint_figure.main([f"--workdir={run}", f"--out={tmp_path / 'inp.png'}",
                                "--num_images=2"]) == 0
    other = tmp_path / "other"
    shutil.copytree(run, other)
    saved = json.loads((other / train.CONFIG_FILE).read_text())
    saved["data"]["image_size"] = size * 2
    (other / train.CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(errors.ConfigError, match="trained on other data"):
        edit_figure.main([f"--workdir={run}", f"--workdir={other}", f"--out={out}"])
