"""config.model.compute_dtype: bfloat16 convolutions and matmuls with float32 parameters,
optimizer state, BatchNorm statistics and losses (latent_jax.nets.precision), for every
registered method through the shared trainer's step."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from latent_jax import train
from latent_jax.data import pipeline as data
from latent_jax.errors import ConfigError
from latent_jax.nets import precision

from test_method_contract import METHODS, tiny_config


def _eqn_dtypes(jaxpr, prims=("conv_general_dilated", "dot_general")):
    """Input dtypes of every convolution / matmul in a (closed) jaxpr, sub-jaxprs included."""
    found = []

    def walk(j):
        for eqn in j.eqns:
            if eqn.primitive.name in prims:
                found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return found


def _float_dtypes(tree):
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("name", METHODS)
def test_bfloat16_step_computes_in_bfloat16_and_keeps_float32_state(tmp_path, name):
    """Traced, not compiled (cheap): every phase's step does its convolutions and matmuls in
    bfloat16 and returns float32 parameters, optimizer state, statistics and metrics."""
    cfg = tiny_config(name, **{"model.compute_dtype": "bfloat16"})
    exp = train.Experiment(cfg, str(tmp_path / "run"))
    it = data.make_train_iterator(cfg.data, global_batch_size=cfg.batch_size, seed=cfg.seed)
    batch = exp.next_batch(it)
    states = exp.init_states()
    assert _float_dtypes(states) == {"float32"}, name
    phases = sorted({exp.method.phase(s) for s in range(int(cfg.num_steps))})
    for phase in phases:
        fn = lambda s, b, r, p=phase: exp.method.train_step(s, b, r, p)   # noqa: E731
        closed = jax.make_jaxpr(fn)(states, batch, exp.base_key)
        ops = _eqn_dtypes(closed)
        assert ops, f"{name} phase {phase}: no convolution or matmul traced"
        low = [d for d in ops if all(x == "bfloat16" for x in d)]
        # Nearly all of the work: only parameter-only calls and method-side algebra stay float32.
        assert len(low) >= 0.5 * len(ops), f"{name} phase {phase}: {len(low)}/{len(ops)} bf16"
        new_states, metrics = jax.eval_shape(fn, states, batch, exp.base_key)
        assert _float_dtypes(new_states) == {"float32"}, f"{name} phase {phase}"
        assert _float_dtypes(metrics) <= {"float32"}, f"{name} phase {phase}"


@pytest.mark.parametrize("name", ["introvac", "ccvae"])
def test_bfloat16_losses_are_close_to_float32_on_the_same_step(tmp_path, name):
    """The same init, batch and key: a bfloat16 step's losses agree with float32's to bfloat16
    precision (a few parts in a thousand per op, compounded over a few layers), and its
    updated parameters stay close too. IntroVAC has BatchNorm, CCVAE has none."""
    out = {}
    host_init = None
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_config(name, **{"model.compute_dtype": dtype})
        exp = train.Experiment(cfg, str(tmp_path / dtype))
        it = data.make_train_iterator(cfg.data, global_batch_size=cfg.batch_size, seed=cfg.seed)
        batch = exp.next_batch(it)
        if host_init is None:
            host_init = jax.device_get(exp.init_states())
        states, metrics, _ = exp.step_fn(0)(host_init, batch, exp.base_key)
        out[dtype] = jax.device_get((states, metrics))
    (s32, m32), (s16, m16) = out["float32"], out["bfloat16"]
    losses = [k for k in m32 if k.startswith("loss")]
    assert losses and any(k.startswith("grad_norm") for k in m32), sorted(m32)
    for k in losses:
        np.testing.assert_allclose(m16[k], m32[k], rtol=5e-2, atol=5e-3, err_msg=k)
    # Parameters are compared through the gradients' norms (Adam's first step is the sign of
    # the gradient, which bfloat16 flips for components near zero). Not for CCVAE: its Laplace
    # (L1) likelihood's gradient is sign(x - recon), which flips wherever the bfloat16
    # reconstruction rounds across the pixel; at init (recon ~ 0.5, a flat background) that
    # moves the last deconvolution's bias gradient from 42 to 14 (docs/methods.md).
    norms = [k for k in m32 if k.startswith("grad_norm")] if name != "ccvae" else []
    for k in norms:
        np.testing.assert_allclose(m16[k], m32[k], rtol=5e-2, err_msg=k)
    for a, b in zip(jax.tree.leaves(s16), jax.tree.leaves(s32)):
        assert a.dtype == b.dtype


def test_mixed_precision_wrapper_casts_inputs_and_params_but_not_statistics():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            h = nn.Dense(4)(x)
            return nn.BatchNorm(use_running_average=not train)(h)

    class ParamsOnly(nn.Module):
        @nn.compact
        def __call__(self):
            return self.param("table", lambda k: jnp.full((3,), 1.0 + 2.0 ** -12))

    x = jax.random.normal(jax.random.key(0), (8, 5))
    net = precision.wrap(Net(), jnp.bfloat16)
    variables = net.init(jax.random.key(1), x)
    assert _float_dtypes(variables) == {"float32"}
    y, upd = net.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.dtype == jnp.float32
    assert _float_dtypes(upd) == {"float32"}
    ops = _eqn_dtypes(jax.make_jaxpr(lambda v: net.apply(v, x))(variables))
    assert ops == [("bfloat16", "bfloat16")]
    # A parameter-only call is not rounded to bfloat16 (1 + 2^-12 is not representable in it).
    table = precision.wrap(ParamsOnly(), jnp.bfloat16)
    tv = table.init(jax.random.key(2))
    assert float(table.apply(tv)[0]) == 1.0 + 2.0 ** -12
    # float32 is the module itself; gradients reach the float32 parameters.
    assert precision.wrap(Net(), jnp.float32).__class__ is Net
    g = jax.grad(lambda p: jnp.sum(net.apply({**variables, "params": p}, x)))(variables["params"])
    assert _float_dtypes(g) == {"float32"}


def test_compute_dtype_is_checked_by_name():
    with pytest.raises(ConfigError, match="config.model.compute_dtype.*float16"):
        train.Experiment(tiny_config("ccvae", **{"model.compute_dtype": "float16"}), "/tmp/x")


def test_every_config_exposes_compute_dtype():
    for name in METHODS:
        assert tiny_config(name).model.compute_dtype == "float32", name


def test_a_bfloat16_run_through_the_trainer_checkpoints_float32_and_evaluates(tmp_path):
    """The shared trainer end to end in bfloat16 (IntroVAC: two phases, BatchNorm): the
    checkpoint holds float32 state, which a float32 experiment restores and uses."""
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config("introvac", **{"model.compute_dtype": "bfloat16"}),
                             workdir)
    exp = train.Experiment(tiny_config("introvac"), workdir)   # float32 reads it
    step, states, _ = exp.restore_newest()
    assert step == 6 and _float_dtypes(states) == {"float32"}
    x = jnp.zeros((2,) + exp.spec.image_shape)
    assert np.all(np.isfinite(np.asarray(exp.method.reconstruct(states, x))))
