"""Inpainting side by side (paper 002, Sec. 4.5, Figure 7): for each of the four masks, the test
images, the masked inputs and every given run's inpainting, in one PNG.

    python launch/inpaint_figure.py --workdir=runs/identities/lrlivae \
        --workdir=runs/identities/cvaegan --out=docs/figures/identities_inpainting.png

Each run's newest checkpoint and saved config (WORKDIR/config.json); the first `--num_images`
images of the runs' test split (the runs must share the data config). The region is filled
with mid-grey, and methods conditioned on the class (cVAE, cVAE-GAN) reconstruct at the true
class, as in the evaluation reports. Prints each run's MSE inside each mask on those images.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", action="append", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--num_images", type=int, default=6)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from latent_jax import imageio, train
    from latent_jax.data import pipeline
    from latent_jax.evaluate import inpaint

    loaded, data_cfg = train.load_runs_on_shared_data(args.workdir)
    batches = list(pipeline.iterate_eval_batches(data_cfg, "test", args.num_images,
                                                 max_examples=args.num_images))
    keep = [np.asarray(b["mask"], bool) for b in batches]
    x = np.concatenate([np.asarray(b["image"])[k] for b, k in zip(batches, keep)])
    y = jnp.asarray(np.concatenate([np.asarray(b["label"], np.float32)[k]
                                    for b, k in zip(batches, keep)]))

    def reconstruct_fn(method):
        """At the true class for a method conditioned on it (the report's protocol)."""
        if method.reconstructs_given_labels:
            f = jax.jit(method.reconstruct_given_labels)
            return lambda s, im: f(s, im, y[:len(im)])
        return jax.jit(method.reconstruct)

    runs = [(f"{config.method} ({step} steps)", reconstruct_fn(exp.method), states)
            for config, exp, states, step in loaded]
    rows, labels = [x], ["input"]
    for name in inpaint.MASK_NAMES:
        m = inpaint.mask(name, x.shape[1], str(data_cfg.name))
        for label, recon, states in runs:
            corrupted, filled = inpaint.inpaint(
                lambda im, recon=recon, states=states: np.asarray(recon(states, jnp.asarray(im))),
                x, m)
            if label == runs[0][0]:
                rows.append(corrupted)
                labels.append(f"{name} masked")
            rows.append(filled)
            labels.append(f"{label.split(' ')[0]}")
            print(f"{name}: {label} MSE inside the mask "
                  f"{float(np.mean(np.square(filled - x)[:, m])):.4f}")
    out = imageio.save_png(args.out, imageio.labelled_grid(rows, labels, min_cell=64))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
