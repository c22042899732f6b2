"""Lr-LiVAE's baselines (paper 002, Sec. 4.1-4.2): cVAE (Sohn, Lee, Yan 2015) and cVAE-GAN (Bao,
Chen, Wen, Li, Hua 2017), on the networks, latent size and data of the Lr-LiVAE configs.

The class c is the joint class of `config.data.labels` (`lrlivae.JointClasses`); onehot(c) is
the condition. z has z_s_dim + z_u_dim dimensions, Lr-LiVAE's two codes together.

cvae (players `encoder`, `decoder`): q(z|x, c) on the image with onehot(c) tiled over extra
input channels, p(x|z, c) on concat(z, onehot(c)) (the reference description in the notes).
Loss: `loss.reconstruction` L_rec (Lr-LiVAE's L_rec, same reduction) + `loss.cvae_kl` KL(q || N(0, I))
summed over dimensions: the negative ELBO with a unit-variance Gaussian likelihood up to
constants at weights 1 / 1. Samples: z ~ N(0, I) with onehot(c) (Sec. 4.2). The cVAE has no
classifier: `classify` (and the source class of `edit`) is the class whose ELBO at the posterior
mean is highest, Bayes' rule with a uniform p(c).

cvaegan (players `encoder`, `decoder` = G, `discriminator` D, `classifier` C), Bao et al.'s
losses (their Sec. 3; the stored material has neither their code nor their weights, so the
weights are the ones their paper states, lambda_1..4 = 3, 1, 1e-3, 1e-3, in `loss.cvaegan_*`):
- C: cross entropy of C(x) against c on real images only;
- D: -log D(x) - log(1 - D(x')) - log(1 - D(x_p)), x' = G(z, c) with z ~ q(z|x, c),
  x_p = G(z_p, c), z_p ~ N(0, I) (on detached images);
- E: lambda_1 KL + lambda_2 L_G, L_G = 1/2 (||x - x'||^2 + ||f_D(x) - f_D(x')||^2
  + ||f_C(x) - f_C(x')||^2) (pairwise feature matching on D's and C's last hidden features);
- G: lambda_2 L_G + lambda_3 L_GD + lambda_4 L_GC, the mean feature matching
  L_GD = 1/2 ||mean f_D(x) - mean f_D(x_p)||^2 and L_GC = 1/2 sum_c ||mean_c f_C(x) -
  mean_c f_C(x_p)||^2 (means over the batch's examples of each class present); G gets no
  direct adversarial term, as in Bao et al.
`classify` is C's posterior marginalised per label; `edit` encodes with C's class and decodes
with the target class.

Both reconstruct at the class the image's labels give where they are known (the evaluation's
reconstruction and inpainting columns: `reconstruct_given_labels`, the paper's Sec. 4.5 protocol
for cVAE-GAN), and at the class they infer from the image otherwise (`reconstruct`: a user's
image in `--mode=inpaint`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latent_jax.errors import ConfigError
from latent_jax.methods import base
from latent_jax.methods.lrlivae import (DiagonalGaussianEncoder, JointClasses, kl_per_example,
                                        make_decoder, network_hidden, per_label_columns,
                                        reconstruction)
from latent_jax.nets import conv
from latent_jax.nets import layers

sg = jax.lax.stop_gradient


class ConditionalEncoder(nn.Module):
    """q(z|x, c): onehot(c) tiled over extra input channels, then (mu, logvar)."""

    dim: int
    channels: Sequence[int]
    top: int
    hidden: Sequence[int] = ()      # vectors: onehot(c) concatenated, then dense layers

    @nn.compact
    def __call__(self, x, onehot):
        if self.hidden:
            joined = jnp.concatenate([x.reshape((x.shape[0], -1)), onehot.astype(x.dtype)], -1)
        else:
            tiled = jnp.broadcast_to(onehot[:, None, None, :],
                                     x.shape[:3] + (onehot.shape[-1],)).astype(x.dtype)
            joined = jnp.concatenate([x, tiled], axis=-1)
        return DiagonalGaussianEncoder(self.dim, self.channels, self.top, self.hidden,
                                       name="gaussian")(joined)


class FeatureNet(nn.Module):
    """conv4x4/2 + LeakyReLU(0.2) per entry, global average pooling, a dense layer to the
    features f [top] + LeakyReLU, and a linear head: (head [B, outputs], f [B, top]). D (one
    output, a logit) and C (C outputs) of cVAE-GAN."""

    outputs: int
    channels: Sequence[int]
    top: int
    hidden: Sequence[int] = ()      # vectors: dense layers instead of the convolutions

    @nn.compact
    def __call__(self, x):
        h = x
        if self.hidden:
            h = h.reshape((h.shape[0], -1))
            for i, width in enumerate(self.hidden[:-1]):
                h = nn.leaky_relu(nn.Dense(width, name=f"hidden{i}")(h), 0.2)
        else:
            for i, ch in enumerate(self.channels):
                h = nn.leaky_relu(layers.Conv(ch, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                                          name=f"conv{i}")(h), 0.2)
            h = jnp.mean(h, axis=(1, 2))
        top = self.hidden[-1] if self.hidden else self.top
        f = nn.leaky_relu(nn.Dense(top, name="features")(h), 0.2)
        return nn.Dense(self.outputs, name="head")(f), f


class _Conditional(base.Method):
    """What cVAE and cVAE-GAN share: the conditional encoder and decoder, sampling, edits."""

    capabilities = frozenset({base.EDIT, base.SAMPLE, base.CLASSIFY, base.CODE_SPLIT})
    resume_safe_keys = ("edit.",)

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        if not self.label_names:
            raise ConfigError(f"config.data.labels: {self.name} needs at least one label")
        self.classes = JointClasses(self.label_names, self.label_classes)
        m = config.model
        self.dz = int(m.z_s_dim) + int(m.z_u_dim)
        channels = tuple(m.channels)
        self.hidden = network_hidden(m, self.image_shape)
        if not self.hidden:
            conv.check_channels(self.image_shape[0], channels)
        self.encoder = ConditionalEncoder(self.dz, channels, int(m.top), self.hidden)
        self.decoder = make_decoder(self.image_shape, channels, int(m.top), self.hidden)

    def onehot(self, c):
        return jax.nn.one_hot(c, self.classes.num_classes, dtype=jnp.float32)

    def _init_common(self, rng):
        k_e, k_d = jax.random.split(rng)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        oh = jnp.zeros((1, self.classes.num_classes), jnp.float32)
        return {
            "encoder": base.init_player(self.encoder, self.tx("encoder"), k_e, x, oh),
            "decoder": base.init_player(self.decoder, self.tx("decoder"), k_d,
                                        jnp.zeros((1, self.dz + self.classes.num_classes))),
        }

    def _decode(self, params, z, c):
        return self.decoder.apply({"params": params}, jnp.concatenate([z, self.onehot(c)], -1))

    # ------------------------------------------------------------------ capabilities
    def encode(self, states, x):
        """The posterior mean at the predicted class, concatenated with its one-hot: the code
        `decode` takes."""
        c = self.predict_class(states, x)
        mu, _ = self.encoder.apply(states["encoder"].variables, x, self.onehot(c))
        return jnp.concatenate([mu, self.onehot(c)], axis=-1)

    def decode(self, states, z):
        return self.decoder.apply(states["decoder"].variables, z)

    # Paper 002, Sec. 4.5: "in cVAE-GAN an extra class label c should be provided for
    # reconstruction": with the true labels known, encode and decode at their class.
    reconstructs_given_labels = True

    def reconstruct_given_labels(self, states, x, y):
        c = self.classes.index(y)
        mu, _ = self.encoder.apply(states["encoder"].variables, x, self.onehot(c))
        return self._decode(states["decoder"].params, mu, c)

    def relevant_code_mask(self):
        """z first, then the joint class's one-hot (the label-relevant part)."""
        return np.arange(self.dz + self.classes.num_classes) >= self.dz

    def class_log_posterior(self, states, x):
        raise NotImplementedError

    def predict_class(self, states, x):
        return jnp.argmax(self.class_log_posterior(states, x), axis=-1)

    def classify(self, states, x):
        return per_label_columns(self.class_log_posterior(states, x), self.classes)

    def edit(self, states, x, changes, strength=None):
        del strength   # the condition is discrete
        src = self.predict_class(states, x)
        dst = self.classes.target(src, changes)
        mu, _ = self.encoder.apply(states["encoder"].variables, x, self.onehot(src))
        return self._decode(states["decoder"].params, mu, dst)

    def sample(self, states, rng, y):
        c = self.classes.index(y)
        z = jax.random.normal(rng, (c.shape[0], self.dz))
        images = self._decode(states["decoder"].params, z, c)
        return images, self.predict_class(states, images) == c


@base.register("cvae")
class CVAE(_Conditional):
    """Sohn et al.'s conditional VAE."""

    # The config keys it reads (base.Method.config_keys): none of Lr-LiVAE's GAN, mixture or
    # GM-step settings, and its edits take no strength.
    config_keys = frozenset({
        "loss.cvae_kl", "loss.reconstruction", "loss.reconstruction_reduction", "model.channels",
        "model.kind", "model.mlp_hidden", "model.top", "model.z_s_dim", "model.z_u_dim"})

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        self.rec_reduction = str(config.loss.reconstruction_reduction)
        if self.rec_reduction not in ("half_sum", "mean"):
            raise ConfigError("config.loss.reconstruction_reduction: 'half_sum' or 'mean', got "
                              f"{self.rec_reduction!r}")
        self.w_rec = float(config.loss.reconstruction)
        self.w_kl = float(config.loss.cvae_kl)

    def player_names(self):
        return ("encoder", "decoder")

    def init(self, rng):
        return self._init_common(rng)

    def neg_elbo(self, p_e, p_d, x, c, eps=None):
        """Per-example w_rec L_rec + w_kl KL at z = mu (+ sigma eps), and its parts."""
        mu, logvar = self.encoder.apply({"params": p_e}, x, self.onehot(c))
        z = mu if eps is None else mu + jnp.exp(0.5 * logvar) * eps
        x_rec = self._decode(p_d, z, c)
        l_rec = reconstruction(x, x_rec, self.rec_reduction)
        l_kl = kl_per_example(mu, logvar, "sum")
        return self.w_rec * l_rec + self.w_kl * l_kl, l_rec, l_kl

    def train_step(self, states, batch, rng, phase):
        del phase
        x, c = batch["image"], self.classes.index(batch["label"])
        eps = jax.random.normal(rng, (x.shape[0], self.dz))

        def loss_fn(p_e, p_d):
            total, l_rec, l_kl = self.neg_elbo(p_e, p_d, x, c, eps)
            return jnp.mean(total), {"loss/reconstruction": jnp.mean(l_rec),
                                     "loss/kl": jnp.mean(l_kl)}

        (g_e, g_d), metrics = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
            states["encoder"].params, states["decoder"].params)
        metrics.update({"grad_norm/encoder": base.tree_l2(g_e),
                        "grad_norm/decoder": base.tree_l2(g_d)})
        return {"encoder": base.apply_updates(states["encoder"], self.tx("encoder"), g_e),
                "decoder": base.apply_updates(states["decoder"], self.tx("decoder"), g_d)
                }, metrics

    def class_log_posterior(self, states, x):
        """log p(c|x) from the ELBO of every class at its posterior mean (uniform p(c)).

        One encoder and decoder pass per class, as a `lax.map` over the classes: one traced
        body whatever their number (a Python loop unrolled 100 identities into a program of
        30000 equations that took minutes to compile)."""
        p_e, p_d = states["encoder"].params, states["decoder"].params

        def score(k):
            return -self.neg_elbo(p_e, p_d, x, jnp.full(x.shape[:1], k, jnp.int32))[0]

        scores = jax.lax.map(score, jnp.arange(self.classes.num_classes, dtype=jnp.int32))
        return jax.nn.log_softmax(jnp.moveaxis(scores, 0, -1), axis=-1)


@base.register("cvaegan")
class CVAEGAN(_Conditional):
    """Bao et al.'s CVAE-GAN (encoder, generator, discriminator, classifier)."""

    # The config keys it reads (base.Method.config_keys): Bao et al.'s weights; none of
    # Lr-LiVAE's reconstruction, GAN, mixture or GM-step settings.
    config_keys = frozenset({
        "loss.cvaegan_kl", "loss.cvaegan_mean_c", "loss.cvaegan_mean_d", "loss.cvaegan_pairwise",
        "model.channels", "model.discriminator_channels", "model.kind", "model.mlp_hidden",
        "model.top", "model.z_s_dim", "model.z_u_dim"})

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        m, lo = config.model, config.loss
        self.discriminator = FeatureNet(1, tuple(m.discriminator_channels), int(m.top),
                                        self.hidden)
        self.classifier = FeatureNet(self.classes.num_classes, tuple(m.discriminator_channels),
                                     int(m.top), self.hidden)
        self.w = dict(kl=float(lo.cvaegan_kl), pairwise=float(lo.cvaegan_pairwise),
                      mean_d=float(lo.cvaegan_mean_d), mean_c=float(lo.cvaegan_mean_c))

    def player_names(self):
        return ("encoder", "decoder", "discriminator", "classifier")

    def init(self, rng):
        k_common, k_d, k_c = jax.random.split(rng, 3)
        states = self._init_common(k_common)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        states["discriminator"] = base.init_player(self.discriminator, self.tx("discriminator"),
                                                   k_d, x)
        states["classifier"] = base.init_player(self.classifier, self.tx("classifier"), k_c, x)
        return states

    def train_step(self, states, batch, rng, phase):
        del phase
        x, c = batch["image"], self.classes.index(batch["label"])
        n = x.shape[0]
        k_eps, k_p = jax.random.split(rng)
        eps = jax.random.normal(k_eps, (n, self.dz))
        z_p = jax.random.normal(k_p, (n, self.dz))
        w = self.w
        onehot = self.onehot(c)

        def objective(params):
            mu, logvar = self.encoder.apply({"params": params["encoder"]}, x, onehot)
            z = mu + jnp.exp(0.5 * logvar) * eps
            x_rec = self._decode(params["decoder"], z, c)
            x_p = self._decode(params["decoder"], z_p, c)
            l_kl = jnp.mean(kl_per_example(mu, logvar, "sum"))
            # D and C on detached images in their own losses.
            d_logits, _ = self.discriminator.apply(
                {"params": params["discriminator"]},
                jnp.concatenate([x, sg(x_rec), sg(x_p)], axis=0))
            d_real, d_rec, d_p = jnp.split(d_logits[:, 0], 3)
            l_d = jnp.mean(jax.nn.softplus(-d_real) + jax.nn.softplus(d_rec)
                           + jax.nn.softplus(d_p))
            c_logits, _ = self.classifier.apply({"params": params["classifier"]}, x)
            l_c = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(c_logits), c[:, None],
                                                -1)[:, 0])
            # Features with D and C held fixed, for E's and G's matching terms.
            images = jnp.concatenate([x, x_rec, x_p], axis=0)
            _, f_d = self.discriminator.apply({"params": sg(params["discriminator"])}, images)
            _, f_c = self.classifier.apply({"params": sg(params["classifier"])}, images)
            fd_x, fd_rec, fd_p = jnp.split(f_d, 3)
            fc_x, fc_rec, fc_p = jnp.split(f_c, 3)
            l_pair = jnp.mean(0.5 * (
                jnp.sum(jnp.square(x - x_rec).reshape((n, -1)), -1)
                + jnp.sum(jnp.square(sg(fd_x) - fd_rec), -1)
                + jnp.sum(jnp.square(sg(fc_x) - fc_rec), -1)))
            l_gd = 0.5 * jnp.sum(jnp.square(jnp.mean(sg(fd_x), 0) - jnp.mean(fd_p, 0)))
            counts = jnp.sum(onehot, axis=0)                                   # [C]
            mean_c = lambda f: (onehot.T @ f) / jnp.maximum(counts, 1.0)[:, None]
            l_gc = 0.5 * jnp.sum(jnp.where(counts[:, None] > 0,
                                           jnp.square(mean_c(sg(fc_x)) - mean_c(fc_p)), 0.0))
            # The encoder's terms must not reach G through the mean matching, and vice versa
            # only what Bao et al. assign: E: kl + pairwise; G: pairwise + mean_d + mean_c
            # (x_p does not depend on E; KL does not depend on G).
            total = (w["kl"] * l_kl + w["pairwise"] * l_pair + w["mean_d"] * l_gd
                     + w["mean_c"] * l_gc + l_d + l_c)
            return total, {"loss/kl": l_kl, "loss/pairwise_matching": l_pair,
                           "loss/mean_matching_d": l_gd, "loss/mean_matching_c": l_gc,
                           "loss/discriminator": l_d, "loss/classifier": l_c,
                           "train/classifier_accuracy": jnp.mean(
                               (jnp.argmax(c_logits, -1) == c).astype(jnp.float32))}

        params = {p: states[p].params for p in self.player_names()}
        grads, metrics = jax.grad(objective, has_aux=True)(params)
        new = {p: base.apply_updates(states[p], self.tx(p), grads[p])
               for p in self.player_names()}
        for p in self.player_names():
            metrics[f"grad_norm/{p}"] = base.tree_l2(grads[p])
        return new, metrics

    def class_log_posterior(self, states, x):
        logits, _ = self.classifier.apply(states["classifier"].variables, x)
        return jax.nn.log_softmax(logits, axis=-1)
