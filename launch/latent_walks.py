"""Latent-walk figures from a trained checkpoint, for methods with per-label latents.

    python launch/latent_walks.py --config=configs/ccvae.py:synthetic,1.0 \\
        --workdir=runs/ccvae_synthetic/ccvae_f1.0 [--labels=Male,Smiling] \\
        [--pair=Male,Eyeglasses] [--num_images=6] [--num_steps=7]

Writes to WORKDIR/walks/:
- `walk_<label>.png`: rows = test images, columns = z_c of that label walked from its class-0
  prior mean to its class-1 prior mean (each label its own limits; the reference's 1-D walk used
  the last label's limits for every label), the other latents kept at the image's encoding;
- `walk_<a>__<b>.png` for `--pair`: a num_steps x num_steps grid over both labels for the first
  test image.
Needs the method's `latent_walk` / `latent_walk_pair` (CCVAE, DIVA); others are refused.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("workdir", None, "Run directory with checkpoints.")
flags.DEFINE_list("labels", [], "Labels to walk (default: every binary label).")
flags.DEFINE_list("pair", [], "Two labels for a 2-D walk.")
flags.DEFINE_integer("num_images", 6, "Test images (rows).")
flags.DEFINE_integer("num_steps", 7, "Steps of each walk.")
config_flags.DEFINE_config_file("config", None, "Config file with preset.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import numpy as np

    from etils import epath

    from latent_jax import imageio
    from latent_jax import train
    from latent_jax.data import labels as labels_lib
    from latent_jax.data import pipeline

    exp, states, step = train.load_for_inference(FLAGS.config, FLAGS.workdir)
    method = exp.method
    if not method.has("walk"):
        raise app.UsageError(f"method {FLAGS.config.method!r} has no per-label latent walk")
    names = list(method.label_names)
    chosen = FLAGS.labels or [n for n in names
                              if labels_lib.label_kind(n) == labels_lib.BINARY]
    batch = next(iter(pipeline.iterate_eval_batches(exp.data, "test",
                                                    FLAGS.num_images)))
    x = jax.numpy.asarray(batch["image"])
    out_dir = epath.Path(exp.workdir) / "walks"
    out_dir.mkdir(parents=True, exist_ok=True)
    walk = jax.jit(method.latent_walk, static_argnums=(2, 3))
    for name in chosen:
        if name not in names:
            raise app.UsageError(f"--labels: {name!r} is not a label of this model")
        imgs = np.asarray(walk(states, x, names.index(name), FLAGS.num_steps))  # [T, B, ...]
        grid = imageio.make_grid(np.concatenate([np.asarray(x)[:, None], imgs.swapaxes(0, 1)],
                                                   axis=1).reshape((-1,) + imgs.shape[2:]),
                                    nrow=FLAGS.num_steps + 1)
        imageio.save_png(out_dir / f"walk_{name}.png", grid)
    if FLAGS.pair:
        a, b = FLAGS.pair
        pair = jax.jit(method.latent_walk_pair, static_argnums=(2, 3, 4))
        imgs = np.asarray(pair(states, x[:1], names.index(a), names.index(b), FLAGS.num_steps))
        grid = imageio.make_grid(imgs[:, :, 0].reshape((-1,) + imgs.shape[3:]),
                                    nrow=FLAGS.num_steps)
        imageio.save_png(out_dir / f"walk_{a}__{b}.png", grid)
    print(f"wrote latent walks of step {step} to {out_dir}")


if __name__ == "__main__":
    app.run(main)
