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


def test_the_device_benchmark_script_runs_end_to_end_at_tiny_shapes(tmp_path):
    """launch/device_benchmark.sh is run on an accelerator in one go, with minutes lent: its
    benchmark flags run here on the CPU (SHAPES=tiny: CCVAE's tiny preset) and print every
    table it promises, for both dtypes."""
    import os
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, SHAPES="tiny", STEPS="2", ROUNDS="1", LOOP="2", LOOP_STEPS="4",
               PIPELINE_BATCHES="2", JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path))
    res = subprocess.run(["bash", os.path.join(repo, "launch", "device_benchmark.sh")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    for dtype in ("float32", "bfloat16"):
        assert f"== compute_dtype={dtype}" in out
    config = "configs/ccvae.py:tiny"
    assert out.count(f"| {config} | 0 |") == 2       # the compiled step, phase 0
    assert out.count(f"| {config} | 2 |") == 2       # the loop at 2 steps per call
    assert out.count(f"| {config} | 16 | 1024 |") == 2    # the pipeline, from memory
    assert out.count("The input pipeline (--pipeline)") == 2
    assert out.count("The trainer's time per step") == 2
