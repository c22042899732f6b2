"""latent_jax.profiling: the profiler's events matched to the compiled program's operations,
each with its category, pass and shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latent_jax import profiling


def _loss(w, v, x):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(y).reshape(x.shape[0], -1) @ v
    return jnp.sum(h * h)


def test_a_convolutions_gradient_is_found_and_named():
    x = jnp.ones((4, 8, 8, 3))
    w = jnp.full((3, 3, 3, 5), 0.1)
    v = jnp.full((8 * 8 * 5, 7), 0.01)
    grad = jax.jit(jax.grad(_loss, argnums=(0, 1)))
    hlo = grad.lower(w, v, x).compile().as_text()
    ops, _ = profiling.parse_hlo(hlo)
    assert any(op.opcode == "convolution" for op in ops.values())
    times = profiling.op_times(lambda: jax.block_until_ready(grad(w, v, x)), hlo, calls=3)
    assert times and all(t.seconds >= 0 for t in times)
    assert [t.seconds for t in times] == sorted((t.seconds for t in times), reverse=True)
    convs = [t for t in times if t.category == "convolution"]
    # The forward convolution and its weight gradient (the input needs no gradient).
    assert {t.direction for t in convs} == {"forward", "backward"}
    forward = next(t for t in convs if t.direction == "forward")
    assert "f32[4,8,8,3] x f32[3,3,3,5] -> f32[4,8,8,5]" in forward.detail
    assert "conv_general_dilated" in forward.source
    assert any(t.category == "dot" for t in times)
    text = profiling.summary(times, step_seconds=0.01)
    assert "| convolution | forward |" in text and "| convolution | backward |" in text
    assert profiling.summary([], 0.01).startswith("(the profiler reported no XLA operation")
