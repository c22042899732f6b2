"""CSVAE on the Swiss roll (paper 001, Sec. 5.1 and Figure 2), with linear probes.

    python launch/swiss_roll.py [--workdir=runs/swiss_roll] [--set=num_epochs=20 ...]

Trains `configs/csvae.py:swiss_roll` (n = 10000 training points, label x > 10, Z = W = R^2,
MLPs) with the shared trainer, then encodes the training points and 2000 held-out test points
(posterior means; W from q(w|x,y) with the true label, as the model is defined) and prints:
- the accuracy of a logistic-regression probe predicting y from W and from Z, trained on the
  training encodings and measured on the test encodings, next to the majority-class rate (what
  a probe that learned nothing scores). The paper's claim: the labels separate in W and
  overlap in Z;
- the wall time of the whole command.
It writes `<workdir>/swiss_roll_latents.png`: the data and its reconstruction (x-z plane),
then the latent projected onto every pair of axes (w1, w2, z1, z2), coloured by label (red: 1).
Drawn with numpy and PIL only.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import itertools
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fit_logistic_probe(features: np.ndarray, labels: np.ndarray, steps: int = 2000,
                       lr: float = 0.5, l2: float = 1e-4):
    """Binary logistic regression by full-batch gradient descent on standardised features.

    Returns predict(features) -> bool."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64).reshape(-1)
    mean, std = x.mean(0), x.std(0) + 1e-8
    xs = (x - mean) / std
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(xs @ w + b)))
        g = p - y
        w -= lr * (xs.T @ g / len(y) + l2 * w)
        b -= lr * g.mean()
    return lambda f: ((np.asarray(f, np.float64) - mean) / std) @ w + b > 0


def probe_accuracy(train_f, train_y, test_f, test_y) -> float:
    predict = fit_logistic_probe(train_f, train_y)
    return float(np.mean(predict(test_f) == np.asarray(test_y, bool)))


def _scatter(points: np.ndarray, labels: np.ndarray, title: str, size: int = 220):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size + 16), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 2), title, fill="black")
    p = np.asarray(points, np.float64)
    lo, hi = np.percentile(p, 0.5, axis=0), np.percentile(p, 99.5, axis=0)
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    uv = (p - lo) / span
    pad = 8
    px = pad + uv[:, 0] * (size - 2 * pad)
    py = 16 + size - pad - uv[:, 1] * (size - 2 * pad)
    d.rectangle([pad - 2, 16 + pad - 2, size - pad + 2, 16 + size - pad + 2], outline=(160,) * 3)
    order = np.argsort(labels, kind="stable")   # positives drawn on top
    for i in order:
        colour = (220, 40, 40) if labels[i] else (40, 80, 220)
        d.point((float(px[i]), float(py[i])), fill=colour)
    return img


def figure(data, recon, w, z, labels, path):
    from PIL import Image

    panels = [_scatter(data[:, [0, 2]], labels, "data (x, z)"),
              _scatter(recon[:, [0, 2]], labels, "reconstruction (x, z)")]
    axes = {"w1": w[:, 0], "w2": w[:, 1], "z1": z[:, 0], "z2": z[:, 1]}
    for a, b in itertools.combinations(axes, 2):
        panels.append(_scatter(np.stack([axes[a], axes[b]], -1), labels, f"({a}, {b})"))
    cols = 4
    rows = -(-len(panels) // cols)
    pw, ph = panels[0].size
    canvas = Image.new("RGB", (cols * pw, rows * ph), "white")
    for i, p in enumerate(panels):
        canvas.paste(p, ((i % cols) * pw, (i // cols) * ph))
    canvas.save(path)


def load_config(overrides):
    spec = importlib.util.spec_from_file_location("csvae_config",
                                                  os.path.join(ROOT, "configs", "csvae.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("swiss_roll")
    flat = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: {item!r} is not KEY=VALUE")
        try:
            flat[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            flat[key] = value
    c.update_from_flattened_dict(flat)
    return c


def encode_split(exp, states, split):
    import jax
    import jax.numpy as jnp

    from latent_jax.data import pipeline as data_lib

    xs, ys = [], []
    for b in data_lib.iterate_eval_batches(exp.data, split, 1000):
        m = np.asarray(b["mask"], bool)
        xs.append(np.asarray(b["image"])[m])
        ys.append(np.asarray(b["label"])[m])
    x, y = np.concatenate(xs), np.concatenate(ys)
    method = exp.method
    posts = jax.jit(method.posteriors)(states, jnp.asarray(x), jnp.asarray(y))
    recon = jax.jit(lambda s, xx, yy: method.decode_code(
        s, method.decoder_code({n: mu for n, (mu, _) in method.posteriors(s, xx, yy).items()},
                               yy)))(states, jnp.asarray(x), jnp.asarray(y))
    return (x, y[:, 0] > 0.5, np.asarray(posts["w"][0]), np.asarray(posts["z"][0]),
            np.asarray(recon))


def main(argv=None):
    t0 = time.time()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default=os.path.join("runs", "swiss_roll"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    from latent_jax import train

    config = load_config(args.set)
    train.train_and_evaluate(config, args.workdir)
    exp, states, step = train.load_for_inference(config, args.workdir)
    x_tr, y_tr, w_tr, z_tr, _ = encode_split(exp, states, "train")
    x_te, y_te, w_te, z_te, r_te = encode_split(exp, states, "test")
    acc_w = probe_accuracy(w_tr, y_tr, w_te, y_te)
    acc_z = probe_accuracy(z_tr, y_tr, z_te, y_te)
    acc_x = probe_accuracy(x_tr, y_tr, x_te, y_te)
    majority = float(max(np.mean(y_te), 1 - np.mean(y_te)))
    path = os.path.join(args.workdir, "swiss_roll_latents.png")
    figure(x_te, r_te, w_te, z_te, y_te, path)
    mse = float(np.mean((r_te - x_te) ** 2))
    result = {"step": step, "probe_accuracy_W": acc_w, "probe_accuracy_Z": acc_z,
              "probe_accuracy_x": acc_x, "majority_rate": majority, "test_recon_mse": mse,
              "seconds": time.time() - t0}
    print(f"Swiss roll, CSVAE after {step} steps ({len(x_tr)} train / {len(x_te)} test points)")
    print(f"  linear probe accuracy, y from W: {acc_w:.4f}")
    print(f"  linear probe accuracy, y from Z: {acc_z:.4f}")
    print(f"  (y from the data x itself: {acc_x:.4f}; majority-class rate: {majority:.4f})")
    print(f"  test reconstruction MSE per coordinate: {mse:.4f}")
    print(f"  figure: {path}")
    print(f"  wall time of this command: {result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
