"""Prints training-step throughput of a config, per phase, on this machine's devices.

    python launch/benchmark_train.py --config=configs/introvac.py:synthetic [--steps=20]

Figures: compile time and steady-state seconds per step / images per second of each phase,
with the batch fetched from the real pipeline (data time reported separately).
"""

import time

from absl import app, flags
import jax
from ml_collections import config_flags

from latent_jax import parallel, train
from latent_jax.data import pipeline as data_lib

flags.DEFINE_integer("steps", 20, "Timed steps per phase.")
flags.DEFINE_string("workdir", "/tmp/latent_jax_benchmark", "Scratch workdir (nothing written).")
config_flags.DEFINE_config_file("config", None, "Config file[:preset].", lock_config=True)
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = FLAGS.config
    exp = train.Experiment(config, FLAGS.workdir)
    it = data_lib.make_train_iterator(config.data, global_batch_size=int(config.batch_size),
                                      seed=int(config.seed))
    t = time.perf_counter()
    host_batches = [exp.host_batch(it) for _ in range(FLAGS.steps)]
    data_s = (time.perf_counter() - t) / FLAGS.steps
    batches = [parallel.shard_batch(b, exp.mesh) for b in host_batches]
    phases = sorted({exp.method.phase(0)} | {exp.method.phase(s) for s in
                                             exp.method.phase_boundaries()})
    print(f"method={config.method} devices={exp.mesh.devices.size} "
          f"batch={config.batch_size} image={exp.spec.image_shape} "
          f"steps/epoch={exp.steps_per_epoch} total_steps={exp.total_steps}")
    print(f"data pipeline: {data_s * 1000:.1f} ms/batch")
    for phase in phases:
        fn = exp.step_fn(phase)
        states = exp.init_states()
        t = time.perf_counter()
        states, metrics, _ = fn(states, batches[0], jax.random.PRNGKey(0))
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        for i, b in enumerate(batches):
            states, metrics, _ = fn(states, b, jax.random.PRNGKey(i))
        jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - t) / len(batches)
        print(f"phase {phase}: compile {compile_s:.1f} s, {step_s:.3f} s/step, "
              f"{int(config.batch_size) * exp.batches_per_step / step_s:.0f} images/s")


if __name__ == "__main__":
    app.run(main)
