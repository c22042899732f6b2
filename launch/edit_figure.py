"""Label edits side by side (paper 003, Figures 2-3): test images of each class of a binary
label, and for every given run its reconstructions and its decodes with the label set to 0
and to 1, in one PNG.

    python launch/edit_figure.py --workdir=runs/table1_eyeglasses/cvaegan_naive_synthetic_eyeglasses \
        --workdir=runs/table1_eyeglasses/ifcvaegan_best --out=docs/figures/table1_eyeglasses.png

Any method with `edit` (IFcVAEGAN sets y_hat; the others move by their own edit). Each run's
newest checkpoint and saved config (WORKDIR/config.json); the runs must share the data config.
Columns: the first `--num_images` test images with the label 1, then as many with 0. Nothing
is scored here: the evaluation report's `table1` entries are the figures of record.
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
    p.add_argument("--label", default=None, help="a binary label of the runs (default: their "
                   "first)")
    p.add_argument("--num_images", type=int, default=4, help="images of each class")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from etils import epath

    from latent_jax import imageio, train
    from latent_jax.data import pipeline
    from latent_jax.methods import base

    loaded, data_cfg = train.load_runs_on_shared_data(args.workdir)
    names = tuple(data_cfg.labels)
    label = args.label or names[0]
    if label not in names:
        raise SystemExit(f"--label: {label!r} is not one of the runs' labels {names}")
    col = names.index(label)
    for config, exp, _, _ in loaded:
        if base.EDIT not in exp.method.capabilities:
            raise SystemExit(f"--workdir: {config.method} cannot edit")

    # The first --num_images test images of each class, label 1 first (the paper's y = 1).
    chosen = {1: [], 0: []}
    for batch in pipeline.iterate_eval_batches(data_cfg, "test", 64):
        for image, y, keep in zip(batch["image"], batch["label"][:, col], batch["mask"]):
            if keep and len(chosen[int(y)]) < args.num_images:
                chosen[int(y)].append(image)
        if all(len(v) == args.num_images for v in chosen.values()):
            break
    x = np.stack(chosen[1] + chosen[0])
    column_labels = [f"y={1 if k < len(chosen[1]) else 0}" for k in range(len(x))]

    rows, row_labels = [x], ["input"]
    for (config, exp, states, step), wd in zip(loaded, args.workdir):
        run = epath.Path(wd).name
        recon = jax.jit(exp.method.reconstruct)
        edit = jax.jit(exp.method.edit)
        rows.append(np.asarray(recon(states, jnp.asarray(x))))
        row_labels.append(f"{run} recon")
        for value, change in ((0, -1.0), (1, 1.0)):
            changes = np.zeros((len(x), len(names)), np.float32)
            changes[:, col] = change
            rows.append(np.asarray(edit(states, jnp.asarray(x), jnp.asarray(changes))))
            row_labels.append(f"{run} {label}={value}")
        print(f"{run}: {config.method}, {step} steps")
    out = imageio.save_png(args.out, imageio.labelled_grid(rows, row_labels, column_labels,
                                                           min_cell=64))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
