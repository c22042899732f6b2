"""IntroVAC and VAC: Maggipinto, Terzi, Susto, "IntroVAC: Introspective Variational Classifiers
for Learning Interpretable Latent Subspaces" (paper 000).

Players: `encoder` (E, parameters Phi), `classifier` (C, the linear map w) and `decoder`
(G, parameters theta), each with its own Adam.

Implemented:
- VAC (Eq. 4-5): L = beta_AE * L_AE(x, x_r) + beta_CL * BCE(y, C(z)) + beta_reg * KL(q(z|x) || N(0, I)),
  with L_AE the L1 loss (Sec. 4.1 uses L1 instead of the MSE of Eq. 5), means over pixels,
  labels and (as in the reference) latent dimensions.
- IntroVAC (Sec. 3.1, Eq. 6-7, Algorithm 1): C gets one extra "fake" logit (n + 1 outputs).
  L_CL on real images is the BCE of all n + 1 outputs against [y, real] (real = 0 on the fake
  logit), averaged over the n + 1 entries, in both phases: the reference trains C so, and it is
  what anchors the fake logit on real data (`classification_loss`).
  Lines 3-11: one gradient of
      L1 = VAC loss + beta_EC * (L^r_EC(x_rr) + L^g_EC(x_g)),
      L^r_EC = -log C_fake(E(dt(x_rr))),  L^g_EC = -log C_fake(E(dt(x_g))),
  with respect to (Phi, w, theta); Adam steps on Phi and w.
  Lines 12-14: L2 = beta_G * (L^r_G(x_rr, y) + L^g_G(x_g)),
      L^r_G = BCE(C(E(x_rr)), [y, real]) (mean over the n + 1 entries),  L^g_G = -log(1 - C_fake(E(x_g))),
  x_rr = G(dt(z_r)), x_g = G(z_g); its gradient with respect to theta is added to theta's
  gradient of L1 (Algorithm 1 zeroes gradients only at line 15), and Adam steps on theta.
  L2 is evaluated with the encoder and classifier already updated (as the reference code runs).
  Re-encoded images (x_rr, x_g) are classified at their posterior mean E(x).mu, as the
  reference does (`introspection.reencode = 'mean'`; 'sample' uses a reparameterised sample);
  real images at a sample.
- The first `introspection.pretrain_epochs` epochs train plain VAC (phase 0), then IntroVAC
  (phase 1). Phases are static, so pre-training does not pay for the adversarial passes.
- Attribute manipulation (Sec. 4.2): z = mu + delta * d / ||d||, d the sum of the changed
  attributes' unit normals w_a / ||w_a|| (signed), renormalised as the reference does; delta is
  `edit.strength` for one attribute and `edit.strength_multi` for several (the paper's EyeFacial
  runs: 4 and 5).
- Conditional sampling with Langevin Monte Carlo (Sec. 4.3, Eq. 8): energy
  U(z) = BCE(C(z), [y, real]) + ||z||^2 / 2, chains started from the prior, fixed step size
  and number of steps; a sample is accepted when decode -> re-encode -> classify gives y.

Networks: `latent_jax.nets.resnet`, the reference's residual block (second LeakyReLU before the
addition).

Deviations, all documented in docs/methods.md:
- The reference re-creates the three optimizers on every batch of epoch 5 (resetting Adam) and
  loses the LR schedule afterwards; here each player keeps one optimizer whose schedule
  (halving at epochs 60/90/120) lives in its state.
- BatchNorm running statistics are taken from the passes on real data (E(x), G(z_r)); the
  passes on reconstructions and prior samples use batch statistics but do not update them.
  Under data parallelism the batch statistics are over the global batch (synchronised BN).
- The prior samples are decoded once (line 4) and the decoder's gradient of L^g_G comes from
  that decode's pullback; the reference decodes them twice (same maths).
- The classifier has no bias (the reference's choice; the paper allows one).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections

from latent_jax.methods import base
from latent_jax.nets import resnet
from latent_jax.errors import ConfigError

sg = jax.lax.stop_gradient


def _mean_bce(logits, targets):
    return jnp.mean(base.bce_with_logits(logits, targets))


@base.register("introvac")
class IntroVAC(base.Method):
    """IntroVAC; with `config.introspection.enabled = False` it is VAC."""

    resume_safe_keys = ("edit.", "langevin.")
    capabilities = frozenset({base.EDIT, base.SAMPLE, base.CLASSIFY})

    # The config keys it reads (base.Method.config_keys).
    config_keys = frozenset({
        "edit.strength", "edit.strength_multi", "introspection.enabled",
        "introspection.pretrain_epochs", "introspection.reencode", "langevin.num_steps",
        "langevin.reject", "langevin.step_size", "loss.adversarial_decoder",
        "loss.adversarial_encoder", "loss.classification", "loss.kl", "loss.reconstruction",
        "model.channels", "model.latent_dim"})

    def __init__(self, config: ml_collections.ConfigDict, data_spec, steps_per_epoch: int):
        super().__init__(config, data_spec, steps_per_epoch)
        m = config.model
        self.latent_dim = int(m.latent_dim)
        self.introspective = bool(config.introspection.enabled)
        self.encoder = resnet.ResidualEncoder(self.latent_dim, tuple(m.channels))
        self.decoder = resnet.ResidualDecoder(self.image_shape[0], tuple(m.channels),
                                              out_channels=self.image_shape[2])
        # Attribute logits, plus IntroVAC's "fake" logit.
        self.classifier = resnet.LinearClassifier(self.num_labels + int(self.introspective),
                                                  use_bias=False)
        self.weights = config.loss
        self.reencode = str(config.introspection.get("reencode", "mean"))
        if self.reencode not in ("mean", "sample"):
            raise ConfigError("config.introspection.reencode: must be 'mean' (the reference) or "
                             f"'sample', got {self.reencode!r}")
        self.pretrain_steps = int(round(float(config.introspection.pretrain_epochs)
                                        * self.steps_per_epoch)) if self.introspective else 0
        resnet.check_channels(self.image_shape[0], tuple(m.channels))

    def player_names(self):
        return ("encoder", "classifier", "decoder")

    def init(self, rng):
        k_e, k_c, k_d = jax.random.split(rng, 3)
        h, w, c = self.image_shape
        x = jnp.zeros((1, h, w, c), jnp.float32)
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        return {
            "encoder": base.init_player(self.encoder, self.tx("encoder"), k_e, x, train=False),
            "classifier": base.init_player(self.classifier, self.tx("classifier"), k_c, z),
            "decoder": base.init_player(self.decoder, self.tx("decoder"), k_d, z, train=False),
        }

    # ------------------------------------------------------------------ training
    def phase(self, step: int) -> int:
        if not self.introspective:
            return 0
        return 0 if step < self.pretrain_steps else 1

    def phase_boundaries(self):
        return (self.pretrain_steps,) if self.introspective else ()

    def _encode_train(self, params, batch_stats, x):
        (mu, logvar), new_vars = self.encoder.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"])
        return mu, logvar, new_vars["batch_stats"]

    def _decode_train(self, params, batch_stats, z):
        x, new_vars = self.decoder.apply({"params": params, "batch_stats": batch_stats}, z,
                                         train=True, mutable=["batch_stats"])
        return x, new_vars["batch_stats"]

    def _reencode_logits(self, params_e, stats_e, params_c, x, rng):
        """C(E(x)) of a re-encoded image (a reconstruction or a prior sample): the class logits
        and the fake logit. The code is the posterior mean (the reference) unless
        `introspection.reencode == 'sample'`."""
        mu, logvar, _ = self._encode_train(params_e, stats_e, x)
        z = mu
        if self.reencode == "sample":
            z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape)
        logits = self.classifier.apply({"params": params_c}, z)
        return logits[:, :self.num_labels], logits[:, self.num_labels]

    def classification_loss(self, logits, y):
        """L_CL on real images (Eq. 5, and Algorithm 1 line 6 for IntroVAC): mean BCE.

        VAC: the n attribute logits against y. IntroVAC: all n + 1 outputs against [y, real]
        (real = 0 on the fake logit), averaged over the n + 1 entries, in both phases, as the
        reference trains C; without the real target the fake logit only ever sees "fake"."""
        if not self.introspective:
            return _mean_bce(logits, y)
        real = jnp.zeros(y.shape[:-1] + (1,), logits.dtype)
        return _mean_bce(logits, jnp.concatenate([y.astype(logits.dtype), real], axis=-1))

    def train_step(self, states, batch, rng, phase):
        enc, cls, dec = states["encoder"], states["classifier"], states["decoder"]
        x, y = batch["image"], batch["label"]
        n = x.shape[0]
        k_eps, k_prior, k_rr, k_g, k_rr2, k_g2 = jax.random.split(rng, 6)
        w = self.weights
        adversarial = phase == 1
        z_prior = jax.random.normal(k_prior, (n, self.latent_dim))
        if adversarial:
            # Line 4: X_g = G(Z_g). Its value enters L1 detached; its pullback gives theta's
            # gradient of L^g_G in lines 12-13 without decoding Z_g a second time.
            x_g_value, pull_g = jax.vjp(
                lambda p: self._decode_train(p, dec.batch_stats, z_prior)[0], dec.params)

        def loss1(params_e, params_c, params_d):
            mu, logvar, stats_e = self._encode_train(params_e, enc.batch_stats, x)
            z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mu.shape)
            logits = self.classifier.apply({"params": params_c}, z)
            x_r, stats_d = self._decode_train(params_d, dec.batch_stats, z)
            l_ae = jnp.mean(jnp.abs(x - x_r))
            l_cl = self.classification_loss(logits, y)
            l_reg = jnp.mean(base.kl_to_standard_normal(mu, logvar))
            total = (w.reconstruction * l_ae + w.classification * l_cl + w.kl * l_reg)
            metrics = {
                "loss/reconstruction_l1": l_ae,
                "loss/classification": l_cl,
                "loss/kl": l_reg,
                "train/accuracy": jnp.mean(((logits[:, :self.num_labels] > 0) == (y > 0.5))
                                           .astype(jnp.float32)),
            }
            if adversarial:
                # Eq. 6-7, encoder/classifier side: detached reconstructions and samples are fake.
                _, fake_rr = self._reencode_logits(params_e, enc.batch_stats, params_c, sg(x_r),
                                                   k_rr)
                _, fake_g = self._reencode_logits(params_e, enc.batch_stats, params_c, x_g_value,
                                                  k_g)
                l_ec = _mean_bce(fake_rr, jnp.ones_like(fake_rr)) + _mean_bce(fake_g, jnp.ones_like(fake_g))
                total = total + w.adversarial_encoder * l_ec
                metrics["loss/adversarial_encoder"] = l_ec
            metrics["loss/total_encoder"] = total
            return total, (z, stats_e, stats_d, metrics)

        grads, (z_r, stats_e, stats_d, metrics) = jax.grad(loss1, argnums=(0, 1, 2), has_aux=True)(
            enc.params, cls.params, dec.params)
        g_e, g_c, g_d = grads
        new_enc = base.apply_updates(enc, self.tx("encoder"), g_e, batch_stats=stats_e)
        new_cls = base.apply_updates(cls, self.tx("classifier"), g_c)

        if adversarial:
            def loss2(params_d, x_g):
                # Line 8: X_rr = G(dt(Z_r)); X_g from line 4; E and C as just updated.
                x_rr, _ = self._decode_train(params_d, dec.batch_stats, sg(z_r))
                cls_rr, fake_rr = self._reencode_logits(new_enc.params, new_enc.batch_stats,
                                                        new_cls.params, x_rr, k_rr2)
                _, fake_g = self._reencode_logits(new_enc.params, new_enc.batch_stats,
                                                  new_cls.params, x_g, k_g2)
                # BCE of [class logits, fake logit] against [y, real], averaged over the
                # n_labels + 1 entries (the reference's reduction of Eq. 6's two terms).
                l_g_r = _mean_bce(jnp.concatenate([cls_rr, fake_rr[:, None]], axis=-1),
                                  jnp.concatenate([y, jnp.zeros_like(fake_rr)[:, None]], axis=-1))
                l_g_g = _mean_bce(fake_g, jnp.zeros_like(fake_g))
                l_g = l_g_r + l_g_g
                return w.adversarial_decoder * l_g, l_g

            (g_d2, g_x_g), l_g = jax.grad(loss2, argnums=(0, 1), has_aux=True)(
                dec.params, x_g_value)
            (g_d_via_x_g,) = pull_g(g_x_g)
            g_d = jax.tree.map(lambda a, b, c: a + b + c, g_d, g_d2, g_d_via_x_g)
            metrics["loss/adversarial_decoder"] = l_g
        new_dec = base.apply_updates(dec, self.tx("decoder"), g_d, batch_stats=stats_d)
        metrics["grad_norm/encoder"] = base.tree_l2(g_e)
        metrics["grad_norm/decoder"] = base.tree_l2(g_d)
        return {"encoder": new_enc, "classifier": new_cls, "decoder": new_dec}, metrics

    # ------------------------------------------------------------------ capabilities
    def encode(self, states, x):
        mu, _ = self.encoder.apply(states["encoder"].variables, x, train=False)
        return mu

    def decode(self, states, z):
        return self.decoder.apply(states["decoder"].variables, z, train=False)

    def classify(self, states, x):
        logits = self.classifier.apply(states["classifier"].variables, self.encode(states, x))
        return logits[:, :self.num_labels]

    def attribute_directions(self, states) -> jax.Array:
        """Unit normals of the classifier's hyperplanes, [n_labels, d]."""
        kernel = states["classifier"].params["linear"]["kernel"][:, :self.num_labels]
        w = kernel.T
        return w / jnp.linalg.norm(w, axis=-1, keepdims=True)

    def edit_strengths(self, changes, strength=None):
        """delta per row of `changes`: `edit.strength` when one attribute changes,
        `edit.strength_multi` (default: the same) when several do (Sec. 4.2: EyeFacial uses 4 for
        one attribute and 5 for both). An explicit `strength` applies to every row."""
        if strength is not None:
            return jnp.full(changes.shape[:1], float(strength), jnp.float32)
        single = float(self.config.edit.strength)
        multi = self.config.edit.get("strength_multi", None)
        multi = single if multi is None else float(multi)
        several = jnp.sum(changes != 0, axis=-1) > 1
        return jnp.where(several, multi, single).astype(jnp.float32)

    def edit(self, states, x, changes, strength=None):
        """Sec. 4.2: z_aug = mu + delta * d / ||d||, d = sum_a changes_a w_a / ||w_a||.

        One attribute: d / ||d|| is the unit normal of its hyperplane, +/- as asked. Several:
        the unit rows are summed and the sum renormalised to unit length (the reference), so
        delta is the distance moved whatever the number of attributes."""
        return self.decode(states, self.edit_latent(states, self.encode(states, x), changes,
                                                    strength))

    def edit_latent(self, states, z, changes, strength=None):
        """`edit` on codes: z + delta * d / ||d|| (rows without a change are left as they are)."""
        d = changes.astype(z.dtype) @ self.attribute_directions(states)
        norm = jnp.linalg.norm(d, axis=-1, keepdims=True)
        unit = jnp.where(norm > 0, d / jnp.where(norm > 0, norm, 1.0), 0.0)
        delta = self.edit_strengths(changes, strength)[:, None]
        return z + delta * unit

    def langevin(self, states, rng, y):
        """Sec. 4.3, Eq. 8: Langevin chains targeting p(z | y) proportional to p(y|z) p(z)."""
        cfg = self.config.langevin
        step = float(cfg.step_size)
        n = y.shape[0]
        targets = y.astype(jnp.float32)
        if self.introspective:  # the sample should also be classified as real
            targets = jnp.concatenate([targets, jnp.zeros((n, 1), jnp.float32)], axis=-1)
        params_c = states["classifier"].params

        def energy(z):
            logits = self.classifier.apply({"params": params_c}, z)
            return (jnp.sum(base.bce_with_logits(logits, targets))
                    + 0.5 * jnp.sum(jnp.square(z)))

        grad_energy = jax.grad(energy)
        k0, k_loop = jax.random.split(rng)
        z0 = jax.random.normal(k0, (n, self.latent_dim))

        def body(i, z):
            noise = jax.random.normal(jax.random.fold_in(k_loop, i), z.shape)
            return z - step * grad_energy(z) + jnp.sqrt(2.0 * step) * noise

        return jax.lax.fori_loop(0, int(cfg.num_steps), body, z0)

    def sample(self, states, rng, y):
        z = self.langevin(states, rng, y)
        x = self.decode(states, z)
        predicted = self.classify(states, x) > 0
        accepted = jnp.all(predicted == (y > 0.5), axis=-1)
        if not self.config.langevin.reject:
            accepted = jnp.ones_like(accepted)
        return x, accepted


@base.register("vac")
class VAC(IntroVAC):
    """VAC (Sec. 3, Eq. 5): IntroVAC without the introspective adversarial game."""

    # No adversarial phase: no adversarial weights, no pre-training length.
    config_keys = frozenset({
        "edit.strength", "edit.strength_multi", "introspection.enabled", "introspection.reencode",
        "langevin.num_steps", "langevin.reject", "langevin.step_size", "loss.classification",
        "loss.kl", "loss.reconstruction", "model.channels", "model.latent_dim"})

    def __init__(self, config, data_spec, steps_per_epoch):
        if config.introspection.enabled:
            raise ConfigError("config.introspection.enabled: must be False for method 'vac' "
                             "(use method 'introvac' for the adversarial model)")
        super().__init__(config, data_spec, steps_per_epoch)
