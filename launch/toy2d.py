"""Lr-LiVAE's Section 4.1 toy and its Figure 2: lrlivae and cvaegan on 2-D points of three
classes (x label relevant, y not), then samples of each class from both.

    python launch/toy2d.py --out=runs/toy2d [--samples=500]

Trains `configs/lrlivae.py:toy` and `configs/cvaegan.py:toy` (resuming a finished run just
re-samples) and writes OUT/figure2.png: the training points, cVAE-GAN's samples and Lr-LiVAE's
samples, coloured by class, and OUT/toy2d.json with each class's mean and standard deviation
along x (label relevant) and y (label irrelevant), for the data and both models.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_string("out", None, "Output directory (one workdir per model inside).")
flags.DEFINE_integer("samples", 500, "Samples per class and model.")
FLAGS = flags.FLAGS
COLOURS = ("tab:green", "tab:red", "tab:blue")


def _config(name):
    from latent_jax import configlib

    path = os.path.join(REPO, "configs", f"{name}.py")
    return configlib.sibling_config(path, f"{name}.py").get_config("toy")


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    import jax
    import jax.numpy as jnp
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from etils import epath

    from latent_jax import train
    from latent_jax.data import pipeline

    panels, spread = {}, {}
    data_cfg = _config("lrlivae").data
    src = pipeline.make_source(data_cfg, "train")
    points = np.stack([src[i]["image"] for i in range(len(src))])
    classes = np.asarray([src[i]["label"][0] for i in range(len(src))], int)
    panels["data (train)"] = (points, classes)
    for name in ("cvaegan", "lrlivae"):
        cfg = _config(name)
        workdir = str(epath.Path(FLAGS.out) / name)
        train.train_and_evaluate(cfg, workdir)
        exp, states, step = train.load_for_inference(cfg, workdir)
        y = np.repeat(np.arange(3, dtype=np.float32), FLAGS.samples)[:, None]
        x, _ = jax.jit(exp.method.sample)(states, jax.random.PRNGKey(1), jnp.asarray(y))
        panels[f"{name} samples (step {step})"] = (np.asarray(x), y[:, 0].astype(int))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), sharex=True,
                             sharey=True)
    for ax, (title, (p, c)) in zip(axes, panels.items()):
        for k in range(3):
            ax.scatter(p[c == k, 0], p[c == k, 1], s=3, alpha=0.5, color=COLOURS[k])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (label relevant)")
        spread[title] = {str(k): {"y_std": float(p[c == k, 1].std()),
                                  "x_std": float(p[c == k, 0].std()),
                                  "x_mean": float(p[c == k, 0].mean())} for k in range(3)}
    axes[0].set_ylabel("y (label irrelevant)")
    fig.tight_layout()
    out = epath.Path(FLAGS.out)   # local or gs://
    out.mkdir(parents=True, exist_ok=True)
    with (out / "figure2.png").open("wb") as f:
        fig.savefig(f, format="png", dpi=120)
    (out / "toy2d.json").write_text(json.dumps(spread, indent=2))
    for title, per in spread.items():
        print(title, {k: (round(v["x_mean"], 2), round(v["x_std"], 2), round(v["y_std"], 2))
                      for k, v in per.items()})
    print(f"wrote {out / 'figure2.png'}")


if __name__ == "__main__":
    app.run(main)
