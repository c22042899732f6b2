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


def _forward(m, params, stats, x, y, rng):
    """The method's random draws and the networks' outputs every loss below reads."""
    k_eps, k_p, k_aux = jax.random.split(rng, 3)
    mu, logvar, y_logit = m.encoder.apply({"params": params["encoder"]}, x)
    y_hat = jax.nn.sigmoid(y_logit)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mu.shape)
    dec = lambda lab, code: m.decoder.apply({"params": params["decoder"], "batch_stats": stats},
                                            lab, code, train=True, mutable=["batch_stats"])[0]
    C = lambda im: jax.nn.sigmoid(m.discriminator.apply({"params": params["discriminator"]}, im))
    z_aux = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_aux, mu.shape)
    return dict(mu=mu, logvar=logvar, y_hat=y_hat, x_hat=dec(y_hat, z),
                x_p=dec(y, jax.random.normal(k_p, mu.shape)), C=C,
                a=jax.nn.sigmoid(m.auxiliary.apply({"params": params["auxiliary"]}, z_aux)))


def paper_losses(m, params, stats, x, y, rng):
    """Eq. 3-12 written out from the paper (the `pixel_sum` objective), as functions of every
    player's parameters, with the method's random draws."""
    f = _forward(m, params, stats, x, y, rng)
    C, x_hat, x_p, y_hat = f["C"], f["x_hat"], f["x_p"], f["y_hat"]
    l_rec = jnp.sum(bce(x_hat, x)) / x.shape[0]          # per image summed, batch mean
    l_gan = (jnp.mean(bce(C(x), 1.0)) + jnp.mean(bce(C(x_hat), 0.0))
             + jnp.mean(bce(C(x_p), 0.0))) / 3
    l_class = jnp.mean(bce(y_hat, y))
    l_kl = jnp.mean(jnp.sum(base.kl_to_standard_normal(f["mu"], f["logvar"]), -1))
    _, _, y_hh = m.encoder.apply({"params": params["encoder"]}, x_hat)
    l_class_hat = jnp.mean(bce(jax.nn.sigmoid(y_hh), jax.lax.stop_gradient(y_hat)))
    l_aux = jnp.mean(bce(f["a"], y))
    w = m.w
    l_dec = l_rec + w["beta"] * l_class_hat - w["delta"] * l_gan                # Eq. 9
    l_enc = (l_rec + w["alpha"] * l_kl + w["beta"] * l_class_hat + w["rho"] * l_class
             - w["delta"] * l_gan)                                               # Eq. 10
    return {"decoder": l_dec, "encoder": l_enc - w["aux"] * l_aux,              # Eq. 12
            "discriminator": l_gan, "auxiliary": l_aux}                          # Eq. 4, 11


def authors_losses(m, params, stats, x, y, rng):
    """The authors' code's losses (their CVAE/AUX/DISCRIMINATOR scripts, as read in the audit):
    BCE summed over pixels and batch / 64^2 (H W), the KL summed / n_z, class and aux terms
    batch means, D's terms 0.3 x a batch sum, the non-saturating generator 0.5 x a batch sum,
    L_class_hat against y through a label head on detached features (it trains that head
    only), and the one knowing difference kept: L_class trains the trunk."""
    f = _forward(m, params, stats, x, y, rng)
    C, x_hat, x_p, y_hat = f["C"], f["x_hat"], f["x_p"], f["y_hat"]
    h, w_ = x.shape[1:3]
    l_rec = jnp.sum(bce(x_hat, x)) / (h * w_)
    l_kl = jnp.sum(base.kl_to_standard_normal(f["mu"], f["logvar"])) / m.latent_dim
    l_class = jnp.mean(bce(y_hat, y))
    feats = jax.lax.stop_gradient(_trunk(params["encoder"], x_hat))
    head = params["encoder"]["label"]
    y_hh = jax.nn.sigmoid(feats @ head["kernel"] + head["bias"])
    l_class_hat = jnp.mean(bce(y_hh, y))
    l_aux = jnp.mean(bce(f["a"], y))
    l_gan_c = 0.3 * jnp.sum(bce(C(x), 1.0) + bce(C(x_hat), 0.0) + bce(C(x_p), 0.0))
    l_gen = 0.5 * jnp.sum(bce(C(x_hat), 1.0) + bce(C(x_p), 1.0))
    w = m.w
    l_vae = (l_rec + w["alpha"] * l_kl + w["rho"] * l_class + w["beta"] * l_class_hat
             + w["delta"] * l_gen)
    return {"decoder": l_vae, "encoder": l_vae - w["aux"] * l_aux,
            "discriminator": l_gan_c, "auxiliary": l_aux}


def _trunk(p, x):
    """The encoder's conv stack (5x5/2, pad 2, ReLU per layer), flattened, from its parameters."""
    h, i = x, 0
    while f"conv{i}" in p:
        h = jax.nn.relu(jax.lax.conv_general_dilated(
            h, p[f"conv{i}"]["kernel"], (2, 2), ((2, 2), (2, 2)),
            dimension_numbers=("NHWC", "HWIO", "NHWC")) + p[f"conv{i}"]["bias"])
        i += 1
    return h.reshape((h.shape[0], -1))


@pytest.mark.parametrize("objective,losses,beta", [("pixel_sum", paper_losses, 0.0),
                                                   ("pixel_sum", paper_losses, 1.0),
                                                   ("authors", authors_losses, 1.0)])
def test_each_player_descends_the_loss_its_equation_names(tmp_path, objective, losses, beta):
    """One step with SGD at lr 1: every player's change is minus the gradient, with respect to
    its own parameters, of its loss: in the paper's reading, decoder Eq. 9, encoder Eq. 12,
    discriminator Eq. 4 (the text; Algorithm 1 swaps the A and C lines), auxiliary Eq. 7/11 on
    its own; in the authors' objective, their reductions and their L_class_hat, which does not
    reach the decoder (the other objective's losses fail this comparison)."""
    overrides = {f"optim.{p}.{k}": v for p in ("encoder", "decoder", "discriminator", "auxiliary")
                 for k, v in (("name", "sgd"), ("learning_rate", 1.0), ("momentum", 0.0))}
    overrides["loss.beta"] = beta
    exp = train.Experiment(config(preset=f"tiny,best,{objective}", **overrides),
                           str(tmp_path / "run"))
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
        want = jax.jit(jax.grad(lambda p: losses(m, dict(params, **{player: p}), stats, x,
                                                 y, rng)[player]))(params[player])
        got = jax.tree.map(lambda a, b: a - b, params[player], new[player].params)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-6, err_msg=player)


def test_effective_weights_against_a_hand_computation():
    """Each term's weight against an image's pixel-summed L_rec at 64x64, batch 64, n_z 200:
    the authors' objective (audit of their code: KL alpha HW / n_z, rho L_class rho HW / B,
    -L_aux and L_class_hat HW / B, the generator delta 0.5 HW) against the pixel-sum reading."""
    from latent_jax.data import pipeline

    def weights(preset):
        c = config(preset=preset)
        c.data.image_size, c.model.latent_dim = 64, 200
        return base.get_method(c, pipeline.get_data_spec(c.data), 10).effective_weights(64)

    hw, b = 64 * 64, 64
    want = {"kl": 0.2 * hw / 200, "class": 0.1 * hw / b, "class_hat": 1.0 * hw / b,
            "aux": hw / b, "generator": 0.1 * 0.5 * hw}
    assert want["kl"] == pytest.approx(4.096) and want["generator"] == pytest.approx(204.8)
    got = weights("tiny,class_hat")
    assert got == pytest.approx(want)
    assert weights("tiny,class_hat,pixel_sum") == pytest.approx(
        {"kl": 0.2, "class": 0.1, "class_hat": 1.0, "aux": 1.0, "generator": 0.1 / 3})


def _torch_conv_transpose(x, kernel, bias, stride=2, padding=1, output_padding=1):
    """PyTorch's ConvTranspose2d written out (NHWC): input (i, j) adds x[i, j] W[a, b] to
    output (s i - p + a, s j - p + b); W is lax's HWIO kernel flipped (lax.conv_transpose does
    not flip it; a relabelling of learned weights)."""
    b_, h, w, _ = x.shape
    k = kernel.shape[0]
    flipped = kernel[::-1, ::-1]
    out_h = (h - 1) * stride - 2 * padding + k + output_padding
    out_w = (w - 1) * stride - 2 * padding + k + output_padding
    y = np.zeros((b_, out_h + 2 * k, out_w + 2 * k, kernel.shape[-1]), np.float64)
    for a in range(k):
        for c in range(k):
            contrib = np.einsum("bhwi,io->bhwo", x, flipped[a, c])
            r0, c0 = k + a - padding, k + c - padding
            y[:, r0:r0 + stride * h:stride, c0:c0 + stride * w:stride] += contrib
    return y[:, k:k + out_h, k:k + out_w] + bias


def test_the_decoder_upsamples_as_the_authors_transposed_convolutions(tmp_path):
    """The decoder's last transposed convolution computes PyTorch's ConvTranspose2d(3, stride
    2, padding 1, output_padding 1) of its input (the authors' decoder): input i reaches outputs
    2i-1..2i+1. flax's 'SAME' (2i..2i+2) shifts the image one pixel and fails this."""
    exp = train.Experiment(config(), str(tmp_path / "run"))
    m, states = exp.method, exp.init_states()
    dec = states["decoder"]
    y = jnp.ones((2, m.num_labels))
    z = jax.random.normal(jax.random.PRNGKey(0), (2, m.latent_dim))
    _, inter = m.decoder.apply(dec.variables, y, z, capture_intermediates=True,
                               mutable=["intermediates"])
    inter = inter["intermediates"]
    last_bn = sorted(k for k in inter if k.startswith("bn"))[-1]
    h = np.asarray(jax.nn.relu(inter[last_bn]["__call__"][0]), np.float64)
    got = np.asarray(inter["to_image"]["__call__"][0])
    p = dec.params["to_image"]
    want = _torch_conv_transpose(h, np.asarray(p["kernel"], np.float64), np.asarray(p["bias"]))
    assert got.shape == want.shape == (2, h.shape[1] * 2, h.shape[2] * 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


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
    with pytest.raises(ValueError, match="unknown objective"):
        config(preset="synthetic_smiling,best,paper")


def test_the_default_objective_is_the_authors_and_pixel_sum_is_named():
    """Every preset trains the authors' objective unless `pixel_sum` is named, the naive model
    too; the discriminator's RMSprop is the authors' alpha = 0.5 (decay) without momentum; the
    paper's n_z on the synthetic faces."""
    for c in (config(preset="synthetic_eyeglasses"), config(preset="celeba_smiling,no_aux"),
              config("cvaegan_naive", preset="synthetic_eyeglasses")):
        assert (c.loss.reduction, c.loss.generator, c.loss.class_hat_target,
                c.loss.class_hat_grad) == ("reference", "non_saturating", "y", "head")
        assert c.optim.discriminator.decay == 0.5 and c.optim.discriminator.momentum == 0.0
        assert c.model.latent_dim == 200
    for c in (config(preset="synthetic_eyeglasses,no_aux,pixel_sum"),
              config("cvaegan_naive", preset="synthetic_eyeglasses,pixel_sum")):
        assert (c.loss.reduction, c.loss.generator, c.loss.class_hat_target,
                c.loss.class_hat_grad) == ("paper", "saturating", "y_hat", "all")
    assert config(preset="synthetic_eyeglasses,no_aux,pixel_sum").loss.aux == 0.0
    assert config("cvaegan_naive", preset="synthetic_eyeglasses,pixel_sum").loss.alpha == 1.0


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
