"""IFcVAEGAN and the naive cVAEGAN: Creswell, Bharath, Sengupta, "Conditional Autoencoders with
Adversarial Information Factorization" (paper 003).

Players (each its own RMSprop, lr 2e-4; the discriminator's squared-gradient decay is 0.5 and
it has no momentum buffer: the paper's "momentum = 0.5" is the authors' `alpha=opts.mom`):
- `encoder` E_phi: a conv trunk with heads mu, logvar of q(z|x) (E_z) and the label head
  y_hat = sigmoid(E_y(x)) (one output per label);
- `decoder` D_theta(y_hat, z) (label first, as the reference);
- `discriminator` C_chi: real vs fake, a logit;
- `auxiliary` A_psi (ifcvaegan only): an MLP z -> y logits.

Losses:
- Eq. 3  L_rec = BCE(x_hat, x), x_hat = D(y_hat, z), z ~ q(z|x);
- Eq. 4  L_gan = 1/3 [BCE(C(x), real) + BCE(C(x_hat), fake) + BCE(C(D(y, z_p)), fake)],
  z_p ~ N(0, I), the prior sample decoded with the true label (the reference's choice; the
  paper's D_theta(z) names no label);
- Eq. 5  L_class = BCE(y_hat, y);
- Eq. 6  L_class_hat = BCE(E_y(x_hat), target): the label head on the re-encoded
  reconstruction against y_hat held fixed (`loss.class_hat_target='y_hat'`, the paper) or
  against y ('y', the authors' code);
- Eq. 7  L_aux = BCE(A(z), y);
- Eq. 8  L_KL = KL(q(z|x) || N(0, I));
- Eq. 9  decoder:  L_dec = L_rec + beta L_class_hat - delta L_gan;
- Eq. 10, 12  encoder: L_enc - aux L_aux, L_enc = L_rec + alpha L_KL + beta L_class_hat
  + rho L_class - delta L_gan (`loss.aux` = 1 for ifcvaegan, Eq. 12's unit weight; 0 for the
  naive cVAEGAN, which also has beta = 0);
- Eq. 11  A minimises L_aux on a detached z; C minimises L_gan on detached images.
All gradients come from one backward pass of one objective in which each term reaches only the
players its equation names (stop-gradients). Algorithm 1 does one forward pass and updates all
four players from it; its lines 12-13 swap the names ("chi <- -grad_chi L_aux", "psi <-
-grad_psi L_gan"), but the text trains C_chi on L_gan and A_psi on L_aux, as here.

Two objectives (the paper gives no pixel reduction, so the effective weight of every term
against L_rec is a choice; `effective_weights` computes them):
- the authors' (the configs' default, `loss.reduction='reference'`): L_rec = BCE summed over
  pixels and batch / (H W) (their / 64^2 at 64 px), L_KL summed over dimensions and batch / n_z,
  the class and aux terms batch means, C's terms 0.3 x a batch sum, the generator the
  non-saturating 0.5 x a batch sum of BCE(C(x_hat), real) + BCE(C(x_p), real)
  (`loss.generator='non_saturating'`); at 64x64, batch 64, n_z 200 this weighs the KL 4.1, rho
  L_class 6.4, -L_aux 64, beta L_class_hat 64 and the generator 204.8 per unit of an image's
  pixel-summed BCE. With `loss.class_hat_grad='head'` (the authors': their head reads detached
  features) L_class_hat trains only the label head; 'all' sends it to the trunk and, through
  x_hat, to the decoder, as Eq. 9 writes.
- 'paper' (`loss.reduction='paper'`, the configs' `pixel_sum` objective): every term a batch
  mean, an image's BCE summed over its pixels and the KL over its dimensions, the saturating
  generator -delta/3 [BCE(C(x_hat), fake) + BCE(C(x_p), fake)] ('saturating'; L_gan's real term
  does not depend on E or D and is left out). Its weights against L_rec are 20-6,000x below the
  authors' (docs/methods.md): the factorisation terms are inert there.

Fixed reference bug: the reference's label head reads detached trunk features, so L_class never
trains the trunk; here the head reads the features with their gradient, as the paper's E_phi =
(E_z, E_y) implies (only L_class_hat can be given the authors' routing, above).

The decoder's transposed convolutions place input i on outputs 2i-1..2i+1 (PyTorch's padding 1,
output_padding 1, as the authors'), not flax 'SAME''s 2i..2i+2.

Edit (Sec. 3.3): encode (z = the posterior mean, y_hat the label head), set y_hat to the target
for the changed labels (+1 -> 1, -1 -> 0), keep the others, decode. Sample: z ~ N(0, I) with
y_hat = y, accepted when the label head of the re-encoded sample agrees with y.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latent_jax.errors import ConfigError
from latent_jax.methods import base
from latent_jax.nets import layers

sg = jax.lax.stop_gradient


def _conv_stack(x, channels):
    """Inside a compact module: conv5x5/2 (pad 2) + ReLU per entry, flattened (the reference's
    encoder and discriminator trunk)."""
    h = x
    for i, c in enumerate(channels):
        h = nn.relu(layers.Conv(c, (5, 5), strides=(2, 2), padding=((2, 2), (2, 2)),
                            name=f"conv{i}")(h))
    return h.reshape((h.shape[0], -1))


class Encoder(nn.Module):
    """conv5x5/2 (pad 2) + ReLU per entry of `channels` (reference 64, 128, 256, 512), flattened;
    heads mu, logvar [n_z] and the label logits [n_labels]."""

    latent_dim: int
    num_labels: int
    channels: Sequence[int]

    @nn.compact
    def __call__(self, x, detach_label_features: bool = False):
        """`detach_label_features`: the label head reads the trunk's features without their
        gradient (the authors' encoder, used for their L_class_hat)."""
        h = _conv_stack(x, self.channels)
        return (nn.Dense(self.latent_dim, name="mu")(h),
                nn.Dense(self.latent_dim, name="logvar")(h),
                nn.Dense(self.num_labels, name="label")(sg(h) if detach_label_features else h))


# lax.conv_transpose's padding of the stride-2-dilated input for PyTorch's ConvTranspose2d(k=3,
# s=2, padding=1, output_padding=1): (k - 1 - p, k - 1 - p + output_padding) per side, which
# sends input i to outputs 2i-1..2i+1 (flax's 'SAME' is (2, 1): outputs 2i..2i+2).
DECONV_PADDING = ((1, 2), (1, 2))


class Decoder(nn.Module):
    """concat(y_hat, z) -> dense to [S/2^k, S/2^k, channels[-1]] + ReLU -> transposed conv3x3/2
    with BatchNorm + ReLU per remaining entry (reversed) -> transposed conv3x3/2 to the image
    channels, sigmoid (the reference's decoder at 64 px: 512x4x4 -> 256 -> 128 -> 64 -> 3). The
    transposed convolutions pad as PyTorch's padding 1, output_padding 1 (`DECONV_PADDING`)."""

    image_size: int
    channels: Sequence[int]
    out_channels: int = 3

    @nn.compact
    def __call__(self, y_hat, z, train: bool = False):
        c = tuple(self.channels)
        s = self.image_size // 2 ** len(c)
        h = jnp.concatenate([y_hat.astype(z.dtype), z], axis=-1)
        h = nn.relu(nn.Dense(s * s * c[-1], name="project")(h)).reshape((-1, s, s, c[-1]))
        for i, ch in enumerate(reversed(c[:-1])):
            h = layers.ConvTranspose(ch, (3, 3), strides=(2, 2), padding=DECONV_PADDING,
                                      name=f"deconv{i}")(h)
            h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     name=f"bn{i}")(h))
        h = layers.ConvTranspose(self.out_channels, (3, 3), strides=(2, 2),
                                 padding=DECONV_PADDING, name="to_image")(h)
        return nn.sigmoid(h)


class Discriminator(nn.Module):
    """C_chi: the encoder's conv stack (no normalisation) and a linear real/fake logit."""

    channels: Sequence[int]

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, name="logit")(_conv_stack(x, self.channels))[:, 0]


class Auxiliary(nn.Module):
    """A_psi: z -> hidden ReLU layers (reference 1000, 1000) -> label logits."""

    num_labels: int
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, z):
        h = z
        for i, w in enumerate(self.hidden):
            h = nn.relu(nn.Dense(w, name=f"hidden{i}")(h))
        return nn.Dense(self.num_labels, name="logits")(h)


def _bce_logits(logits, targets):
    """Elementwise BCE of probabilities sigmoid(logits) against targets."""
    return base.bce_with_logits(logits, targets)


def _bce_probs(p, targets, eps=1e-7):
    """Elementwise BCE of probabilities p in (0, 1) against targets (the decoder's sigmoid
    output against the image)."""
    p = jnp.clip(p, eps, 1.0 - eps)
    return -(targets * jnp.log(p) + (1.0 - targets) * jnp.log1p(-p))


@base.register("ifcvaegan")
class IFcVAEGAN(base.Method):
    """IFcVAEGAN (Eq. 12); `cvaegan_naive` is the same without L_aux and L_class_hat."""

    capabilities = frozenset({base.EDIT, base.SAMPLE, base.CLASSIFY, base.CODE_SPLIT})
    with_auxiliary = True

    # The config keys it reads (base.Method.config_keys; the naive model's too).
    config_keys = frozenset({
        "loss.alpha", "loss.aux", "loss.beta", "loss.class_hat_grad", "loss.class_hat_target",
        "loss.delta", "loss.generator", "loss.reduction", "loss.rho", "model.auxiliary_hidden",
        "model.channels", "model.latent_dim"})

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        if not self.label_names:
            raise ConfigError(f"config.data.labels: {self.name} needs at least one label")
        m, lo = config.model, config.loss
        h, _, c = self.image_shape
        channels = tuple(m.channels)
        if h % 2 ** len(channels) or h // 2 ** len(channels) < 1:
            raise ConfigError(f"config.model.channels: {len(channels)} halvings do not divide "
                              f"the image size {h}")
        self.latent_dim = int(m.latent_dim)
        self.encoder = Encoder(self.latent_dim, self.num_labels, channels)
        self.decoder = Decoder(h, channels, out_channels=c)
        self.discriminator = Discriminator(channels)
        self.auxiliary = Auxiliary(self.num_labels, tuple(m.auxiliary_hidden))
        self.w = {k: float(lo[k]) for k in ("alpha", "beta", "rho", "delta", "aux")}
        if not self.with_auxiliary and (self.w["aux"] or self.w["beta"]):
            raise ConfigError("config.loss.aux / beta: the naive cVAEGAN has neither L_aux nor "
                              "L_class_hat; set them to 0 (or use method 'ifcvaegan')")
        self.reduction = str(lo.reduction)
        if self.reduction not in ("paper", "reference"):
            raise ConfigError(f"config.loss.reduction: 'paper' or 'reference', got "
                              f"{self.reduction!r}")
        self.class_hat_target = str(lo.class_hat_target)
        if self.class_hat_target not in ("y_hat", "y"):
            raise ConfigError("config.loss.class_hat_target: 'y_hat' (Eq. 6) or 'y' (the "
                              f"reference), got {self.class_hat_target!r}")
        self.generator = str(lo.generator)
        if self.generator not in ("saturating", "non_saturating"):
            raise ConfigError("config.loss.generator: 'saturating' (Eq. 9-10) or "
                              f"'non_saturating' (the reference), got {self.generator!r}")
        if "class_hat_grad" not in lo:
            raise ConfigError("config.loss.class_hat_grad: missing: a run of a version before "
                              "the authors' objective and decoder padding; retrain it")
        self.class_hat_grad = str(lo.class_hat_grad)
        if self.class_hat_grad not in ("all", "head"):
            raise ConfigError("config.loss.class_hat_grad: 'all' (Eq. 9-10: trunk, head and, "
                              "through x_hat, the decoder) or 'head' (the reference: the label "
                              f"head only), got {self.class_hat_grad!r}")

    def player_names(self):
        names = ("encoder", "decoder", "discriminator")
        return names + (("auxiliary",) if self.with_auxiliary else ())

    def init(self, rng):
        k_e, k_d, k_c, k_a = jax.random.split(rng, 4)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        y = jnp.zeros((1, self.num_labels), jnp.float32)
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        states = {
            "encoder": base.init_player(self.encoder, self.tx("encoder"), k_e, x),
            "decoder": base.init_player(self.decoder, self.tx("decoder"), k_d, y, z),
            "discriminator": base.init_player(self.discriminator, self.tx("discriminator"),
                                              k_c, x),
        }
        if self.with_auxiliary:
            states["auxiliary"] = base.init_player(self.auxiliary, self.tx("auxiliary"), k_a, z)
        return states

    # ------------------------------------------------------------------ losses
    def _rec(self, x_hat, x):
        """Eq. 3: the BCE of each image summed over its pixels, averaged over the batch (the
        paper's L_bce averages over the M examples), or the sum over pixels and batch divided
        by H * W (the reference's / 64^2 at 64 px: B / (H W) times the paper's)."""
        total = jnp.sum(_bce_probs(x_hat, x))
        if self.reduction == "reference":
            return total / (x.shape[1] * x.shape[2])
        return total / x.shape[0]

    def _kl(self, kl):
        """Eq. 8: KL(q(z|x) || N(0, I)) of each example (summed over z's dimensions), averaged
        over the batch; the reference divides its sum over dimensions and batch by n_z."""
        if self.reduction == "reference":
            return jnp.sum(kl) / self.latent_dim
        return jnp.mean(jnp.sum(kl, -1))

    def _gan(self, values, scale_paper: float, scale_reference: float):
        """Per-example GAN terms [B] -> the paper's batch mean times `scale_paper`, or the
        reference's batch sum times `scale_reference`."""
        if self.reduction == "reference":
            return scale_reference * jnp.sum(values)
        return scale_paper * jnp.mean(values)

    def effective_weights(self, batch_size: int) -> dict[str, float]:
        """Each encoder/decoder term's coefficient on the batch mean of its per-example
        quantity (the KL summed over dimensions, one label's BCE, one image's pair of generator
        BCEs), per unit of an image's pixel-summed reconstruction BCE: how much the objective
        weighs each term against L_rec, whatever the overall scale (RMSprop divides it out)."""
        h, w_, _ = self.image_shape
        w = self.w
        if self.reduction == "paper":
            rec, kl, mean, gan = 1.0, 1.0, 1.0, 1.0 / 3.0
        else:   # L_rec = sum / (H W) = (B / H W) x the batch mean: divide the rest by that
            rec = batch_size / (h * w_)
            kl = batch_size / self.latent_dim / rec
            mean = 1.0 / rec
            gan = batch_size * (0.5 if self.generator == "non_saturating" else 0.3) / rec
        return {"kl": w["alpha"] * kl, "class": w["rho"] * mean,
                "class_hat": w["beta"] * mean, "aux": w["aux"] * mean,
                "generator": w["delta"] * gan}

    def train_step(self, states, batch, rng, phase):
        del phase
        x, y = batch["image"], batch["label"].astype(jnp.float32)
        n = x.shape[0]
        k_eps, k_p, k_aux = jax.random.split(rng, 3)
        w = self.w
        dec = states["decoder"]

        def objective(params):
            mu, logvar, y_logit = self.encoder.apply({"params": params["encoder"]}, x)
            y_hat = jax.nn.sigmoid(y_logit)
            z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_eps, mu.shape)
            x_hat, upd = self.decoder.apply({"params": params["decoder"],
                                             "batch_stats": dec.batch_stats}, y_hat, z,
                                            train=True, mutable=["batch_stats"])
            z_p = jax.random.normal(k_p, (n, self.latent_dim))
            x_p, _ = self.decoder.apply({"params": params["decoder"],
                                         "batch_stats": dec.batch_stats}, y, z_p, train=True,
                                        mutable=["batch_stats"])
            l_rec = self._rec(x_hat, x)                                              # Eq. 3
            kl = base.kl_to_standard_normal(mu, logvar)
            l_kl = self._kl(kl)                                                      # Eq. 8
            l_class = jnp.mean(_bce_logits(y_logit, y))                              # Eq. 5
            # Eq. 4 for C (detached images) ...
            d_in = jnp.concatenate([x, sg(x_hat), sg(x_p)], axis=0)
            d_real, d_rec, d_p = jnp.split(
                self.discriminator.apply({"params": params["discriminator"]}, d_in), 3)
            real, fake = jnp.ones((n,)), jnp.zeros((n,))
            gan_terms = (_bce_logits(d_real, real) + _bce_logits(d_rec, fake)
                         + _bce_logits(d_p, fake))
            l_gan_c = self._gan(gan_terms, 1.0 / 3.0, 0.3)
            # ... and for the generator side (E, D) with C held fixed. The real term of L_gan
            # does not depend on E or D and is left out.
            g_rec, g_p = jnp.split(self.discriminator.apply(
                {"params": sg(params["discriminator"])}, jnp.concatenate([x_hat, x_p], 0)), 2)
            if self.generator == "saturating":          # -delta L_gan (Eq. 9, 10)
                gen_sum = -self._gan(_bce_logits(g_rec, fake) + _bce_logits(g_p, fake),
                                     1.0 / 3.0, 0.3)
            else:                                       # the fakes labelled real
                gen_sum = self._gan(_bce_logits(g_rec, real) + _bce_logits(g_p, real),
                                    1.0 / 3.0, 0.5)
            total = (l_rec + w["alpha"] * l_kl + w["rho"] * l_class + w["delta"] * gen_sum
                     + l_gan_c)
            metrics = {"loss/reconstruction": l_rec, "loss/kl": l_kl, "loss/class": l_class,
                       "loss/gan": l_gan_c, "loss/generator_gan": gen_sum,
                       "train/label_accuracy": jnp.mean(((y_logit > 0) == (y > 0.5))
                                                        .astype(jnp.float32))}
            if w["beta"]:                                                            # Eq. 6
                _, _, y_hh = self.encoder.apply({"params": params["encoder"]}, x_hat,
                                                self.class_hat_grad == "head")
                target = sg(y_hat) if self.class_hat_target == "y_hat" else y
                l_class_hat = jnp.mean(_bce_logits(y_hh, target))
                total = total + w["beta"] * l_class_hat
                metrics["loss/class_hat"] = l_class_hat
            if self.with_auxiliary:                                                  # Eq. 7, 11, 12
                z_aux = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_aux, mu.shape)
                a_enc = self.auxiliary.apply({"params": sg(params["auxiliary"])}, z_aux)
                a_own = self.auxiliary.apply({"params": params["auxiliary"]}, sg(z_aux))
                l_aux_enc = jnp.mean(_bce_logits(a_enc, y))
                l_aux = jnp.mean(_bce_logits(a_own, y))
                total = total - w["aux"] * l_aux_enc + l_aux
                metrics["loss/aux"] = l_aux
                metrics["train/aux_accuracy"] = jnp.mean(((a_own > 0) == (y > 0.5))
                                                         .astype(jnp.float32))
            return total, (metrics, upd["batch_stats"])

        params = {p: states[p].params for p in self.player_names()}
        grads, (metrics, stats) = jax.grad(objective, has_aux=True)(params)
        new = {p: base.apply_updates(states[p], self.tx(p), grads[p],
                                     batch_stats=stats if p == "decoder" else None)
               for p in self.player_names()}
        for p in self.player_names():
            metrics[f"grad_norm/{p}"] = base.tree_l2(grads[p])
        return new, metrics

    # ------------------------------------------------------------------ capabilities
    def _encode(self, states, x):
        mu, _, y_logit = self.encoder.apply(states["encoder"].variables, x)
        return mu, jax.nn.sigmoid(y_logit), y_logit

    def encode(self, states, x):
        """[y_hat, z]: the decoder's input (label first), z the posterior mean."""
        mu, y_hat, _ = self._encode(states, x)
        return jnp.concatenate([y_hat, mu], axis=-1)

    def decode(self, states, code):
        y_hat, z = code[:, :self.num_labels], code[:, self.num_labels:]
        return self.decoder.apply(states["decoder"].variables, y_hat, z)

    def relevant_code_mask(self):
        """y_hat (the label head) first, then z."""
        return np.arange(self.num_labels + self.latent_dim) < self.num_labels

    def classify(self, states, x):
        return self._encode(states, x)[2]

    def edit(self, states, x, changes, strength=None):
        """Sec. 3.3: y_hat set to 1 (+1) or 0 (-1) for the changed labels, z kept."""
        del strength
        mu, y_hat, _ = self._encode(states, x)
        target = jnp.where(changes > 0, 1.0, jnp.where(changes < 0, 0.0, y_hat))
        return self.decoder.apply(states["decoder"].variables, target, mu)

    def sample(self, states, rng, y):
        z = jax.random.normal(rng, (y.shape[0], self.latent_dim))
        images = self.decoder.apply(states["decoder"].variables, y.astype(jnp.float32), z)
        accepted = jnp.all((self.classify(states, images) > 0) == (y > 0.5), axis=-1)
        return images, accepted


@base.register("cvaegan_naive")
class NaiveCVAEGAN(IFcVAEGAN):
    """Sec. 4.1's naive cVAEGAN: the IFcVAEGAN networks trained without L_aux and L_class_hat
    (no auxiliary player)."""

    with_auxiliary = False
