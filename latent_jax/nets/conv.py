"""The CCVAE reference's plain convolutional encoder and decoder (no normalisation), and the
label heads of CCVAE, M2 and DIVA.

Reference architecture at 64x64 (`channels=(32, 32, 64, 128)`, `top=256`):
encoder conv4x4/2 32 -> 32 -> 64 -> 128 (64 -> 4 px), conv4x4/1 (valid) to 256 at 1x1, ReLU after
every conv, then two linear heads: the location and a softplus scale of q(z|x).
Decoder: linear z -> 256, transposed conv4x4/1 (valid) 256 -> 128 at 4x4, transposed conv4x4/2
128 -> 64 -> 32 -> 32 -> 3, ReLU between, sigmoid at the end. `channels` sets the number of
halvings (one per entry), so a 32 px preset uses three entries; the last encoder conv's kernel
is whatever spatial size is left (4 at both 64/4 and 32/3).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_jax.nets import layers
from latent_jax.nets.resnet import bottom_size, check_channels  # noqa: F401 (re-exported)


class ConvTrunk(nn.Module):
    """x [B, H, W, C] -> features [B, top]."""

    channels: Sequence[int] = (32, 32, 64, 128)
    top: int = 256

    @nn.compact
    def __call__(self, x):
        s = bottom_size(x.shape[1], self.channels)
        h = x
        for i, c in enumerate(self.channels):
            h = nn.relu(layers.Conv(c, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                                name=f"conv{i}")(h))
        h = nn.relu(layers.Conv(self.top, (s, s), padding="VALID", name="conv_top")(h))
        return h.reshape((h.shape[0], -1))


class GaussianEncoder(nn.Module):
    """q(z|x) (or q(z|x, y) with `condition`): (loc, scale), each [B, latent_dim].

    With a condition (M2's q(z|y, x), Kingma et al. 2014; report App. A.1) only the location
    sees y: loc = mu(y, x) through a joint layer on [features(x), y], scale = sigma(x) from the
    image features alone. The scale is softplus + 1e-3 (positivity)."""

    latent_dim: int
    channels: Sequence[int] = (32, 32, 64, 128)
    top: int = 256

    @nn.compact
    def __call__(self, x, condition=None):
        features = ConvTrunk(self.channels, self.top, name="trunk")(x)
        h = features
        if condition is not None:
            h = jnp.concatenate([features, condition.astype(features.dtype)], axis=-1)
            h = nn.relu(nn.Dense(self.top, name="joint")(h))
        loc = nn.Dense(self.latent_dim, name="loc")(h)
        scale = nn.softplus(nn.Dense(self.latent_dim, name="scale")(features)) + 1e-3
        return loc, scale


class ConvClassifier(nn.Module):
    """M2's q(y|x): the same trunk and a linear head to `num_outputs` logits."""

    num_outputs: int
    channels: Sequence[int] = (32, 32, 64, 128)
    top: int = 256

    @nn.compact
    def __call__(self, x):
        h = ConvTrunk(self.channels, self.top, name="trunk")(x)
        return nn.Dense(self.num_outputs, name="logits")(h)


class ConvDecoder(nn.Module):
    """z [B, d] -> image [B, S, S, out_channels] in [0, 1]."""

    image_size: int
    channels: Sequence[int] = (32, 32, 64, 128)
    top: int = 256
    out_channels: int = 3

    @nn.compact
    def __call__(self, z):
        c = tuple(self.channels)
        s = bottom_size(self.image_size, c)
        h = nn.relu(nn.Dense(self.top, name="project")(z))
        h = h.reshape((z.shape[0], 1, 1, self.top))
        h = nn.relu(layers.ConvTranspose(c[-1], (s, s), padding="VALID", name="deconv_top")(h))
        outs = tuple(reversed(c[:-1])) + (self.out_channels,)
        for i, cout in enumerate(outs):
            h = layers.ConvTranspose(cout, (4, 4), strides=(2, 2), padding="SAME",
                                 name=f"deconv{i}")(h)
            if i < len(outs) - 1:
                h = nn.relu(h)
        return nn.sigmoid(h)


class LabelClassifier(nn.Module):
    """Factorised q(y|z_c): label i sees only its own `dims` latent coordinates.

    Binary label: one logit `w_i . z_i + b_i` (the reference's elementwise "Diagonal" layer when
    dims = 1). Categorical label with C classes: a linear layer z_i -> C logits (the report's
    multi-class classifier). Returns a list with one entry per label: [B] or [B, C].
    """

    num_classes: Sequence[int]     # 2 = binary (one logit), C > 2 or categorical: C logits
    categorical: Sequence[bool]
    dims: int = 1

    @nn.compact
    def __call__(self, z_c):
        out = []
        for i, (c, cat) in enumerate(zip(self.num_classes, self.categorical)):
            zi = z_c[..., i * self.dims:(i + 1) * self.dims]
            if cat:
                out.append(nn.Dense(c, name=f"label{i}")(zi))
            else:
                w = self.param(f"w{i}", nn.initializers.ones, (self.dims,))
                b = self.param(f"b{i}", nn.initializers.zeros, ())
                out.append(jnp.sum(zi * w, axis=-1) + b)
        return out


class ConditionalPrior(nn.Module):
    """p(z_c|y) = prod_i N(z_i; loc_i[y_i], scale_i[y_i]): per label, a learned location and
    (softplus) scale for each label value.

    Locations start at -2 / +2 for y = 0 / 1 (the Pyro reference's initialisation; ccvae_pytorch
    starts at 0) and evenly spaced in [-2, 2] for the classes of a categorical label; scales are
    softplus(raw) + 1e-3 and start at 1.001 (ccvae_pytorch: softplus(1) = 1.313).
    `__call__` returns (loc, scale) tables, each a list over labels of [C_i, dims].
    """

    num_classes: Sequence[int]
    dims: int = 1

    @nn.compact
    def __call__(self):
        locs, scales = [], []
        inv_softplus_one = jnp.log(jnp.expm1(1.0))
        for i, c in enumerate(self.num_classes):
            init = jnp.linspace(-2.0, 2.0, c)[:, None] * jnp.ones((1, self.dims))
            loc = self.param(f"loc{i}", lambda key, v=init: v)
            raw = self.param(f"scale{i}", nn.initializers.constant(inv_softplus_one),
                             (c, self.dims))
            locs.append(loc)
            scales.append(nn.softplus(raw) + 1e-3)
        return locs, scales


def gaussian_kl(loc_q, scale_q, loc_p, scale_p):
    """KL(N(loc_q, scale_q^2) || N(loc_p, scale_p^2)) elementwise."""
    var_ratio = jnp.square(scale_q / scale_p)
    return 0.5 * (var_ratio + jnp.square((loc_q - loc_p) / scale_p) - 1.0 - jnp.log(var_ratio))


def normal_log_prob(x, loc, scale):
    """log N(x; loc, scale^2) elementwise."""
    return -0.5 * jnp.square((x - loc) / scale) - jnp.log(scale) - 0.5 * jnp.log(2.0 * jnp.pi)


def laplace_log_likelihood(x, loc):
    """sum over pixels of log Laplace(x; loc, 1), per example [B]."""
    return jnp.sum(-jnp.abs(x - loc) - jnp.log(2.0), axis=tuple(range(1, x.ndim)))


def rsample(rng, loc, scale, sample_shape=()):
    eps = jax.random.normal(rng, sample_shape + loc.shape, loc.dtype)
    return loc + scale * eps
