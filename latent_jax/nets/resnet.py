"""IntroVAE-style residual encoder and decoder (used by IntroVAC and VAC).

Architecture of the IntroVAC reference (itself IntroVAE's), parameterised by `channels`:

Encoder: conv5x5(3 -> c0, no bias) + BN + LeakyReLU(0.2) + avgpool2; a residual block
c_i -> c_{i+1} followed by avgpool2 for each consecutive pair of `channels`; one more block
c_last -> c_last; flatten; Dense(2 * latent_dim) split into (mu, logvar).
With channels (32, 64, 128, 256, 512) at 128x128 the final map is 4x4x512, as in the paper.

Decoder: Dense(latent_dim -> c_last * s * s) + ReLU; for the reversed channel pairs a residual
block followed by nearest-neighbour upsampling x2 (c_last -> c_last first, as in the
reference); a c0 -> c0 block; conv5x5(c0 -> 3); sigmoid.

Residual block (the reference's order): conv3x3-BN-LReLU-conv3x3-BN-LReLU, then plus the
identity (a 1x1 conv without bias when the channel count changes):
    out = identity + lrelu(bn2(conv2(lrelu(bn1(conv1(x))))))
The second LeakyReLU comes *before* the addition, so a block's output can be negative; a
"post-activation" block (lrelu(h + identity), the ResNet habit) is a different network on the
same parameters (encoder means differ by about 30 % on identical weights).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_jax.errors import ConfigError
from latent_jax.nets import layers


def _bn(train: bool, name: str | None = None):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ResidualBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        identity = x
        if x.shape[-1] != self.features:
            identity = layers.Conv(self.features, (1, 1), use_bias=False, name="shortcut")(x)
        h = layers.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv1")(x)
        h = _bn(train, "bn1")(h)
        h = nn.leaky_relu(h, 0.2)
        h = layers.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(h)
        h = _bn(train, "bn2")(h)
        return identity + nn.leaky_relu(h, 0.2)


def _avgpool(x):
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _upsample(x):
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")


def bottom_size(image_size: int, channels: Sequence[int]) -> int:
    """Spatial size of the encoder's last feature map (one halving per entry of `channels`);
    shared by every conv encoder/decoder pair in `latent_jax.nets`."""
    size = image_size // (2 ** len(channels))
    if size < 1 or size * 2 ** len(channels) != image_size:
        raise ValueError(f"image size {image_size} is not divisible by 2**{len(channels)} "
                         f"(one halving per entry of model.channels={tuple(channels)})")
    return size


def check_channels(image_size: int, channels: Sequence[int],
                   key: str = "config.model.channels") -> None:
    """`bottom_size`'s check as a config error that names the key."""
    try:
        bottom_size(image_size, channels)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


class ResidualEncoder(nn.Module):
    """x [B, H, W, C] in [0, 1] -> (mu, logvar), each [B, latent_dim]."""

    latent_dim: int
    channels: Sequence[int] = (32, 64, 128, 256, 512)

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = tuple(self.channels)
        h = layers.Conv(c[0], (5, 5), padding=2, use_bias=False, name="stem")(x)
        h = _bn(train, "stem_bn")(h)
        h = _avgpool(nn.leaky_relu(h, 0.2))
        for i, (cin, cout) in enumerate(zip(c[:-1], c[1:])):
            del cin
            h = _avgpool(ResidualBlock(cout, name=f"block{i}")(h, train))
        h = ResidualBlock(c[-1], name=f"block{len(c) - 1}")(h, train)
        h = h.reshape((h.shape[0], -1))
        out = nn.Dense(2 * self.latent_dim, name="head")(h)
        mu, logvar = jnp.split(out, 2, axis=-1)
        return mu, logvar


class ResidualDecoder(nn.Module):
    """z [B, latent_dim] -> image [B, H, W, out_channels] in [0, 1]."""

    image_size: int
    channels: Sequence[int] = (32, 64, 128, 256, 512)
    out_channels: int = 3

    @nn.compact
    def __call__(self, z, train: bool = False):
        c = tuple(self.channels)
        s = bottom_size(self.image_size, c)
        h = nn.relu(nn.Dense(c[-1] * s * s, name="project")(z))
        h = h.reshape((z.shape[0], s, s, c[-1]))
        rev = (c[-1],) + tuple(reversed(c))  # c_last -> c_last, then down the list
        for i, cout in enumerate(rev[1:]):
            h = _upsample(ResidualBlock(cout, name=f"block{i}")(h, train))
        h = ResidualBlock(c[0], name=f"block{len(rev) - 1}")(h, train)
        h = layers.Conv(self.out_channels, (5, 5), padding=2, name="out")(h)
        return nn.sigmoid(h)


class LinearClassifier(nn.Module):
    """Linear map from the latent to logits (IntroVAC's C: attribute logits [+ fake logit])."""

    num_outputs: int
    use_bias: bool = False

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.num_outputs, use_bias=self.use_bias, name="linear")(z)
