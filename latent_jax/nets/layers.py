"""`Conv` and `ConvTranspose`: flax.linen.Conv's and ConvTranspose's parameters and results,
computed as matmuls where XLA:CPU's convolutions are slow.

XLA:CPU runs some convolution shapes far below the machine's matmul speed (launch/benchmark.py
--conv_shapes and --also_plain_xla measure it):
- 3x3 convolutions on tiny maps (a 3x3 512 -> 512 convolution on a 2x2 map: 1116 ms forward and
  backward at batch 64, where PyTorch takes a few ms). On an output map of at most
  `matmul_max_pixels` pixels, `Conv` gathers the kernel's shifted windows of the padded input
  side by side (im2col: [B, Ho, Wo, kh * kw * C_in]) and multiplies them by the kernel reshaped
  to [kh * kw * C_in, C_out]. Strided convolutions on larger maps take that path only when an
  output pixel's patch is small (DEFAULT_STRIDED_MAX_PATCH: the 4x4 stems on RGB images); on
  the others XLA's measured as fast or faster.
  Other convolutions use `lax.conv_general_dilated` as flax does. (im2col for the 5x5
  stem on the image, 152 -> 84 ms alone, was tried and dropped: IntroVAC's introspective step,
  which differentiates re-encodings down to their pixels, went from 5.4 to 6.2 s; on a 64x64
  map with 32 input channels XLA's is 4x faster than im2col.)
- The gradients of strided transposed convolutions (XLA computes them as convolutions of a
  dilated input: a 4x4 stride-2 deconvolution 16x16 -> 32x32 with 32 channels, batch 200, 1301
  ms forward and backward). `ConvTranspose` splits the output into its stride phases; each is a
  small correlation of the undilated input with the kernel taps it meets, one matmul.
Both are the same sums in another order, so results equal flax's to float rounding
(tests/test_layers.py), and the gradients are matmuls too.

The parameters are flax's exactly (names `kernel`, HWIO, and `bias`, the same initialisers,
hence the same initial values for the same key): swapping one for the other changes neither
checkpoints nor results beyond rounding, on CPU or accelerator.

Only XLA:CPU gets the matmul forms: they were measured there, and nowhere else. Each layer
that would take one is written as `jax.lax.platform_dependent(cpu=<matmul form>,
default=<XLA's convolution>)`, resolved when the step is lowered for its platform, so a GPU or
TPU program holds XLA's own convolutions (its fastest operations there) and a CPU program the
matmuls, from the same traced code (tests/test_layers.py exports every family's step for cpu,
cuda and tpu and counts them).
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
# Transposed convolutions with a stride > 1 and at least this many output channels are computed
# phase by phase (`phase_conv_transpose`): CCVAE's 4x4 stride-2 deconvolutions at batch 200,
# forward+backward, 16x16 -> 32x32 with 32 channels 1301 ms as XLA's dilated convolution, 103 ms
# by phases. With 3 output channels on a 64x64 output XLA's is faster (160 vs 309 ms: the phases'
# im2col matrices are large and the matmuls narrow), so those stay XLA's.
DEFAULT_PHASE_MIN_FEATURES = 16
# Strided convolutions on larger maps are computed by im2col when one output pixel's patch
# (kh * kw * C_in) has at most this many values: the 4x4 stems on 3-channel images (48), not the
# 5x5 ones (75) nor the deeper layers (512 and more). Measured with jax 0.10.2 on the 2-core
# CPU, forward+backward of the layer alone (another job on the machine): at batch 200, 64x64x3 -> 32x32x32 with a 4x4 kernel,
# 144 ms as XLA's convolution and 112 by im2col; but a 5x5 on 64x64x3 at batch 192 116 against
# 158, and a 4x4 on 32x32x32 at batch 200 183 against 320. im2col's concatenation of strided
# windows was the costliest operation of IFcVAEGAN's step (its discriminator's 5x5 layers: 380
# of 1170 ms; launch/benchmark.py --profile). Whole steps, alone on the machine, im2col for
# every strided convolution against none (--also_layers, same run): IFcVAEGAN 0.595 / 0.519 s,
# CSVAE 0.200 / 0.201, Lr-LiVAE 0.326 / 0.334, CCVAE (32 px) 0.064 / 0.061, CCVAE at 64x64
# batch 200 0.655 / 0.730 (docs/results.md, "Speed").
DEFAULT_STRIDED_MAX_PATCH = 64
_settings = {"matmul_max_pixels": DEFAULT_MATMUL_MAX_PIXELS,
             "phase_min_features": DEFAULT_PHASE_MIN_FEATURES,
             "strided_max_patch": DEFAULT_STRIDED_MAX_PATCH}


@contextlib.contextmanager
def override(*, matmul_max_pixels: int | None = None, phase_min_features: int | None = None,
             strided_max_patch: int | None = None):
    """Inside this block (while tracing), `Conv` and `ConvTranspose` use these thresholds
    (`plain_xla` turns both paths off, for benchmarks and tests that compare)."""
    previous = dict(_settings)
    if matmul_max_pixels is not None:
        _settings["matmul_max_pixels"] = int(matmul_max_pixels)
    if phase_min_features is not None:
        _settings["phase_min_features"] = int(phase_min_features)
    if strided_max_patch is not None:
        _settings["strided_max_patch"] = int(strided_max_patch)
    try:
        yield
    finally:
        _settings.update(previous)


@contextlib.contextmanager
def plain_xla():
    """XLA's convolutions everywhere (flax's nn.Conv / nn.ConvTranspose computation)."""
    with override(matmul_max_pixels=0, phase_min_features=2 ** 62):
        yield


def _cpu_only(matmul_form, xla_form, *args):
    """`matmul_form(*args)` in programs lowered for XLA:CPU, `xla_form(*args)` elsewhere."""
    return jax.lax.platform_dependent(*args, cpu=matmul_form, default=xla_form)


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
        limit = (_settings["matmul_max_pixels"] if self.matmul_max_pixels is None
                 else self.matmul_max_pixels)
        # im2col on small output maps and for strided convolutions with small patches, where
        # it measured faster forward+backward (module docstring).
        patch = ks[0] * ks[1] * x.shape[-1]

        def xla(x, kernel):
            return jax.lax.conv_general_dilated(x, kernel, strides, pads,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        if ho * wo <= limit or (limit > 0 and max(strides) > 1
                                and patch <= _settings["strided_max_patch"]):
            y = _cpu_only(lambda x, kernel: im2col_conv(x, kernel, strides, pads), xla,
                          x, kernel)
        else:
            y = xla(x, kernel)
        return y + bias if bias is not None else y


def _conv_transpose_pads(k: int, s: int, padding) -> tuple[int, int]:
    """The padding of the dilated input that lax.conv_transpose (and so nn.ConvTranspose)
    uses for a string padding; explicit pairs pass through."""
    if isinstance(padding, str):
        if padding == "SAME":
            total = k + s - 2
            low = k - 1 if s > k - 1 else -(-total // 2)
        elif padding == "VALID":
            total = k + s - 2 + max(k - s, 0)
            low = k - 1
        else:
            raise ValueError(f"padding {padding!r}: 'SAME', 'VALID' or explicit pairs")
        return low, total - low
    return tuple(padding)


def _phase_taps(size: int, k: int, s: int, pads: tuple[int, int]):
    """One spatial dimension of a transposed convolution split by output phase.

    lax.conv_transpose is a stride-1 correlation of the input dilated by `s` (s - 1 zeros
    between samples) and padded by `pads` with the kernel: y[o] = sum_t xd[o + t] k[t], where
    xd[m] = x[(m - low) / s] when (m - low) is a multiple of s and 0 otherwise. For the outputs
    o = s * i + a of phase a only the taps t with (a + t - low) = 0 mod s meet samples, each at
    input index i + (a + t - low) / s. Returns the output size and, per phase, (number of
    outputs, [(tap, input offset)])."""
    low, high = pads
    out = (size - 1) * s + 1 + low + high - k + 1
    phases = []
    for a in range(s):
        n = max(0, -(-(out - a) // s))
        taps = [(t, (a + t - low) // s) for t in range(k) if (a + t - low) % s == 0]
        phases.append((n, taps))
    return out, phases


def phase_conv_transpose(x: jax.Array, kernel: jax.Array, strides=(1, 1),
                         padding="SAME") -> jax.Array:
    """lax.conv_transpose(x, kernel, strides, padding) (NHWC, HWIO, kernel not transposed:
    nn.ConvTranspose's default) computed phase by phase: for each of the s_h * s_w output
    phases, an im2col matmul of the input's shifted windows with the kernel taps that phase
    meets, then the phases interleaved. No multiplication by the dilation's zeros, and every
    gradient is a matmul, where XLA:CPU's dilated convolution is slow to differentiate."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    pads = [_conv_transpose_pads(k, s, p) for k, s, p in
            zip((kh, kw), (sh, sw), padding if not isinstance(padding, str) else (padding,) * 2)]
    b, h, w, _ = x.shape
    out_h, phases_h = _phase_taps(h, kh, sh, pads[0])
    out_w, phases_w = _phase_taps(w, kw, sw, pads[1])
    # Zero-pad the input so that every tap's window of every phase is in range.
    offs_h = [o for _, taps in phases_h for _, o in taps] or [0]
    offs_w = [o for _, taps in phases_w for _, o in taps] or [0]
    lo_h, lo_w = max(0, -min(offs_h)), max(0, -min(offs_w))
    n_h = max(n for n, _ in phases_h)
    n_w = max(n for n, _ in phases_w)
    hi_h = max(0, n_h - 1 + max(offs_h) - (h - 1))
    hi_w = max(0, n_w - 1 + max(offs_w) - (w - 1))
    xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    dtype = jnp.result_type(x, kernel)
    parts = {}
    for a, (nh, taps_h) in enumerate(phases_h):
        for c, (nw, taps_w) in enumerate(phases_w):
            if nh == 0 or nw == 0 or not taps_h or not taps_w:
                continue   # no outputs, or a phase that meets no sample (zeros)
            windows = [xp[:, lo_h + oh:lo_h + oh + nh, lo_w + ow:lo_w + ow + nw, :]
                       for _, oh in taps_h for _, ow in taps_w]
            sub = jnp.stack([kernel[th, tw] for th, _ in taps_h for tw, _ in taps_w])
            cols = jnp.concatenate(windows, axis=-1).reshape(b * nh * nw, -1)
            parts[a, c] = (cols @ sub.reshape(-1, cout)).reshape(b, nh, nw, cout)
    if out_h == n_h * sh and out_w == n_w * sw:
        # Every phase has n_h x n_w outputs: interleave by a transpose, not a scatter.
        grid = jnp.stack([jnp.stack([parts.get((a, c), jnp.zeros((b, n_h, n_w, cout), dtype))
                                     for c in range(sw)], axis=0) for a in range(sh)], axis=0)
        return grid.transpose(2, 3, 0, 4, 1, 5).reshape(b, out_h, out_w, cout)
    y = jnp.zeros((b, out_h, out_w, cout), dtype)
    for (a, c), part in parts.items():
        y = y.at[:, a::sh, c::sw, :].set(part)
    return y


class ConvTranspose(nn.Module):
    """nn.ConvTranspose's fields, parameters (`kernel` [kh, kw, C_in, C_out], `bias`) and
    results; with a stride > 1 and at least DEFAULT_PHASE_MIN_FEATURES output channels computed
    by `phase_conv_transpose` (one matmul per output phase), otherwise as flax does."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | None = None
    padding: str | Sequence = "SAME"
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        ks = _pairs(self.kernel_size)
        strides = _pairs(self.strides) if self.strides is not None else (1, 1)
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features),
                            jnp.float32)
        bias = (self.param("bias", self.bias_init, (self.features,), jnp.float32)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=None)
        def xla(x, kernel):
            return jax.lax.conv_transpose(x, kernel, strides, self.padding,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))

        if max(strides) > 1 and self.features >= _settings["phase_min_features"]:
            y = _cpu_only(lambda x, kernel: phase_conv_transpose(x, kernel, strides,
                                                                 self.padding), xla, x, kernel)
        else:
            y = xla(x, kernel)
        return y + bias if bias is not None else y
