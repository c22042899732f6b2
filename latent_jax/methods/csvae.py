"""CSVAE and its baselines VAE, CondVAE and CondVAE-info: Klys, Snell, Zemel, "Learning Latent
Subspaces in Variational Autoencoders" (NeurIPS 2018; paper 001).

One module family, four registered methods sharing networks (`latent_jax/nets/larsen.py`:
Larsen-style conv nets for images, MLPs for the Swiss roll) and one train step:

- `csvae` (Sec. 4.1-4.2). Latent Z x W, W = W_1 x ... x W_k, one `model.w_dim`-dimensional
  subspace per binary label. Encoder heads q(z|x) = N(mu_phi1(x), sigma_phi1(x)) and
  q(w|x,y) = N(mu_phi2(x,y), sigma_phi2(x,y)) on a shared trunk; decoder p(x|w,z); fixed priors
  p(z) = N(0, I) and p(w_i|y_i=1) = N(mu_1, sigma_1), p(w_i|y_i=0) = N(mu_2, sigma_2)
  (`config.prior`, defaults mu_1 = (0,0), sigma_1 = (0.1,0.1), mu_2 = (3,3), sigma_2 = (1,1);
  sigmas are standard deviations). Loss of appendix 7.1 (Eq. 5 plus M2, N):
      encoder+decoder: beta1 E[-log p(x|w,z)] + beta2 KL(q(w|x,y) || p(w|y))
                       + beta3 KL(q(z|x) || p(z)) + beta4 M2,
      M2 = E_{q(z|x)} [ sum_y q_delta(y|z) log q_delta(y|z) ]   (negative entropy; the
           adversary's parameters are held fixed: M2 moves only the encoder),
      adversary:       -beta5 N,  N = E_{q(z|x)} [log q_delta(y|z)]   (on stop_gradient(z):
           N moves only the adversary), its own Adam.
  q_delta(y|z) is one Bernoulli per binary label (Cat over {0,1} per label).
  -log p(y) is a constant and dropped.
- `vae` (Sec. 3.1, Eq. 1): q(z|x), p(x|z), N(0, I) prior.
- `condvae` (Sec. 3.2, Eq. 2): q(z|x,y), p(x|z,y).
- `condvae_info` (Sec. 3.3, Eq. 3): q(z|x) (the encoder does not see y), p(x|z,y), and an
  adversary r_psi(z) -> y with max_phi min_psi CE(r_psi(z), y): the encoder's loss subtracts
  `loss.encoder_adversarial` x CE (adversary held fixed), the adversary minimises
  `loss.adversary` x CE on stop_gradient(z) with its own Adam.

Attribute switching functions G_ij (Sec. 4.3), the `edit` capability (`changes` +1 adds label
j, -1 removes it; `strength` s, default `config.edit.strength` = 1):
- vae: G(x) = mu_theta(mu_phi(x) - m_i + m_j), m_v = mean posterior mean of the examples with
  label value v; with strength s the shift is s (m_j - m_i).
- condvae / condvae_info: G(x, y, p) = mu_theta(mu_phi(x, y), p y^1): encode with the original
  label, decode with the switched label scaled by p = s (0 when removing).
- csvae: G(x, p) = mu_theta(mu_phi1(x), p): z from q(z|x), W_j set to p_j, the empirical mean of
  mu_phi2^j over the examples with the target value (Sec. 5.4's choice for the quantitative
  evaluation); with strength s, p_j = m_source + s (m_target - m_source).
- `attribute_grid` (Figures 3 and 5): csvae decodes z with W_j on a 2-D grid centred at mu_2
  (the y = 0 prior mean) when dim W_j = 2, or along the two principal components of the encoded
  positives {mu_phi2^j(x, y) : y_j = 1} when dim W_j > 2; two labels give the Cartesian product
  of representative points of both subspaces. The baselines sweep their edit: condvae(-info)
  the scaled label p in [0, 3] (Figure 3's range), vae the strength of the class-mean shift.

Deviations (also in docs/methods.md):
- Class means for edits are running statistics: every train step updates an exponential
  moving average (`edit.stats_momentum`) of the per-class sums, second moments and counts of
  the posterior means (W for csvae, Z for the baselines), stored next to the encoder's
  BatchNorm statistics. The paper takes them over the validation set; the `edit` capability
  sees no data set, so the statistics travel with the checkpoint instead.
- The edit capability receives no labels. The source value of a changed label follows from the
  change (+1: it was 0; -1: it was 1). Where a model needs the value of an unchanged label
  (condvae's encoder and decoder, condvae_info's decoder, csvae's q(w|x,y)), it is inferred by
  the model itself: the value with the lower negative ELBO, one label at a time. The paper sets
  p_l = 0 for unchanged labels of csvae, which with its priors (mu_1 = 0 for y = 1) would switch
  those labels on; with one label (Glasses, FacialHair) nothing is inferred.
- p(x|w,z) is a Gaussian with a fixed, configurable standard deviation (`loss.decoder_std`,
  default 1: -log p = sum of squared errors / 2 + const) or a Bernoulli; the paper writes a
  Gaussian with a learned sigma_theta(w, z) without saying how it is parameterised. Losses are
  summed over data and latent dimensions and averaged over the batch (the third-party code's
  sum over the batch makes the weights depend on the batch size).
- The baselines' latent has the size of CSVAE's Z x W (`model.z_dim + k * model.w_dim`), so
  every model gets the same latent capacity. Their KL weight is beta3 and their adversary
  weights are beta4 (encoder) and beta5 (adversary), the paper's "same hyperparameters".
- The encoder heads of Z and W share the conv trunk (one `encoder` player); the paper's
  phi_1 and phi_2 may be separate networks.
- Priors as in Sec. 4.2's formulas (y = 1 at the origin with std 0.1), although its prose says
  positives are encoded away from the origin; sigmas are standard deviations.
- `model.upsample='resize'` (the synthetic presets) replaces the decoder's transposed convs by
  nearest upsampling + conv5x5, for speed on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from latent_jax.methods import base
from latent_jax.nets import larsen
from latent_jax.errors import ConfigError

sg = jax.lax.stop_gradient


def _as_vector(value, dim: int, key: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, np.float32))
    if arr.ndim != 1 or arr.size not in (1, dim):
        raise ConfigError(f"{key}: needs one number or {dim} numbers (model.w_dim), got {value!r}")
    return np.broadcast_to(arr, (dim,)).astype(np.float32)


def gaussian_kl(mu, logvar, prior_mu, prior_std):
    """KL(N(mu, exp(logvar)) || N(prior_mu, prior_std^2)) per dimension."""
    var = jnp.exp(logvar)
    return (jnp.log(prior_std) - 0.5 * logvar
            + (var + jnp.square(mu - prior_mu)) / (2.0 * jnp.square(prior_std)) - 0.5)


def bernoulli_neg_entropy(logits):
    """sum_y q(y) log q(y) for a Bernoulli with the given logits (elementwise)."""
    p = jax.nn.sigmoid(logits)
    return p * jax.nn.log_sigmoid(logits) + (1.0 - p) * jax.nn.log_sigmoid(-logits)


class LatentSubspaceFamily(base.Method):
    """The shared machinery; subclasses say which heads exist, what the decoder sees and how
    the adversary enters the encoder's loss."""

    capabilities = frozenset({base.EDIT, base.SAMPLE, base.ATTRIBUTE_GRID})

    #: The latent block whose class statistics drive edits ('z' or 'w').
    edit_latent = "z"
    #: Whether the method has an adversary player predicting y from z.
    adversarial = False

    def __init__(self, config: ml_collections.ConfigDict, data_spec, steps_per_epoch: int):
        super().__init__(config, data_spec, steps_per_epoch)
        m = config.model
        self.k = self.num_labels
        if self.k < 1:
            raise ConfigError(f"config.data.labels: method {self.name} needs at least one label")
        self.z_dim = int(m.z_dim)
        self.w_dim = int(m.w_dim)
        if self.z_dim < 1:
            raise ConfigError(f"config.model.z_dim: must be >= 1, got {m.z_dim}")
        if self.w_dim < 1:
            raise ConfigError(f"config.model.w_dim: must be >= 1, got {m.w_dim}")
        self.kind = str(m.kind)
        self.data_dim = int(np.prod(self.image_shape))
        if self.kind == "conv":
            if len(self.image_shape) != 3:
                raise ConfigError(f"config.model.kind: 'conv' needs images, the data has shape "
                                 f"{self.image_shape}; use 'mlp'")
            larsen.check_channels(self.image_shape[0], tuple(m.channels))
            trunk = larsen.ConvTrunk(tuple(m.channels), int(m.hidden), name="trunk")
            if m.upsample not in ("transpose", "resize"):
                raise ConfigError(f"config.model.upsample: unknown {m.upsample!r}; known: "
                                 "transpose, resize")
            self.decoder = larsen.ConvDecoder(self.image_shape[0], tuple(m.channels),
                                              out_channels=self.image_shape[2],
                                              upsample=str(m.upsample))
        elif self.kind == "mlp":
            trunk = larsen.MLP(tuple(m.mlp_hidden), name="trunk")
            self.decoder = larsen.MLPDecoder(tuple(m.mlp_hidden), self.data_dim)
        else:
            raise ConfigError(f"config.model.kind: unknown {m.kind!r}; known: conv, mlp")
        self.encoder = larsen.GaussianHeads(trunk, tuple(self.heads()), tuple(m.head_hidden))
        if self.adversarial:
            self.adversary = larsen.LabelAdversary(tuple(m.adversary_hidden), self.k)
        lk = str(config.loss.likelihood)
        if lk not in ("gaussian", "bernoulli"):
            raise ConfigError(f"config.loss.likelihood: unknown {lk!r}; known: gaussian, bernoulli")
        if float(config.loss.decoder_std) <= 0:
            raise ConfigError("config.loss.decoder_std: must be positive")
        mom = float(config.edit.stats_momentum)
        if not 0.0 <= mom < 1.0:
            raise ConfigError(f"config.edit.stats_momentum: must be in [0, 1), got {mom}")
        self.stat_dim = dict((n, d) for n, d, _ in self.heads())[self.edit_latent]

    # ------------------------------------------------------------------ what differs
    def heads(self):
        """(name, dim, sees_y) of each Gaussian head."""
        raise NotImplementedError

    def decoder_code(self, latents: dict, y):
        raise NotImplementedError

    def kl_terms(self, posts: dict, y) -> dict:
        """Weighted KL terms (name -> (weight, per-example KL))."""
        mu, logvar = posts["z"]
        kl = jnp.sum(base.kl_to_standard_normal(mu, logvar), axis=-1)
        return {"kl_z": (float(self.config.loss.kl_z), kl)}

    def encoder_adversarial_term(self, logits, y):
        """The encoder's share of the adversarial game (adversary parameters held fixed)."""
        del logits, y
        return None

    @property
    def latent_dim(self) -> int:
        return self.z_dim + self.k * self.w_dim

    # ------------------------------------------------------------------ players
    def player_names(self):
        names = ("encoder", "decoder")
        return names + ("adversary",) if self.adversarial else names

    def _zero_stats(self):
        d = self.stat_dim
        return {"sum": jnp.zeros((self.k, 2, d)), "sq": jnp.zeros((self.k, 2, d, d)),
                "count": jnp.zeros((self.k, 2))}

    def init(self, rng):
        k_e, k_d, k_a = jax.random.split(rng, 3)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        y = jnp.zeros((1, self.k), jnp.float32)
        enc_vars = self.encoder.init(k_e, self._flat_in(x), y, train=False)
        code = jnp.zeros((1, self._code_dim()), jnp.float32)
        dec_vars = self.decoder.init(k_d, code, train=False)
        states = {
            "encoder": base.PlayerState(
                params=enc_vars["params"],
                batch_stats={"net": enc_vars.get("batch_stats", {})},
                opt_state=self.tx("encoder").init(enc_vars["params"]),
                buffers={"class_stats": self._zero_stats()}),
            "decoder": base.PlayerState(
                params=dec_vars["params"], batch_stats={"net": dec_vars.get("batch_stats", {})},
                opt_state=self.tx("decoder").init(dec_vars["params"])),
        }
        if self.adversarial:
            states["adversary"] = base.init_player(self.adversary, self.tx("adversary"), k_a,
                                                   jnp.zeros((1, dict((n, d) for n, d, _ in
                                                                      self.heads())["z"])))
        return states

    def _code_dim(self) -> int:
        dims = {n: d for n, d, _ in self.heads()}
        latents = {n: jnp.zeros((1, d)) for n, d in dims.items()}
        return int(self.decoder_code(latents, jnp.zeros((1, self.k))).shape[-1])

    def _flat_in(self, x):
        return x.reshape((x.shape[0], -1)) if self.kind == "mlp" else x

    # ------------------------------------------------------------------ network passes
    def _encode(self, params, net_stats, x, y, train: bool):
        variables = {"params": params, **({"batch_stats": net_stats} if net_stats else {})}
        if train and net_stats:
            posts, new = self.encoder.apply(variables, self._flat_in(x), y, train=True,
                                            mutable=["batch_stats"])
            return posts, new["batch_stats"]
        return self.encoder.apply(variables, self._flat_in(x), y, train=train), net_stats

    def _decode(self, params, net_stats, code, train: bool):
        variables = {"params": params, **({"batch_stats": net_stats} if net_stats else {})}
        if train and net_stats:
            out, new = self.decoder.apply(variables, code, train=True, mutable=["batch_stats"])
        else:
            out, new = self.decoder.apply(variables, code, train=train), {"batch_stats": net_stats}
        return out.reshape((code.shape[0],) + self.image_shape), new["batch_stats"]

    def neg_log_likelihood(self, x, x_hat):
        """-log p(x | code) per example, up to a constant."""
        x = x.reshape((x.shape[0], -1))
        x_hat = x_hat.reshape((x_hat.shape[0], -1))
        if self.config.loss.likelihood == "bernoulli":
            p = jnp.clip(x_hat, 1e-6, 1.0 - 1e-6)
            return -jnp.sum(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p), axis=-1)
        std = float(self.config.loss.decoder_std)
        return 0.5 * jnp.sum(jnp.square((x - x_hat) / std), axis=-1)

    # ------------------------------------------------------------------ training
    def _updated_stats(self, stats, mu, y):
        """EMA of per-(label, value) sums, second moments and counts of posterior means."""
        onehot = jnp.stack([1.0 - y, y], axis=-1)               # [B, k, 2]
        batch = {"sum": jnp.einsum("bkv,bd->kvd", onehot, mu),
                 "sq": jnp.einsum("bkv,bd,be->kvde", onehot, mu, mu),
                 "count": jnp.sum(onehot, axis=0)}
        m = float(self.config.edit.stats_momentum)
        return jax.tree.map(lambda s, b: m * s + (1.0 - m) * b, stats, batch)

    def train_step(self, states, batch, rng, phase):
        del phase
        enc, dec = states["encoder"], states["decoder"]
        x = batch["image"]
        y = (batch["label"] > 0.5).astype(jnp.float32)
        w = self.config.loss
        keys = dict(zip([n for n, _, _ in self.heads()],
                        jax.random.split(rng, len(self.heads()))))
        adv_params = states["adversary"].params if self.adversarial else None

        def main_loss(p_enc, p_dec):
            posts, stats_e = self._encode(p_enc, enc.batch_stats["net"], x, y, train=True)
            latents = {n: mu + jnp.exp(0.5 * lv) * jax.random.normal(keys[n], mu.shape)
                       for n, (mu, lv) in posts.items()}
            x_hat, stats_d = self._decode(p_dec, dec.batch_stats["net"],
                                          self.decoder_code(latents, y), train=True)
            rec = jnp.mean(self.neg_log_likelihood(x, x_hat))
            total = float(w.reconstruction) * rec
            metrics = {"loss/reconstruction": rec,
                       "train/mse": jnp.mean(jnp.square(x - x_hat))}
            for name, (weight, kl) in self.kl_terms(posts, y).items():
                kl = jnp.mean(kl)
                total = total + weight * kl
                metrics[f"loss/{name}"] = kl
            if self.adversarial:
                logits = self.adversary.apply({"params": sg(adv_params)}, latents["z"])
                term = self.encoder_adversarial_term(logits, y)
                total = total + float(w.encoder_adversarial) * term
                metrics["loss/encoder_adversarial"] = term
            metrics["loss/total"] = total
            aux = (latents["z"], posts[self.edit_latent][0], stats_e, stats_d, metrics)
            return total, aux

        (g_enc, g_dec), (z, mu_edit, stats_e, stats_d, metrics) = jax.grad(
            main_loss, argnums=(0, 1), has_aux=True)(enc.params, dec.params)
        class_stats = self._updated_stats(enc.buffers["class_stats"], sg(mu_edit), y)
        new = {
            "encoder": base.apply_updates(enc, self.tx("encoder"), g_enc,
                                          batch_stats={"net": stats_e},
                                          buffers={"class_stats": class_stats}),
            "decoder": base.apply_updates(dec, self.tx("decoder"), g_dec,
                                          batch_stats={"net": stats_d}),
        }
        metrics["grad_norm/encoder"] = base.tree_l2(g_enc)
        metrics["grad_norm/decoder"] = base.tree_l2(g_dec)
        if self.adversarial:
            adv = states["adversary"]
            z_fixed = sg(z)

            def adversary_loss(p_adv):
                # CSVAE: -beta5 N = beta5 E[-log q_delta(y|z)]; CondVAE-info: min_psi CE.
                logits = self.adversary.apply({"params": p_adv}, z_fixed)
                nll = jnp.mean(jnp.sum(base.bce_with_logits(logits, y), axis=-1))
                return float(w.adversary) * nll, (nll, logits)

            g_adv, (nll, logits) = jax.grad(adversary_loss, has_aux=True)(adv.params)
            new["adversary"] = base.apply_updates(adv, self.tx("adversary"), g_adv)
            metrics["loss/adversary_nll"] = nll
            metrics["adversary/accuracy"] = jnp.mean(((logits > 0) == (y > 0.5))
                                                     .astype(jnp.float32))
        return new, metrics

    # ------------------------------------------------------------------ capabilities
    def posteriors(self, states, x, y):
        """Posterior (mu, logvar) of every head, evaluation mode."""
        enc = states["encoder"]
        posts, _ = self._encode(enc.params, enc.batch_stats["net"], x,
                                y.astype(jnp.float32), train=False)
        return posts

    def decode_code(self, states, code):
        """Decoder mean for a decoder input (what edits, samples and grids decode)."""
        return self._decode_mean(states, code)

    def _decode_mean(self, states, code):
        dec = states["decoder"]
        out, _ = self._decode(dec.params, dec.batch_stats["net"], code, train=False)
        return out

    def encode(self, states, x, y=None):
        """Posterior means concatenated in decoder order ([w, z] for csvae, z otherwise).

        Methods whose encoder sees y use `y` (default: labels inferred by the model)."""
        if y is None:
            y = self.infer_labels(states, x, jnp.zeros((x.shape[0], self.k)))
        posts = self.posteriors(states, x, y)
        return jnp.concatenate([posts[n][0] for n in self.code_order()], axis=-1)

    def code_order(self):
        return ("z",)

    def split_code(self, code):
        out, start = {}, 0
        dims = {n: d for n, d, _ in self.heads()}
        for n in self.code_order():
            out[n] = code[:, start:start + dims[n]]
            start += dims[n]
        return out

    def decode(self, states, z, y=None):
        if y is None:
            y = jnp.zeros((z.shape[0], self.k))
        return self.decode_code(states, self.decoder_code(self.split_code(z), y))

    def neg_elbo(self, states, x, y):
        """Negative ELBO per example with the configured weights of its terms (posterior means
        as the latent sample, for a deterministic comparison)."""
        posts = self.posteriors(states, x, y)
        latents = {n: mu for n, (mu, _) in posts.items()}
        x_hat = self._decode_mean(states, self.decoder_code(latents, y))
        total = float(self.config.loss.reconstruction) * self.neg_log_likelihood(x, x_hat)
        for weight, kl in self.kl_terms(posts, y).values():
            total = total + weight * kl
        return total

    def infer_labels(self, states, x, changes):
        """Source labels for an edit: implied by the change where it is non-zero, otherwise
        the value with the lower negative ELBO (one label at a time, others as found so far)."""
        changes = changes.astype(jnp.float32)
        y = (changes < 0).astype(jnp.float32)
        if not self.label_dependent:
            return y
        for l in range(self.k):
            y0, y1 = y.at[:, l].set(0.0), y.at[:, l].set(1.0)
            pick1 = self.neg_elbo(states, x, y1) < self.neg_elbo(states, x, y0)
            inferred = jnp.where(pick1, 1.0, 0.0)
            y = y.at[:, l].set(jnp.where(changes[:, l] == 0, inferred, y[:, l]))
        return y

    #: Whether the encoder or decoder reads y (then unchanged labels must be inferred).
    label_dependent = True

    def reconstruct(self, states, x):
        y = self.infer_labels(states, x, jnp.zeros((x.shape[0], self.k)))
        posts = self.posteriors(states, x, y)
        latents = {n: mu for n, (mu, _) in posts.items()}
        return self._decode_mean(states, self.decoder_code(latents, y))

    def class_means(self, states):
        """[k, 2, d] mean posterior mean of the edit latent per label and value."""
        s = states["encoder"].buffers["class_stats"]
        return s["sum"] / jnp.maximum(s["count"], 1e-8)[..., None]

    def class_covariances(self, states):
        s = states["encoder"].buffers["class_stats"]
        n = jnp.maximum(s["count"], 1e-8)[..., None, None]
        mean = self.class_means(states)
        return s["sq"] / n - mean[..., :, None] * mean[..., None, :]

    def _strength(self, strength):
        return float(self.config.edit.strength if strength is None else strength)


def _edit_targets(changes, y_src, strength):
    """Decoder label for condvae(-info): p y^1 for added labels, 0 for removed, else source."""
    return jnp.where(changes > 0, strength, jnp.where(changes < 0, 0.0, y_src))


@base.register("vae")
class VAE(LatentSubspaceFamily):
    """VAE (Sec. 3.1); edits by latent arithmetic with class means (Sec. 4.3)."""

    # The config keys it reads (base.Method.config_keys); model.mlp_hidden with kind 'mlp'.
    config_keys = frozenset({
        "edit.stats_momentum", "edit.strength", "loss.decoder_std", "loss.kl_z",
        "loss.likelihood", "loss.reconstruction", "model.channels", "model.head_hidden",
        "model.hidden", "model.kind", "model.mlp_hidden", "model.upsample", "model.w_dim",
        "model.z_dim"})


    label_dependent = False

    def heads(self):
        return (("z", self.latent_dim, False),)

    def decoder_code(self, latents, y):
        del y
        return latents["z"]

    def edit(self, states, x, changes, strength=None):
        s = self._strength(strength)
        mu = self.posteriors(states, x, jnp.zeros((x.shape[0], self.k)))["z"][0]
        means = self.class_means(states)                       # [k, 2, d]
        direction = means[:, 1] - means[:, 0]                  # m_j - m_i for adding
        return self.decode_code(states, mu + s * changes.astype(mu.dtype) @ direction)

    def sample(self, states, rng, y):
        means = self.class_means(states)
        y = (y > 0.5).astype(jnp.float32)
        centre = 0.5 * (means[:, 0] + means[:, 1])
        shift = jnp.einsum("nk,kd->nd", y, means[:, 1] - centre) + jnp.einsum(
            "nk,kd->nd", 1.0 - y, means[:, 0] - centre)
        z = jax.random.normal(rng, (y.shape[0], self.latent_dim)) + shift
        return self.decode_code(states, z), jnp.ones((y.shape[0],), bool)

    def attribute_grid(self, states, x, label: int, n: int = 5):
        """Input, reconstruction, then the class-mean shift of `label` at n strengths in [0, 2]."""
        if isinstance(label, (tuple, list)):
            raise TypeError("vae has no per-label subspaces: no product grid")
        mu = self.posteriors(states, x, jnp.zeros((x.shape[0], self.k)))["z"][0]
        means = self.class_means(states)
        direction = means[label, 1] - means[label, 0]
        cols = [x, self.reconstruct(states, x)]
        for s in np.linspace(0.0, 2.0, n):
            cols.append(self.decode_code(states, mu + float(s) * direction))
        return jnp.stack(cols, axis=1)


@base.register("condvae")
class CondVAE(LatentSubspaceFamily):
    """CondVAE (Sec. 3.2): encoder and decoder conditioned on y."""

    # The config keys it reads (base.Method.config_keys); model.mlp_hidden with kind 'mlp'.
    config_keys = frozenset({
        "edit.stats_momentum", "edit.strength", "loss.decoder_std", "loss.kl_z",
        "loss.likelihood", "loss.reconstruction", "model.channels", "model.head_hidden",
        "model.hidden", "model.kind", "model.mlp_hidden", "model.upsample", "model.w_dim",
        "model.z_dim"})


    encoder_sees_y = True

    def heads(self):
        return (("z", self.latent_dim, self.encoder_sees_y),)

    def decoder_code(self, latents, y):
        return jnp.concatenate([latents["z"], y.astype(latents["z"].dtype)], axis=-1)

    def edit(self, states, x, changes, strength=None):
        s = self._strength(strength)
        y_src = self.infer_labels(states, x, changes)
        mu = self.posteriors(states, x, y_src)["z"][0]
        y_dec = _edit_targets(changes.astype(jnp.float32), y_src, s)
        return self.decode_code(states, self.decoder_code({"z": mu}, y_dec))

    def sample(self, states, rng, y):
        z = jax.random.normal(rng, (y.shape[0], self.latent_dim))
        y = (y > 0.5).astype(jnp.float32)
        return self.decode_code(states, self.decoder_code({"z": z}, y)), jnp.ones(
            (y.shape[0],), bool)

    def attribute_grid(self, states, x, label: int, n: int = 5):
        """Input, reconstruction, then the decoder's label l set to p in [0, 3] (Figure 3)."""
        if isinstance(label, (tuple, list)):
            raise TypeError(f"{self.name} has no per-label subspaces: no product grid")
        zeros = jnp.zeros((x.shape[0], self.k))
        y_src = self.infer_labels(states, x, zeros)
        mu = self.posteriors(states, x, y_src)["z"][0]
        cols = [x, self.reconstruct(states, x)]
        for p in np.linspace(0.0, 3.0, n):
            cols.append(self.decode_code(states, self.decoder_code(
                {"z": mu}, y_src.at[:, label].set(float(p)))))
        return jnp.stack(cols, axis=1)


@base.register("condvae_info")
class CondVAEInfo(CondVAE):
    """CondVAE-info (Sec. 3.3): q(z|x) without y, p(x|z,y), adversary r(z) -> y, Eq. 3."""

    # CondVAE's keys and its adversary's.
    config_keys = frozenset({
        "edit.stats_momentum", "edit.strength", "loss.adversary", "loss.decoder_std",
        "loss.encoder_adversarial", "loss.kl_z", "loss.likelihood", "loss.reconstruction",
        "model.adversary_hidden", "model.channels", "model.head_hidden", "model.hidden",
        "model.kind", "model.mlp_hidden", "model.upsample", "model.w_dim", "model.z_dim"})


    encoder_sees_y = False
    adversarial = True

    def encoder_adversarial_term(self, logits, y):
        # max_phi CE(r_psi(z), y): the encoder minimises -CE.
        return -jnp.mean(jnp.sum(base.bce_with_logits(logits, y), axis=-1))


@base.register("csvae")
class CSVAE(LatentSubspaceFamily):
    """CSVAE (Sec. 4): Z x W with one subspace W_i per label, M2 and N with an adversary."""

    # The config keys it reads (base.Method.config_keys); model.mlp_hidden with kind 'mlp'.
    config_keys = frozenset({
        "edit.grid_radius", "edit.stats_momentum", "edit.strength", "loss.adversary",
        "loss.decoder_std", "loss.encoder_adversarial", "loss.kl_w", "loss.kl_z",
        "loss.likelihood", "loss.reconstruction", "model.adversary_hidden", "model.channels",
        "model.head_hidden", "model.hidden", "model.kind", "model.mlp_hidden", "model.upsample",
        "model.w_dim", "model.z_dim", "prior.negative_mean", "prior.negative_std",
        "prior.positive_mean", "prior.positive_std"})


    capabilities = frozenset({base.EDIT, base.SAMPLE, base.ATTRIBUTE_GRID,
                              base.ATTRIBUTE_GRID_PAIR, base.CODE_SPLIT})

    edit_latent = "w"
    adversarial = True

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        p = config.prior
        d = self.w_dim
        self.pos_mean = _as_vector(p.positive_mean, d, "config.prior.positive_mean")
        self.pos_std = _as_vector(p.positive_std, d, "config.prior.positive_std")
        self.neg_mean = _as_vector(p.negative_mean, d, "config.prior.negative_mean")
        self.neg_std = _as_vector(p.negative_std, d, "config.prior.negative_std")
        for key, v in (("positive_std", self.pos_std), ("negative_std", self.neg_std)):
            if np.any(v <= 0):
                raise ConfigError(f"config.prior.{key}: must be positive, got {v}")

    @property
    def latent_dim(self) -> int:
        return self.z_dim + self.k * self.w_dim

    def heads(self):
        return (("z", self.z_dim, False), ("w", self.k * self.w_dim, True))

    def code_order(self):
        return ("w", "z")

    def relevant_code_mask(self):
        """w (the label subspaces) first, then z."""
        return np.arange(self.k * self.w_dim + self.z_dim) < self.k * self.w_dim

    def decoder_code(self, latents, y):
        del y
        return jnp.concatenate([latents["w"], latents["z"]], axis=-1)

    def prior_of_w(self, y):
        """Mean and std [B, k * w_dim] of p(w|y) = prod_i p(w_i|y_i)."""
        yb = (y > 0.5)[..., None]                                   # [B, k, 1]
        mean = jnp.where(yb, self.pos_mean, self.neg_mean)
        std = jnp.where(yb, self.pos_std, self.neg_std)
        return mean.reshape((y.shape[0], -1)), std.reshape((y.shape[0], -1))

    def kl_terms(self, posts, y):
        out = super().kl_terms(posts, y)
        mu, logvar = posts["w"]
        pm, ps = self.prior_of_w(y)
        out["kl_w"] = (float(self.config.loss.kl_w), jnp.sum(gaussian_kl(mu, logvar, pm, ps), -1))
        return out

    def encoder_adversarial_term(self, logits, y):
        # M2 = E[sum_y q_delta(y|z) log q_delta(y|z)], summed over the k labels.
        del y
        return jnp.mean(jnp.sum(bernoulli_neg_entropy(logits), axis=-1))

    def _block(self, a, l):
        return a[..., l * self.w_dim:(l + 1) * self.w_dim]

    def _edited_w(self, states, x, changes, strength):
        s = self._strength(strength)
        changes = changes.astype(jnp.float32)
        y_src = self.infer_labels(states, x, changes)
        posts = self.posteriors(states, x, y_src)
        w = posts["w"][0]
        means = self.class_means(states)                         # [k, 2, k * w_dim]
        blocks = []
        for l in range(self.k):
            m0, m1 = self._block(means[l, 0], l), self._block(means[l, 1], l)
            c = changes[:, l:l + 1]
            add, remove = m0 + s * (m1 - m0), m1 + s * (m0 - m1)
            blocks.append(jnp.where(c > 0, add, jnp.where(c < 0, remove, self._block(w, l))))
        return jnp.concatenate(blocks, axis=-1), posts["z"][0]

    def edit(self, states, x, changes, strength=None):
        """G_ij(x, p) = mu_theta(mu_phi1(x), p) with p_j the empirical mean of the target class."""
        w, z = self._edited_w(states, x, changes, strength)
        return self.decode_code(states, self.decoder_code({"w": w, "z": z}, None))

    def sample(self, states, rng, y):
        k_z, k_w = jax.random.split(rng)
        mean, std = self.prior_of_w(y)
        w = mean + std * jax.random.normal(k_w, mean.shape)
        z = jax.random.normal(k_z, (y.shape[0], self.z_dim))
        return self.decode_code(states, self.decoder_code({"w": w, "z": z}, None)), jnp.ones(
            (y.shape[0],), bool)

    def subspace_points(self, states, label: int, n: int, radius: float):
        """Points [n * n, w_dim] of W_label searched by the grids (Sec. 4.3).

        dim 2: a regular n x n grid of half-width `radius` centred half-way between the two
        prior means (mu_1 of y = 1 and mu_2 of y = 0), so that it spans both classes' regions
        (Figure 3 shows both); Sec. 4.3's "around mu_2" grid would leave the positives, at
        mu_1 = (0, 0) under the formula's priors, in a corner. Higher dimensions: mean of the
        encoded positives plus a, b in [-2, 2] standard deviations along their first two
        principal components."""
        if self.w_dim == 2:
            t = np.linspace(-radius, radius, n)
            a, b = np.meshgrid(t, t, indexing="ij")
            centre = 0.5 * (self.pos_mean + self.neg_mean)
            return jnp.asarray(centre + np.stack([a.ravel(), b.ravel()], axis=-1), jnp.float32)
        mean = self._block(self.class_means(states)[label, 1], label)
        cov = self.class_covariances(states)[label, 1]
        cov = cov[label * self.w_dim:(label + 1) * self.w_dim,
                  label * self.w_dim:(label + 1) * self.w_dim]
        evals, evecs = jnp.linalg.eigh(cov)
        pcs = evecs[:, ::-1][:, :2] * jnp.sqrt(jnp.maximum(evals[::-1][:2], 0.0))
        t = np.linspace(-2.0, 2.0, n)
        a, b = np.meshgrid(t, t, indexing="ij")
        coeff = jnp.asarray(np.stack([a.ravel(), b.ravel()], axis=-1), jnp.float32)
        return mean + coeff @ pcs.T

    def representative_points(self, states, label: int, n: int):
        """n points of W_label: the positives' mean +/- 1.5 std along their first PC."""
        mean = self._block(self.class_means(states)[label, 1], label)
        sl = slice(label * self.w_dim, (label + 1) * self.w_dim)
        cov = self.class_covariances(states)[label, 1][sl, sl]
        evals, evecs = jnp.linalg.eigh(cov)
        pc = evecs[:, -1] * jnp.sqrt(jnp.maximum(evals[-1], 0.0))
        return mean + jnp.asarray(np.linspace(-1.5, 1.5, n), jnp.float32)[:, None] * pc

    def attribute_grid(self, states, x, label, n: int = 5):
        """Input, reconstruction, then decodes of mu_phi1(x) with W set to grid points.

        `label` an int: W_label over `subspace_points` (n x n, Figure 3), other subspaces at the
        encoded value. `label` a pair (a, b): the Cartesian product of n representative points
        of W_a and of W_b (Figure 5)."""
        zeros = jnp.zeros((x.shape[0], self.k))
        y_src = self.infer_labels(states, x, zeros)
        posts = self.posteriors(states, x, y_src)
        w, z = posts["w"][0], posts["z"][0]
        cols = [x, self.reconstruct(states, x)]
        sl = lambda l: slice(l * self.w_dim, (l + 1) * self.w_dim)  # noqa: E731
        if isinstance(label, (tuple, list)):
            a, b = label
            pa = self.representative_points(states, a, n)
            pb = self.representative_points(states, b, n)
            for i in range(n):
                for j in range(n):
                    wi = w.at[:, sl(a)].set(pa[i]).at[:, sl(b)].set(pb[j])
                    cols.append(self.decode_code(states, self.decoder_code({"w": wi, "z": z},
                                                                           None)))
        else:
            radius = float(self.config.edit.grid_radius)
            for p in self.subspace_points(states, label, n, radius):
                wi = w.at[:, sl(label)].set(p)
                cols.append(self.decode_code(states, self.decoder_code({"w": wi, "z": z}, None)))
        return jnp.stack(cols, axis=1)
