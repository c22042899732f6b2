"""`Conv`: flax.linen.Conv's parameters and results, computed as one matmul where XLA:CPU's
convolution is slow.

XLA:CPU runs some convolution shapes far below the machine's matmul speed, worst of all 3x3
convolutions on tiny maps (about 370 ms for a 3x3 512 -> 512 convolution on a 2x2 map, where
PyTorch takes 3 ms; ../notes in the project's planning material and `launch/benchmark.py`).
On an output map of at most `matmul_max_pixels` pixels, `Conv` gathers the kernel's shifted
windows of the padded input side by side (im2col: [B, Ho, Wo, kh * kw * C_in]) and multiplies
them by the kernel reshaped to [kh * kw * C_in, C_out]: the same sums in another order, so the
result equals the convolution's to float rounding, and the gradients are two matmuls. Larger
maps use `lax.conv_general_dilated` as flax does.

The parameters are nn.Conv's exactly (names `kernel` [kh, kw, C_in, C_out] and `bias`, the same
initialisers, hence the same initial values for the same key): swapping one for the other
changes neither checkpoints nor results beyond rounding, on CPU or accelerator.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Output maps up to this many pixels are computed by im2col: the 2x2 and 4x4 maps at the bottom
# of the nets (launch/benchmark.py --conv_shapes, 2-core CPU, batch 64, forward+backward: a 3x3
# 512 -> 512 conv on a 2x2 map 1116 ms as XLA's convolution, 11.6 ms by im2col; on a 4x4 map
# 57 vs 49 ms; on 8x8 and larger maps XLA's convolution is as fast or faster).
DEFAULT_MATMUL_MAX_PIXELS = 16
_threshold = [DEFAULT_MATMUL_MAX_PIXELS]


@contextlib.contextmanager
def matmul_max_pixels(n: int):
    """Inside this block (while tracing), `Conv`s without their own `matmul_max_pixels` use
    im2col up to `n` output pixels (0: never); for benchmarks comparing the two."""
    previous, _threshold[0] = _threshold[0], int(n)
    try:
        yield
    finally:
        _threshold[0] = previous


def _pairs(v, n=2) -> tuple:
    return tuple(v) if isinstance(v, Sequence) else (v,) * n


def _padding(padding, in_hw, kernel_size, strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):   # 'SAME' / 'VALID', as lax (and so flax) resolves them
        return tuple(tuple(p) for p in jax.lax.padtype_to_pads(in_hw, kernel_size, strides,
                                                                  padding))
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return tuple(_pairs(p) for p in padding)


def im2col_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding=((0, 0), (0, 0))):
    """The convolution of NHWC `x` with HWIO `kernel` as one matmul over shifted windows."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, hp, wp, _ = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    windows = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
               for i in range(kh) for j in range(kw)]
    cols = jnp.concatenate(windows, axis=-1).reshape(b * ho * wo, kh * kw * cin)
    return (cols @ kernel.reshape(kh * kw * cin, cout)).reshape(b, ho, wo, cout)


class Conv(nn.Module):
    """A 2-D NHWC convolution with nn.Conv's fields, parameters and results (see the module
    docstring); `matmul_max_pixels` chooses where im2col takes over (0: never; None: the
    module default, DEFAULT_MATMUL_MAX_PIXELS)."""

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: str | int | Sequence = "SAME"
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    matmul_max_pixels: int | None = None

    @nn.compact
    def __call__(self, x):
        ks = _pairs(self.kernel_size)
        strides = _pairs(self.strides)
        pads = _padding(self.padding, x.shape[1:3], ks, strides)
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features),
                            jnp.float32)
        bias = (self.param("bias", self.bias_init, (self.features,), jnp.float32)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=None)
        ho = (x.shape[1] + sum(pads[0]) - ks[0]) // strides[0] + 1
        wo = (x.shape[2] + sum(pads[1]) - ks[1]) // strides[1] + 1
        limit = _threshold[0] if self.matmul_max_pixels is None else self.matmul_max_pixels
        if ho * wo <= limit:
            y = im2col_conv(x, kernel, strides, pads)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, strides, pads,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias if bias is not None else y
