"""Larsen-style convolutional networks and MLPs (used by CSVAE and its baselines, paper 001).

Klys et al. (appendix 7.1): "convolutional layers with ReLU activations which roughly follow
[Larsen et al., 2016]". Larsen's VAE/GAN at 64x64:

Encoder trunk: per entry c of `channels` a conv5x5 stride 2 -> BatchNorm -> ReLU
(64, 128, 256 at 64x64 gives an 8x8x256 map); flatten; Dense(`hidden`) -> BatchNorm -> ReLU
(2048 in Larsen's model). Heads (Gaussian MLPs, Sec. 4.2) sit on these features.

Decoder: Dense(s * s * c_last) -> BatchNorm -> ReLU; per entry c of reversed `channels` a
transposed conv5x5 stride 2 -> BatchNorm -> ReLU; conv5x5 to the image channels; sigmoid
(the Gaussian mean of p(x|w,z) for pixels in [0, 1]). With `upsample='resize'` each transposed
conv is a nearest-neighbour x2 upsampling followed by a conv5x5 (same shapes, faster on CPU).

`MLP` and `MLPDecoder` are the toy (Swiss roll) networks: Dense -> ReLU layers.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_jax.nets import layers
from latent_jax.nets.resnet import bottom_size, check_channels  # noqa: F401 (re-exported)


def _bn(train: bool, name: str):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class MLP(nn.Module):
    """Dense -> ReLU for every width of `hidden`."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, name=f"dense{i}")(x))
        return x


class ConvTrunk(nn.Module):
    """Larsen's encoder body: image [B, H, W, C] -> features [B, hidden]."""

    channels: Sequence[int] = (64, 128, 256)
    hidden: int = 2048

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x
        for i, c in enumerate(self.channels):
            h = layers.Conv(c, (5, 5), strides=(2, 2), padding=2, use_bias=False, name=f"conv{i}")(h)
            h = nn.relu(_bn(train, f"bn{i}")(h))
        h = h.reshape((h.shape[0], -1))
        h = nn.Dense(self.hidden, use_bias=False, name="fc")(h)
        return nn.relu(_bn(train, "fc_bn")(h))


class ConvDecoder(nn.Module):
    """Larsen's decoder: code [B, d] -> image [B, H, W, out_channels] in [0, 1]."""

    image_size: int
    channels: Sequence[int] = (64, 128, 256)
    out_channels: int = 3
    upsample: str = "transpose"   # 'transpose' (Larsen) or 'resize' (nearest x2 + conv)

    @nn.compact
    def __call__(self, code, train: bool = False):
        c = tuple(self.channels)
        s = bottom_size(self.image_size, c)
        h = nn.Dense(s * s * c[-1], use_bias=False, name="project")(code)
        h = nn.relu(_bn(train, "project_bn")(h)).reshape((code.shape[0], s, s, c[-1]))
        for i, ch in enumerate(reversed(c)):
            if self.upsample == "transpose":
                h = layers.ConvTranspose(ch, (5, 5), strides=(2, 2), padding="SAME", use_bias=False,
                                     name=f"deconv{i}")(h)
            else:   # nearest x2 then conv5x5: same shapes, much faster on XLA:CPU
                b, hh, ww, cc = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, cc), method="nearest")
                h = layers.Conv(ch, (5, 5), padding=2, use_bias=False, name=f"deconv{i}")(h)
            h = nn.relu(_bn(train, f"deconv_bn{i}")(h))
        h = layers.Conv(self.out_channels, (5, 5), padding=2, name="out")(h)
        return nn.sigmoid(h)


class MLPDecoder(nn.Module):
    """Toy decoder: code -> MLP -> Dense(out_dim), an unconstrained Gaussian mean."""

    hidden: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, code, train: bool = False):
        h = MLP(tuple(self.hidden), name="mlp")(code, train)
        return nn.Dense(self.out_dim, name="out")(h)


class GaussianHeads(nn.Module):
    """Encoder: a shared trunk on x, then one Gaussian MLP head per latent block.

    `heads` is a sequence of (name, dim, sees_y): the head's input is the trunk's features,
    concatenated with the labels y when `sees_y`. Returns {name: (mu, logvar)}.
    """

    trunk: nn.Module
    heads: Sequence[tuple]
    head_hidden: Sequence[int] = ()

    @nn.compact
    def __call__(self, x, y, train: bool = False):
        h = self.trunk(x, train)
        out = {}
        for name, dim, sees_y in self.heads:
            inp = jnp.concatenate([h, y.astype(h.dtype)], axis=-1) if sees_y else h
            g = MLP(tuple(self.head_hidden), name=f"{name}_mlp")(inp, train)
            stats = nn.Dense(2 * int(dim), name=f"{name}_out")(g)
            mu, logvar = jnp.split(stats, 2, axis=-1)
            out[name] = (mu, logvar)
        return out


class LabelAdversary(nn.Module):
    """q_delta(y|z) (CSVAE) or r_psi(z) (CondVAE-info): MLP -> one Bernoulli logit per label."""

    hidden: Sequence[int]
    num_labels: int

    @nn.compact
    def __call__(self, z):
        h = MLP(tuple(self.hidden), name="mlp")(z)
        return nn.Dense(self.num_labels, name="logits")(h)
