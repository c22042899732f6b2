"""Lr-LiVAE: Zheng & Sun, "Disentangling Latent Space for VAE by Label Relevant/Irrelevant
Dimensions" (CVPR 2019, paper 002).

The class c of an example is the joint class of `config.data.labels` (one categorical label, or
the 2^n combinations of n binary labels, or any mix: a mixed-radix index). C classes in all.

Players (each its own optimizer: the paper's Adam(5e-4), with the reference's b1 = 0, b2 = 0.9):
- `encoder_s` (psi): Encoder^s, the deterministic label-relevant code z_s = E_s(x), with two
  optimizer states (`optimizer_states`): 'gm' for the GM steps, 'end_to_end' for line 25. The
  reference has two Adam instances on this trunk (Lr-LiVAE.py:280-282, 294-296: id_opt on
  L_GM, id_rec_opt on the end-to-end loss); one shared state would let the larger loss's
  squared gradients in Adam's second moment shrink the other's steps (with b2 = 0.9 and
  L_rec summed over the image, the GM steps by about the gradient ratio). Logged:
  `grad_norm/encoder_s_gm` (mean over the GM steps) and `grad_norm/encoder_s` (end-to-end);
- `mixture`: the Gaussian-mixture prior of z_s (Eq. 6), means mu_c and diagonal covariances
  Sigma_c as log-variances, p(c) = 1 / C. Its parameters may have their own optimizer
  settings (`optim.mixture.groups`, `latent_jax/optim.py`); the `*_reference` presets divide
  the log-variances' LR by 10 every 30 epochs and keep the means', as the reference lowers
  only its precisions' (lr_ipt, Lr-LiVAE.py:281, 295, 330); the paper presets keep one
  constant LR and no floor on the variances;
- `encoder_u` (phi): Encoder^u, q(z_u|x) = N(mu, diag(exp(logvar)));
- `latent_adversary` (omega): q_omega(c|z_u);
- `decoder` (theta): G(z_s, z_u), on concat(z_s, z_u);
- `discriminator` (theta_d, only with `model.pixel_discriminator`): D(x, c), a projection
  discriminator: D(x, c) = w . phi(x) + <V onehot(c), phi(x)> + b.

Losses (per example, then averaged over the batch):
- Eq. 3  L_kl = KL(N(mu, Sigma) || N(0, I)), summed over the dimensions of z_u
  (`loss.kl_reduction='sum'`, the closed form) or averaged (the reference, 'mean');
- Eq. 4  L_C^adv = CE(q_omega(.|z_u), c), on a sample z_u;
- Eq. 5  L_E^adv = -sum_c 1/C log q_omega(c|z_u) (cross entropy to the uniform target);
- Eq. 7  L_lkd = -log N(z_s; mu_y, Sigma_y) (with its constants);
- Eq. 8  L_cls = -log q(y|z_s), q(c|z_s) = softmax_c(log N(z_s; mu_c, Sigma_c)) (p(c) = 1/C
  cancels), computed in log space with log-sum-exp (the reference multiplies densities, which
  underflows, and its + 1e-4 then caps the loss with zero gradient);
- Eq. 9  L_GM = L_cls + lambda_lkd L_lkd;
- Alg. 1 line 20  L_rec = 1/2 ||x - x'||^2 summed over the image (`loss.reconstruction_reduction
  ='half_sum'`), or the reference's per-element mean squared error ('mean');
- Eq. 10 and Alg. 1 lines 23-24: D's log-loss on x (real), x'_f = G(z_s, z_u) and
  x'_p = G(z'_s, z'_u) with z'_s ~ N(mu_c', Sigma_c'), z'_u ~ N(0, I) (fake); the generator's
  non-saturating -log D on both. `loss.adversarial='hinge'` is the reference's instead: D:
  relu(1 - D(x)) + relu(1 + D(x'_f)) + relu(1 + D(x'_p)), G: -D(x'_f) - D(x'_p).
  `loss.spectral_norm` (default True, with either loss: the paper's D is "like in [29]",
  Miyato & Koyama's spectrally normalised projection discriminator, and the reference's is
  spectrally normalised, nets.py:416-449) normalises every layer of D (one power iteration
  per step, persistent u in `batch_stats`), so that log vs hinge differ in the loss only.
  The prior samples' classes c' are the batch's (paper, `loss.prior_classes='batch'`) or drawn
  uniformly (reference, 'random').

Algorithm 1 inside one jitted step (`train_step`): `train.n_gm` GM-only updates of encoder_s and
the mixture on L_GM (lines 2-9), each on its own batch, then one end-to-end update (lines 10-29)
on a further batch (`train.fresh_batch=True`, Algorithm 1) or on the last GM batch (False, the
reference). The end-to-end gradients are those of lines 25-29, every player its own terms:
  psi   <- L_rec + lambda_lkd L_lkd          (mixture held fixed; lambda_lkd here is
                                             `loss.lkd_end_to_end` where set)
  phi   <- L_E^adv + lambda_kl L_kl + lambda_rec L_rec
  omega <- L_C^adv                           (on a detached z_u)
  theta <- L_rec + L_GD^adv                  (the encoders get no GAN gradient)
  theta_d <- L_D^adv                         (on detached images)
They come from one backward pass of one objective in which each term reaches only its players
(stop-gradients; the 1 vs lambda_rec weights of L_rec on psi/theta and on phi through a gradient
scale on z_u). The mixture changes only in the GM steps (lines 7-8).

Weights: the paper's (Sec. 4.2) lambda_lkd = 0.1, lambda_kl = 10 / N_pixel, lambda_rec = 1 / N_zu
(N_pixel = H * W, N_zu = dim z_u) are the default (`loss.*=None` computes them); the reference's
(L_rec x 10 as a per-element mean on every player, L_kl x 1 as a per-dimension mean, L_lkd x 1
in the end-to-end step, `loss.lkd_end_to_end`: its 10 * mean(likelihood_reg) with
likelihood_reg already x 0.1, Lr-LiVAE.py:235, 296) are `reference_choices` in the configs. On
phi the two agree (L_rec : L_kl within 4 % at 64 px); on psi and theta they differ by orders of
magnitude: relative to L_GD the paper's summed L_rec weighs about 600x what the reference's x 10
mean does, relative to the end-to-end L_lkd about 6000x (64 px; 150x and 1500x at 32 px).
Both are offered.

Semi-supervised (Sec. 3.6): rows with `labeled` False (the pipeline's mask) take the ambiguous
prior N(mu_t, Sigma_t) of Eq. 11 in L_lkd, and L_GM, L_E^adv, L_C^adv and the pixel-GAN terms on
x (which need a class) skip them.

Capabilities (`attribute_grid`: "fix z_u, vary z_s" across classes; `class_interpolation`: Figure 4(a)): `sample(y)`:
z_s ~ N(mu_c, Sigma_c), z_u ~ N(0, I), accepted where the mixture
posterior of the re-encoded sample is c. `classify`: the mixture posterior q(c|z_s) marginalised
per label (binary: a logit; categorical: the predicted class). `edit`: the source class is the
posterior's argmax; the target changes each label as asked (binary: +1 sets, -1 clears;
categorical: moves the class index by the change, cyclically); z_s is moved to the target class
keeping its standardised offset, z_s' = mu_t + sigma_t (z_s - mu_s) / sigma_s (Sec. 4.3's
z * sigma_c + mu_c with z the image's own), `strength` interpolating (1 = all the way), z_u kept.

Networks here are the project's plain conv stacks (`nets/conv.py`) at every size, not the
reference's VGG16-style encoders and 13-layer decoder; see docs/methods.md.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latent_jax.data import labels as labels_lib
from latent_jax.errors import ConfigError
from latent_jax.methods import base
from latent_jax.nets import conv
from latent_jax.nets import layers

sg = jax.lax.stop_gradient
LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------- classes
class JointClasses:
    """The joint class of several labels as one mixed-radix index, and back."""

    def __init__(self, label_names: Sequence[str], classes: Mapping[str, int] | None = None):
        self.names = tuple(label_names)
        self.radices = tuple(labels_lib.num_classes(n, classes) for n in self.names)
        self.categorical = tuple(labels_lib.label_kind(n) == labels_lib.CATEGORICAL
                                 for n in self.names)
        strides, s = [], 1
        for r in reversed(self.radices):
            strides.insert(0, s)
            s *= r
        self.strides = tuple(strides)
        self.num_classes = s

    def index(self, y: jax.Array) -> jax.Array:
        """Label rows [..., n] (binary 0/1, categorical class indices) -> class [...]."""
        values = jnp.round(y).astype(jnp.int32)
        return jnp.sum(values * jnp.asarray(self.strides, jnp.int32), axis=-1)

    def labels(self, c: jax.Array) -> jax.Array:
        """Class [...] -> label rows [..., n] (float32)."""
        cols = [(c // s) % r for s, r in zip(self.strides, self.radices)]
        return jnp.stack(cols, axis=-1).astype(jnp.float32)

    def table(self) -> np.ndarray:
        """[C, n]: the label row of every class."""
        c = np.arange(self.num_classes)
        return np.stack([(c // s) % r for s, r in zip(self.strides, self.radices)], -1)

    def target(self, source: jax.Array, changes: jax.Array) -> jax.Array:
        """The class each row is edited to (`changes` [B, n] in {-1, 0, +1}): binary labels set
        (+1) or cleared (-1), categorical labels moved by the change (cyclically)."""
        y = self.labels(source)
        radices = jnp.asarray(self.radices, jnp.float32)
        moved = jnp.mod(y + jnp.round(changes), radices)
        binary = jnp.where(changes > 0, 1.0, jnp.where(changes < 0, 0.0, y))
        return self.index(jnp.where(jnp.asarray(self.categorical), moved, binary))


def per_label_columns(log_post: jax.Array, classes: JointClasses) -> jax.Array:
    """A posterior over joint classes [B, C] marginalised per label -> [B, n]: binary labels as
    the logit log p(1) - log p(0), categorical ones as the most probable class index (the
    `classify` contract)."""
    table = classes.table()
    cols = []
    for i, (r, cat) in enumerate(zip(classes.radices, classes.categorical)):
        per_value = jnp.stack([jax.nn.logsumexp(
            jnp.where(jnp.asarray(table[:, i] == v), log_post, -jnp.inf), axis=-1)
            for v in range(r)], axis=-1)
        cols.append(jnp.argmax(per_value, -1).astype(jnp.float32) if cat
                    else per_value[:, 1] - per_value[:, 0])
    return jnp.stack(cols, axis=-1)


# ------------------------------------------------------------------------------- networks
def features(x, channels, top, hidden=()):
    """Inside a compact module: the conv trunk (`conv.ConvTrunk`) for images [B, H, W, C], or,
    with `hidden` (`model.kind='mlp'`, vectors such as the 2-D toy's points), ReLU dense layers
    of those widths (Sec. 4.1: 32, 64, 64)."""
    if hidden:
        h = x.reshape((x.shape[0], -1))
        for i, width in enumerate(hidden):
            h = nn.relu(nn.Dense(width, name=f"hidden{i}")(h))
        return h
    return conv.ConvTrunk(tuple(channels), top, name="trunk")(x)


class DeterministicEncoder(nn.Module):
    """Encoder^s: x -> z_s (no sampling)."""

    dim: int
    channels: Sequence[int]
    top: int
    hidden: Sequence[int] = ()

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.dim, name="z_s")(features(x, self.channels, self.top, self.hidden))


class DiagonalGaussianEncoder(nn.Module):
    """Encoder^u (and the baselines' encoders): x -> (mu, logvar) of q(z|x)."""

    dim: int
    channels: Sequence[int]
    top: int
    hidden: Sequence[int] = ()

    @nn.compact
    def __call__(self, x):
        h = features(x, self.channels, self.top, self.hidden)
        return nn.Dense(self.dim, name="mu")(h), nn.Dense(self.dim, name="logvar")(h)


class MLPDecoder(nn.Module):
    """z -> ReLU dense layers (the encoder's widths, reversed) -> a linear output of
    `out_dim` (vector data are unscaled)."""

    hidden: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, z):
        h = z
        for i, width in enumerate(reversed(tuple(self.hidden))):
            h = nn.relu(nn.Dense(width, name=f"hidden{i}")(h))
        return nn.Dense(self.out_dim, name="out")(h)


def make_decoder(image_shape, channels, top, hidden):
    """The conv decoder for images, the MLP decoder for vectors (`model.kind='mlp'`)."""
    if hidden:
        return MLPDecoder(tuple(hidden), int(np.prod(image_shape)))
    return conv.ConvDecoder(image_shape[0], tuple(channels), int(top),
                            out_channels=image_shape[2])


class GaussianMixture(nn.Module):
    """Eq. 6: the class-conditional Gaussians of z_s, means [C, d] (Xavier-uniform, as the
    reference) and log-variances [C, d] (0: unit variance)."""

    num_classes: int
    dim: int

    @nn.compact
    def __call__(self):
        means = self.param("means", nn.initializers.xavier_uniform(),
                           (self.num_classes, self.dim))
        log_var = self.param("log_var", nn.initializers.zeros, (self.num_classes, self.dim))
        return means, log_var


class MLP(nn.Module):
    """Hidden ReLU layers then a linear output (the latent adversary)."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, h):
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, name=f"hidden{i}")(h))
        return nn.Dense(self.out, name="out")(h)


class ProjectionDiscriminator(nn.Module):
    """D(x, c) = w . phi(x) + b + <V onehot(c), phi(x)> (Miyato & Koyama's projection, the
    reference's label use): conv4x4/2 + LeakyReLU(0.1) per entry of `channels`, global average
    pooling, a dense layer to phi [top] + LeakyReLU. `spectral`: every layer spectrally
    normalised (one power iteration per call with `update_stats`, u kept in `batch_stats`)."""

    num_classes: int
    channels: Sequence[int]
    top: int
    spectral: bool = False
    hidden: Sequence[int] = ()      # vectors: dense layers instead of the convolutions

    @nn.compact
    def __call__(self, x, c, update_stats: bool = False):
        def layer(module, h):
            if self.spectral:
                return nn.SpectralNorm(module)(h, update_stats=update_stats)
            return module(h)

        h = x
        if self.hidden:
            h = h.reshape((h.shape[0], -1))
            for i, width in enumerate(self.hidden[:-1]):
                h = nn.leaky_relu(layer(nn.Dense(width, name=f"hidden{i}"), h), 0.1)
        else:
            for i, ch in enumerate(self.channels):
                h = nn.leaky_relu(layer(layers.Conv(ch, (4, 4), strides=(2, 2),
                                                padding=((1, 1), (1, 1)), name=f"conv{i}"), h),
                                  0.1)
            h = jnp.mean(h, axis=(1, 2))
        top = self.hidden[-1] if self.hidden else self.top
        phi = nn.leaky_relu(layer(nn.Dense(top, name="phi"), h), 0.1)
        out = layer(nn.Dense(1, name="out"), phi)[:, 0]
        onehot = jax.nn.one_hot(c, self.num_classes, dtype=phi.dtype)
        embed = layer(nn.Dense(top, use_bias=False, name="embed"), onehot)
        return out + jnp.sum(embed * phi, axis=-1)


def network_hidden(m, image_shape) -> tuple[int, ...]:
    """The MLP widths when `model.kind == 'mlp'` (vector data), () for the conv networks."""
    kind = str(m.get("kind", "conv"))
    if kind not in ("conv", "mlp"):
        raise ConfigError(f"config.model.kind: 'conv' or 'mlp', got {kind!r}")
    if kind == "conv" and len(image_shape) != 3:
        raise ConfigError(f"config.model.kind: the data are vectors {image_shape}; use 'mlp'")
    return tuple(int(v) for v in m.mlp_hidden) if kind == "mlp" else ()


# ------------------------------------------------------------------------------- helpers
@jax.custom_vjp
def scale_gradient(x, scale):
    """Identity forward; multiplies the incoming gradient by `scale` on the way back."""
    return x


def _scale_fwd(x, scale):
    return x, scale


def _scale_bwd(scale, g):
    return g * scale, None


scale_gradient.defvjp(_scale_fwd, _scale_bwd)


def diag_gaussian_log_density(z, means, log_var):
    """log N(z; mu_c, diag(exp(log_var_c))) for every class: z [B, d], means [C, d] -> [B, C]."""
    d = z[:, None, :] - means[None]
    return -0.5 * jnp.sum(d * d * jnp.exp(-log_var)[None] + log_var[None] + LOG_2PI, axis=-1)


def ambiguous_prior(means, log_var):
    """Eq. 11 with p(c) = 1/C: mu_t = mean_c mu_c, sigma_t^2 = mean_c (sigma_c^2 + mu_c^2) - mu_t^2."""
    mu_t = jnp.mean(means, axis=0)
    var_t = jnp.mean(jnp.exp(log_var) + means ** 2, axis=0) - mu_t ** 2
    return mu_t, jnp.log(jnp.maximum(var_t, 1e-12))


def masked_mean(values, mask):
    """Mean of `values` [B] over rows where `mask`; 0 when no row is selected."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def sub_batch(batch, i: int, k: int):
    """Sub-batch i of a batch of `k` stacked batches ([B, k, ...]); the batch itself if k = 1."""
    if k == 1:
        return batch
    return {key: value[:, i] for key, value in batch.items()}


def reconstruction(x, x_rec, reduction: str):
    """Per-example L_rec [B]: 1/2 ||x - x'||^2 ('half_sum', Alg. 1 line 20) or the mean
    squared error over the image's elements ('mean', the reference)."""
    sq = jnp.square(x - x_rec).reshape((x.shape[0], -1))
    return 0.5 * jnp.sum(sq, axis=-1) if reduction == "half_sum" else jnp.mean(sq, axis=-1)


def kl_per_example(mu, logvar, reduction: str):
    kl = base.kl_to_standard_normal(mu, logvar)
    return jnp.sum(kl, axis=-1) if reduction == "sum" else jnp.mean(kl, axis=-1)


# ------------------------------------------------------------------------------- the method
@base.register("lrlivae")
class LrLiVAE(base.Method):
    """Lr-LiVAE; `model.pixel_discriminator=False` is the VAE without the pixel GAN."""

    capabilities = frozenset({base.EDIT, base.SAMPLE, base.CLASSIFY, base.ATTRIBUTE_GRID,
                              base.CODE_SPLIT, base.CLASS_INTERPOLATION})
    resume_safe_keys = ("edit.",)

    # The config keys it reads (base.Method.config_keys); model.mlp_hidden with kind 'mlp'.
    config_keys = frozenset({
        "edit.strength", "loss.adversarial", "loss.encoder_adversarial",
        "loss.generator_adversarial", "loss.kl", "loss.kl_reduction", "loss.lkd",
        "loss.lkd_end_to_end", "loss.prior_classes", "loss.reconstruction",
        "loss.reconstruction_encoder_u", "loss.reconstruction_reduction", "loss.spectral_norm",
        "model.adversary_hidden", "model.channels", "model.discriminator_channels", "model.kind",
        "model.mlp_hidden", "model.pixel_discriminator", "model.top", "model.z_s_dim",
        "model.z_u_dim", "train.fresh_batch", "train.n_gm"})

    @classmethod
    def batches_per_step(cls, config) -> int:
        n_gm = int(config.train.n_gm)
        return n_gm + 1 if bool(config.train.fresh_batch) else max(n_gm, 1)

    def __init__(self, config, data_spec, steps_per_epoch):
        self.n_gm = int(config.train.n_gm)
        if self.n_gm < 0:
            raise ConfigError(f"config.train.n_gm: must be >= 0, got {self.n_gm}")
        self.pixel_gan = bool(config.model.pixel_discriminator)   # read by player_names
        super().__init__(config, data_spec, steps_per_epoch)
        if not self.label_names:
            raise ConfigError("config.data.labels: lrlivae needs at least one label")
        self.k = self.batches_per_step(config)
        self.classes = JointClasses(self.label_names, self.label_classes)
        C = self.classes.num_classes
        m = config.model
        self.ds, self.du = int(m.z_s_dim), int(m.z_u_dim)
        if self.ds <= 0 or self.du <= 0:
            raise ConfigError("config.model.z_s_dim / z_u_dim: must be positive")
        channels = tuple(m.channels)
        hidden = network_hidden(m, self.image_shape)
        if not hidden:
            conv.check_channels(self.image_shape[0], channels)
        self.encoder_s = DeterministicEncoder(self.ds, channels, int(m.top), hidden)
        self.encoder_u = DiagonalGaussianEncoder(self.du, channels, int(m.top), hidden)
        self.mixture = GaussianMixture(C, self.ds)
        self.adversary = MLP(tuple(m.adversary_hidden), C)
        self.decoder = make_decoder(self.image_shape, channels, int(m.top), hidden)
        lo = config.loss
        self.adversarial = str(lo.adversarial)
        if self.adversarial not in ("log", "hinge"):
            raise ConfigError("config.loss.adversarial: 'log' (Eq. 10) or 'hinge' (the reference), "
                              f"got {self.adversarial!r}")
        # SN is its own key (default True, as Miyato & Koyama's projection D and the
        # reference's); None, what configs saved before the key had a default hold, is the
        # former coupling to the hinge loss, so that such a config still builds the D it
        # trained (its checkpoints predate the per-loss optimizer states and do not restore).
        spectral = lo.get("spectral_norm", None)
        spectral = self.adversarial == "hinge" if spectral is None else bool(spectral)
        self.discriminator = ProjectionDiscriminator(C, tuple(m.discriminator_channels),
                                                     int(m.top), spectral=spectral,
                                                     hidden=hidden)
        self.prior_classes = str(lo.prior_classes)
        if self.prior_classes not in ("batch", "random"):
            raise ConfigError("config.loss.prior_classes: 'batch' (paper) or 'random' "
                              f"(reference), got {self.prior_classes!r}")
        self.rec_reduction = str(lo.reconstruction_reduction)
        if self.rec_reduction not in ("half_sum", "mean"):
            raise ConfigError("config.loss.reconstruction_reduction: 'half_sum' or 'mean', got "
                              f"{self.rec_reduction!r}")
        self.kl_reduction = str(lo.kl_reduction)
        if self.kl_reduction not in ("sum", "mean"):
            raise ConfigError(f"config.loss.kl_reduction: 'sum' or 'mean', got "
                              f"{self.kl_reduction!r}")
        # Sec. 4.2: lambda_kl = 10 / N_pixel, lambda_rec = 1 / N_zu where not given.
        self.w_lkd = float(lo.lkd)
        lkd_e2e = lo.get("lkd_end_to_end", None)
        self.w_lkd_e2e = self.w_lkd if lkd_e2e is None else float(lkd_e2e)
        self.w_rec = float(lo.reconstruction)
        self.w_rec_u = 1.0 / self.du if lo.reconstruction_encoder_u is None else float(
            lo.reconstruction_encoder_u)
        n_pixel = int(np.prod(self.image_shape[:2])) if not hidden else 1
        self.w_kl = 10.0 / n_pixel if lo.kl is None else float(lo.kl)
        self.w_e_adv = float(lo.encoder_adversarial)
        self.w_gan = float(lo.generator_adversarial)
        if self.w_rec <= 0:
            raise ConfigError(f"config.loss.reconstruction: must be positive, got {self.w_rec}")

    def player_names(self):
        names = ("encoder_s", "mixture", "encoder_u", "latent_adversary", "decoder")
        return names + (("discriminator",) if self.pixel_gan else ())

    def optimizer_states(self, player):
        # encoder_s takes L_GM (lines 6-8) and the end-to-end loss (line 25) in separate
        # updates, each with its own optimizer state, as the reference's id_opt and id_rec_opt.
        return ("gm", "end_to_end") if player == "encoder_s" else ()

    def updates_per_step(self, player, state=None):
        # Alg. 1: n_gm GM updates of encoder_s and the mixture per iteration, plus encoder_s's
        # end-to-end update.
        if state is not None:
            return {"gm": max(self.n_gm, 1), "end_to_end": 1}[state]
        return {"encoder_s": self.n_gm + 1, "mixture": max(self.n_gm, 1)}.get(player, 1)

    def init(self, rng):
        keys = jax.random.split(rng, 6)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        states = {
            "encoder_s": base.init_player(self.encoder_s, self.tx("encoder_s"), keys[0], x),
            "mixture": base.init_player(self.mixture, self.tx("mixture"), keys[1]),
            "encoder_u": base.init_player(self.encoder_u, self.tx("encoder_u"), keys[2], x),
            "latent_adversary": base.init_player(self.adversary, self.tx("latent_adversary"),
                                                 keys[3], jnp.zeros((1, self.du))),
            "decoder": base.init_player(self.decoder, self.tx("decoder"), keys[4],
                                        jnp.zeros((1, self.ds + self.du))),
        }
        if self.pixel_gan:
            states["discriminator"] = base.init_player(
                self.discriminator, self.tx("discriminator"), keys[5], x,
                jnp.zeros((1,), jnp.int32))
        return states

    # ------------------------------------------------------------------ losses
    def gm_terms(self, z_s, means, log_var, c):
        """Eq. 7-8 per example: (L_cls, L_lkd, correct), in log space."""
        log_dens = diag_gaussian_log_density(z_s, means, log_var)          # [B, C]
        log_post = jax.nn.log_softmax(log_dens, axis=-1)                  # p(c) = 1/C cancels
        take = lambda t: jnp.take_along_axis(t, c[:, None], axis=-1)[:, 0]
        return -take(log_post), -take(log_dens), jnp.argmax(log_dens, -1) == c

    def _labeled(self, batch):
        y = batch["label"]
        if "labeled" in batch:
            return batch["labeled"].astype(bool)
        return jnp.ones(y.shape[:1], bool)

    def _gm_step(self, enc_s, mix, batch):
        """Alg. 1 lines 3-8 on one batch: encoder_s and the mixture on L_GM."""
        x, c, m = batch["image"], self.classes.index(batch["label"]), self._labeled(batch)

        def loss_fn(p_s, p_m):
            z_s = self.encoder_s.apply({"params": p_s}, x)
            means, log_var = self.mixture.apply({"params": p_m})
            l_cls, l_lkd, correct = self.gm_terms(z_s, means, log_var, c)
            l_gm = masked_mean(l_cls + self.w_lkd * l_lkd, m)
            return l_gm, (masked_mean(l_cls, m), masked_mean(l_lkd, m),
                          masked_mean(correct.astype(jnp.float32), m))

        (g_s, g_m), (l_cls, l_lkd, acc) = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
            enc_s.params, mix.params)
        return (base.apply_updates(enc_s, self.tx("encoder_s"), g_s, opt_state_key="gm"),
                base.apply_updates(mix, self.tx("mixture"), g_m),
                {"loss/gm_cls": l_cls, "loss/gm_lkd": l_lkd, "train/gm_accuracy": acc,
                 "grad_norm/encoder_s_gm": base.tree_l2(g_s)})

    def _d_loss(self, real, fake_rec, fake_prior):
        if self.adversarial == "hinge":
            return (jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake_rec)
                    + jax.nn.relu(1.0 + fake_prior))
        return jax.nn.softplus(-real) + jax.nn.softplus(fake_rec) + jax.nn.softplus(fake_prior)

    def _g_loss(self, fake_rec, fake_prior):
        if self.adversarial == "hinge":
            return -fake_rec - fake_prior
        return jax.nn.softplus(-fake_rec) + jax.nn.softplus(-fake_prior)

    def train_step(self, states, batch, rng, phase):
        del phase
        enc_s, mix = states["encoder_s"], states["mixture"]
        metrics = {}
        gm_metrics = []
        for i in range(self.n_gm):   # lines 2-9
            enc_s, mix, mi = self._gm_step(enc_s, mix, sub_batch(batch, i, self.k))
            gm_metrics.append(mi)
        if gm_metrics:
            metrics.update({key: jnp.mean(jnp.stack([mi[key] for mi in gm_metrics]))
                            for key in gm_metrics[0]})
        e2e = sub_batch(batch, self.k - 1, self.k)     # line 10 (or the last GM batch)
        x, y = e2e["image"], e2e["label"]
        c, m = self.classes.index(y), self._labeled(e2e)
        n = x.shape[0]
        k_eps, k_prior_s, k_prior_u, k_cls = jax.random.split(rng, 4)
        means, log_var = sg(mix.params["means"]), sg(mix.params["log_var"])
        if self.prior_classes == "batch":
            c_p = c
        else:
            c_p = jax.random.randint(k_cls, (n,), 0, self.classes.num_classes)
        z_s_p = means[c_p] + jnp.exp(0.5 * log_var[c_p]) * jax.random.normal(
            k_prior_s, (n, self.ds))
        z_u_p = jax.random.normal(k_prior_u, (n, self.du))
        mu_t, log_var_t = ambiguous_prior(means, log_var)
        disc = states.get("discriminator")

        def objective(params):
            z_s = self.encoder_s.apply({"params": params["encoder_s"]}, x)       # line 17
            mu, logvar = self.encoder_u.apply({"params": params["encoder_u"]}, x)  # line 11
            z_u = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mu.shape)  # 13-14
            l_kl = jnp.mean(kl_per_example(mu, logvar, self.kl_reduction))          # line 12
            # Lines 15-16: encoder_u fools the adversary (held fixed), which learns on sg(z_u).
            adv_params = params["latent_adversary"]
            log_q_e = jax.nn.log_softmax(self.adversary.apply({"params": sg(adv_params)}, z_u))
            l_e_adv = masked_mean(-jnp.mean(log_q_e, axis=-1), m)
            log_q_c = jax.nn.log_softmax(self.adversary.apply({"params": adv_params}, sg(z_u)))
            l_c_adv = masked_mean(-jnp.take_along_axis(log_q_c, c[:, None], -1)[:, 0], m)
            # Line 18: L_lkd under the (fixed) mixture; Eq. 11's prior for unlabelled rows.
            ld_y = -jnp.take_along_axis(diag_gaussian_log_density(z_s, means, log_var),
                                        c[:, None], -1)[:, 0]
            ld_t = -diag_gaussian_log_density(z_s, mu_t[None], log_var_t[None])[:, 0]
            l_lkd = jnp.mean(jnp.where(m, ld_y, ld_t))
            # Lines 19-20: x'_f; L_rec reaches psi and theta with weight w_rec, phi with w_rec_u.
            z_u_rec = scale_gradient(z_u, self.w_rec_u / self.w_rec)
            x_f = self.decoder.apply({"params": params["decoder"]},
                                     jnp.concatenate([z_s, z_u_rec], axis=-1))
            l_rec = jnp.mean(reconstruction(x, x_f, self.rec_reduction))
            total = (self.w_rec * l_rec + self.w_lkd_e2e * l_lkd + self.w_kl * l_kl
                     + self.w_e_adv * l_e_adv + l_c_adv)
            out = {"loss/reconstruction": l_rec, "loss/lkd": l_lkd, "loss/kl": l_kl,
                   "loss/encoder_adversarial": l_e_adv, "loss/latent_adversary": l_c_adv,
                   "train/latent_adversary_accuracy": masked_mean(
                       (jnp.argmax(log_q_c, -1) == c).astype(jnp.float32), m)}
            new_stats = None
            if self.pixel_gan:
                # Lines 21-24. The generator's images come from detached codes (no GAN gradient
                # reaches the encoders); D sees detached images in its own loss.
                x_f_g = self.decoder.apply({"params": params["decoder"]},
                                           jnp.concatenate([sg(z_s), sg(z_u)], axis=-1))
                x_p = self.decoder.apply({"params": params["decoder"]},
                                         jnp.concatenate([z_s_p, z_u_p], axis=-1))
                p_d = params["discriminator"]
                d_vars = {"params": p_d}
                if disc.batch_stats:
                    d_vars["batch_stats"] = disc.batch_stats
                images = jnp.concatenate([x, sg(x_f_g), sg(x_p)], axis=0)
                labels = jnp.concatenate([c, c, c_p], axis=0)
                if disc.batch_stats:
                    d_out, upd = self.discriminator.apply(d_vars, images, labels,
                                                          update_stats=True,
                                                          mutable=["batch_stats"])
                    new_stats = upd["batch_stats"]
                else:
                    d_out = self.discriminator.apply(d_vars, images, labels)
                d_real, d_rec, d_prior = jnp.split(d_out, 3)
                l_d = masked_mean(self._d_loss(d_real, d_rec, d_prior), m)
                frozen = dict(d_vars, params=sg(p_d))
                g_out = self.discriminator.apply(frozen, jnp.concatenate([x_f_g, x_p], 0),
                                                 jnp.concatenate([c, c_p], 0))
                g_rec, g_prior = jnp.split(g_out, 2)
                l_g = masked_mean(self._g_loss(g_rec, g_prior), m)
                total = total + self.w_gan * l_g + l_d
                out.update({"loss/discriminator": l_d, "loss/generator_adversarial": l_g,
                            "train/d_real": jnp.mean(d_real), "train/d_fake": jnp.mean(d_rec)})
            return total, (out, new_stats)

        players = ("encoder_s", "encoder_u", "latent_adversary", "decoder") + (
            ("discriminator",) if self.pixel_gan else ())
        params = {"encoder_s": enc_s.params,
                  **{p: states[p].params for p in players if p != "encoder_s"}}
        grads, (out, d_stats) = jax.grad(objective, has_aux=True)(params)
        new = dict(states, mixture=mix)
        new["encoder_s"] = base.apply_updates(enc_s, self.tx("encoder_s"), grads["encoder_s"],
                                              opt_state_key="end_to_end")
        for p in players[1:]:
            new[p] = base.apply_updates(states[p], self.tx(p), grads[p],
                                        batch_stats=d_stats if p == "discriminator" else None)
        metrics.update(out)
        for p in players:
            metrics[f"grad_norm/{p}"] = base.tree_l2(grads[p])
        if "labeled" in e2e:
            metrics["train/labeled_fraction"] = jnp.mean(m.astype(jnp.float32))
        return new, metrics

    # ------------------------------------------------------------------ capabilities
    def _mixture(self, states):
        p = states["mixture"].params
        return p["means"], p["log_var"]

    def encode(self, states, x):
        z_s = self.encoder_s.apply(states["encoder_s"].variables, x)
        mu, _ = self.encoder_u.apply(states["encoder_u"].variables, x)
        return jnp.concatenate([z_s, mu], axis=-1)

    def decode(self, states, z):
        return self.decoder.apply(states["decoder"].variables, z)

    def relevant_code_mask(self):
        """z_s (label relevant) first, then z_u: swap and sweep are Figures 6 and 5."""
        return np.arange(self.ds + self.du) < self.ds

    def class_log_posterior(self, states, z_s):
        """log q(c|z_s) [B, C] under the mixture (Eq. 8)."""
        means, log_var = self._mixture(states)
        return jax.nn.log_softmax(diag_gaussian_log_density(z_s, means, log_var), axis=-1)

    def classify(self, states, x):
        z_s = self.encoder_s.apply(states["encoder_s"].variables, x)
        return per_label_columns(self.class_log_posterior(states, z_s), self.classes)

    def edit(self, states, x, changes, strength=None):
        s = float(self.config.edit.strength) if strength is None else float(strength)
        z_s = self.encoder_s.apply(states["encoder_s"].variables, x)
        mu_u, _ = self.encoder_u.apply(states["encoder_u"].variables, x)
        src = jnp.argmax(self.class_log_posterior(states, z_s), axis=-1)
        moved = self._moved_z_s(states, z_s, src, self.classes.target(src, changes))
        z_new = z_s + s * (moved - z_s)
        return self.decode(states, jnp.concatenate([z_new, mu_u], axis=-1))

    def _moved_z_s(self, states, z_s, src, dst):
        """z_s moved from class src to class dst keeping its standardised offset (Sec. 4.3's
        z * sigma_c + mu_c with the image's own z)."""
        means, log_var = self._mixture(states)
        offset = (z_s - means[src]) * jnp.exp(-0.5 * log_var[src])
        return means[dst] + jnp.exp(0.5 * log_var[dst]) * offset

    def attribute_grid(self, states, x, label, n):
        """Fix z_u, vary z_s across classes (Figure 4(a), random codes within a class under a
        random z_u, is `class_interpolation`): per image, the input, its
        reconstruction, then n - 2 decodes with z_u fixed at its mean and z_s moved along label `label`: a binary label
        from its class-0 to its class-1 Gaussian (the other labels as the mixture posterior
        reads them), a categorical one through its first n - 2 classes. [B, n, H, W, C]."""
        z_s = self.encoder_s.apply(states["encoder_s"].variables, x)
        mu_u, _ = self.encoder_u.apply(states["encoder_u"].variables, x)
        src = jnp.argmax(self.class_log_posterior(states, z_s), axis=-1)
        y = self.classes.labels(src)
        radix = self.classes.radices[label]
        cols = max(n - 2, 1)

        def at_value(v):
            return self._moved_z_s(states, z_s, src, self.classes.index(y.at[:, label].set(v)))

        if self.classes.categorical[label]:
            codes = [at_value(float(v % radix)) for v in range(cols)]
        else:
            lo, hi = at_value(0.0), at_value(1.0)
            codes = [lo + t * (hi - lo) for t in np.linspace(0.0, 1.0, cols)]
        decodes = [self.decode(states, jnp.concatenate([z, mu_u], -1)) for z in codes]
        recon = self.decode(states, jnp.concatenate([z_s, mu_u], -1))
        return jnp.stack([x, recon] + decodes, axis=1)[:, :n]

    def class_interpolation(self, states, rng, classes, n):
        """Figure 4(a) (Sec. 4.3): one random z_u ~ N(0, I) for the whole grid, two random codes
        z1, z2 ~ N(0, I) of z_s's size, and for each class c (a row) the decodes of
        z^(i) * sigma_c + mu_c, z^(i) from z1 to z2 in n steps (a column shares z^(i)): what
        varies within a class. `classes` [R] are joint class indices. [R, n, H, W, C]."""
        means, log_var = self._mixture(states)
        k_u, k_1, k_2 = jax.random.split(rng, 3)
        z_u = jax.random.normal(k_u, (1, self.du))
        z1, z2 = (jax.random.normal(k, (self.ds,)) for k in (k_1, k_2))
        t = jnp.linspace(0.0, 1.0, n)[:, None]
        path = (1.0 - t) * z1 + t * z2                                       # [n, ds]
        z_s = path[None] * jnp.exp(0.5 * log_var[classes])[:, None] + means[classes][:, None]
        codes = jnp.concatenate([z_s.reshape(-1, self.ds),
                                 jnp.broadcast_to(z_u, (z_s.shape[0] * n, self.du))], -1)
        images = self.decode(states, codes)
        return images.reshape((len(classes), n) + images.shape[1:])

    def sample(self, states, rng, y):
        c = self.classes.index(y)
        means, log_var = self._mixture(states)
        k_s, k_u = jax.random.split(rng)
        z_s = means[c] + jnp.exp(0.5 * log_var[c]) * jax.random.normal(k_s, (c.shape[0], self.ds))
        z_u = jax.random.normal(k_u, (c.shape[0], self.du))
        images = self.decode(states, jnp.concatenate([z_s, z_u], axis=-1))
        z_back = self.encoder_s.apply(states["encoder_s"].variables, images)
        accepted = jnp.argmax(self.class_log_posterior(states, z_back), axis=-1) == c
        return images, accepted
