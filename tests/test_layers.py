"""nets.layers.Conv: nn.Conv's parameters and results, computed as one matmul on small maps."""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_jax import methods
from latent_jax.nets import layers

CASES = [  # (map, C_in, C_out, kernel, strides, padding, bias)
    (2, 8, 6, 3, 1, 1, False),             # IntroVAE's bottom residual convs
    (4, 5, 7, 3, 1, "SAME", True),
    (4, 3, 4, 5, 1, 2, True),              # a 5x5 stem/output conv
    (8, 4, 6, 4, 2, ((1, 1), (1, 1)), True),   # CCVAE's 4x4 stride-2 convs
    (8, 3, 5, 5, 2, ((2, 2), (2, 2)), False),  # IFcVAEGAN's 5x5 stride-2 convs
    (9, 3, 5, 3, 2, "SAME", True),         # odd map, stride 2 SAME (asymmetric padding)
    (4, 6, 3, 4, 1, "VALID", True),        # CCVAE's last conv (kernel = map)
]


def _assert_same_layer(ref, ours, x, cout, bias):
    """`ours` has `ref`'s parameter tree and initial values for the same key, and computes its
    outputs and gradients (to the parameters and the input) up to float rounding."""
    vr, vo = ref.init(jax.random.key(1), x), ours.init(jax.random.key(1), x)
    assert jax.tree.structure(vr) == jax.tree.structure(vo)
    for a, b in zip(jax.tree.leaves(vr), jax.tree.leaves(vo)):
        np.testing.assert_array_equal(a, b)
    v = {"params": dict(vr["params"])}
    if bias:   # a non-zero bias, so that it is tested too
        v["params"]["bias"] = jax.random.normal(jax.random.key(2), (cout,))
    yr, yo = ref.apply(v, x), ours.apply(v, x)
    assert yr.shape == yo.shape
    np.testing.assert_allclose(yo, yr, rtol=1e-5, atol=1e-5)
    loss = lambda mod: (lambda v, x: jnp.sum(jnp.sin(mod.apply(v, x))))   # noqa: E731
    gr = jax.grad(loss(ref), argnums=(0, 1))(v, x)
    go = jax.grad(loss(ours), argnums=(0, 1))(v, x)
    for a, b in zip(jax.tree.leaves(gr), jax.tree.leaves(go)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=[str(c[:5]) for c in CASES])
def test_matmul_conv_equals_flax_conv_with_the_same_parameters(case):
    size, cin, cout, k, s, pad, bias = case
    x = jax.random.normal(jax.random.key(0), (3, size, size, cin))
    _assert_same_layer(nn.Conv(cout, (k, k), strides=s, padding=pad, use_bias=bias),
                       layers.Conv(cout, (k, k), strides=s, padding=pad, use_bias=bias,
                                   matmul_max_pixels=10_000), x, cout, bias)


def _uses_xla_conv(module, x) -> bool:
    """Whether `module` on `x` lowers to XLA's convolution (rather than matmuls)."""
    v = module.init(jax.random.key(0), x)
    return "conv_general_dilated" in {
        e.primitive.name for e in jax.make_jaxpr(lambda v: module.apply(v, x))(v).jaxpr.eqns}


def test_the_switch_is_by_output_pixels_and_stride():
    x = jnp.ones((1, 8, 8, 8))
    conv = layers.Conv(3, (3, 3), padding=1, matmul_max_pixels=16)
    assert _uses_xla_conv(conv, x)                     # 64 pixels
    assert not _uses_xla_conv(conv, x[:, :4, :4])      # 16
    assert not _uses_xla_conv(layers.Conv(3, (4, 4), strides=2, padding=1), x)   # 16 pixels
    # Strided convolutions on larger maps: XLA's, unless their patch is at most
    # strided_max_patch values (4 x 4 x 8 = 128 here).
    big = jnp.ones((1, 16, 16, 8))
    strided = layers.Conv(3, (4, 4), strides=2, padding=1)
    assert _uses_xla_conv(strided, big)
    with layers.override(strided_max_patch=128):
        assert not _uses_xla_conv(strided, big)
    with layers.override(strided_max_patch=127):
        assert _uses_xla_conv(strided, big)
    # By default: the 4x4 stem on an RGB image (48 values) by im2col, wider patches XLA's.
    assert not _uses_xla_conv(strided, big[..., :3])
    assert _uses_xla_conv(layers.Conv(3, (5, 5), strides=2, padding=2), big[..., :3])
    # Stride 1 on a large map, the image stem too: XLA's.
    assert _uses_xla_conv(layers.Conv(3, (5, 5), padding=2), x[..., :3])
    default = layers.Conv(3, (3, 3), padding=1)   # the module default, which plain_xla sets
    assert not _uses_xla_conv(default, x[:, :4, :4])
    with layers.plain_xla():
        assert _uses_xla_conv(default, x[:, :4, :4])


TRANSPOSE_CASES = [  # (map, C_in, C_out, kernel, strides, padding, bias)
    (4, 6, 5, 4, 2, "SAME", True),         # CCVAE's 4x4 stride-2 deconvolutions
    (1, 8, 6, 4, 1, "VALID", True),        # CCVAE's first deconvolution (1x1 -> 4x4)
    (3, 4, 5, 5, 2, "SAME", False),        # the Larsen decoder's 5x5 stride-2 (odd map)
    (4, 4, 3, 3, 2, "SAME", True),         # IFcVAEGAN's 3x3 stride-2
    (5, 3, 4, 3, 1, "SAME", True),
    (4, 3, 2, 3, 3, "VALID", True),        # stride > kernel - 1
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=[str(c[:6]) for c in TRANSPOSE_CASES])
def test_phase_conv_transpose_equals_flax_conv_transpose(case):
    with layers.override(phase_min_features=1):   # the phase path for every case
        _check_conv_transpose(case)


def _check_conv_transpose(case):
    size, cin, cout, k, s, pad, bias = case
    x = jax.random.normal(jax.random.key(0), (2, size, size + 1, cin))   # non-square too
    _assert_same_layer(
        nn.ConvTranspose(cout, (k, k), strides=(s, s), padding=pad, use_bias=bias),
        layers.ConvTranspose(cout, (k, k), strides=(s, s), padding=pad, use_bias=bias),
        x, cout, bias)


def test_conv_transpose_takes_the_phase_path_only_where_it_is_faster():
    x = jnp.ones((1, 4, 4, 8))
    assert not _uses_xla_conv(layers.ConvTranspose(16, (4, 4), strides=(2, 2)), x)
    assert _uses_xla_conv(layers.ConvTranspose(3, (4, 4), strides=(2, 2)), x)
    assert _uses_xla_conv(layers.ConvTranspose(16, (4, 4), padding="VALID"), x)
    with layers.plain_xla():
        assert _uses_xla_conv(layers.ConvTranspose(16, (4, 4), strides=(2, 2)), x)


# ------------------------------------------------------------------- lowering per platform
def _exported_ops(method_name: str, platform: str, plain: bool = False) -> dict:
    """Op counts of the StableHLO of one training step of `method_name` (its tiny preset, the
    first phase) exported for `platform` (no such device needed: jax.export only lowers)."""
    import test_method_contract as contract
    from latent_jax import train
    from latent_jax.data import pipeline as data_lib

    cfg = contract.tiny_config(method_name)
    exp = train.Experiment(cfg, "/nonexistent/unused", local=True)
    it = data_lib.make_train_iterator(exp.data, global_batch_size=int(cfg.batch_size), seed=0)
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), exp.host_batch(it))
    states = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                          exp.abstract_states())
    rng = jax.ShapeDtypeStruct(exp.base_key.shape, exp.base_key.dtype)
    step = jax.jit(exp._step_body(exp.method.phase(0)))
    with layers.plain_xla() if plain else contextlib.nullcontext():
        text = jax.export.export(step, platforms=(platform,))(states, batch, rng).mlir_module()
    return {op: text.count(f"stablehlo.{op}") for op in ("convolution", "dot_general")}


@pytest.mark.parametrize("name", methods.registered_methods())
def test_convolutions_stay_xla_convolutions_off_the_cpu(name):
    """The matmul forms are XLA:CPU's alone: a step exported for cuda or tpu holds exactly the
    convolutions of the plain-XLA program; one exported for cpu holds fewer (im2col and the
    phase-split transposed convolutions are dots there)."""
    plain = _exported_ops(name, "cpu", plain=True)
    for platform in ("cuda", "tpu"):
        assert _exported_ops(name, platform) == plain, platform
    cpu = _exported_ops(name, "cpu")
    assert cpu["convolution"] < plain["convolution"]
    assert cpu["dot_general"] > plain["dot_general"]
