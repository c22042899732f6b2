"""Image grids of reconstructions, attribute edits and conditional samples.

Built only from a method's capabilities (reconstruct / edit / sample), so every method gets
the same grids without the trainer knowing which method it runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from latent_jax import imageio
from latent_jax.methods.base import jit_once


def make_grids(method, states, images, labels, rng, strength=None) -> dict[str, np.ndarray]:
    """uint8 grids keyed by name (row labels on the left, cells upscaled to at least 64 px):

    - `reconstructions`: inputs (row 1) and reconstructions (row 2);
    - `edits`: inputs, reconstructions, then for each label a row with it added (+1) and a row
      with it removed (-1);
    - `samples`: for each label, conditional samples with it on, then with it off (other labels
      taken from the inputs' label rows);
    - the attribute grids and code-split grids below, for the methods that declare them.
    """
    x = jnp.asarray(images)
    y = jnp.asarray(labels)
    n, k = x.shape[0], method.num_labels
    names = method.label_names
    recon = jit_once(method, "grid/reconstruct", lambda: jax.jit(method.reconstruct))(states, x)
    edit = jit_once(method, ("grid/edit", strength), lambda: jax.jit(
        lambda s, xx, c: method.edit(s, xx, c, strength=strength)))
    rows, row_labels = [np.asarray(x), np.asarray(recon)], ["input", "reconstruction"]
    grids = {"reconstructions": imageio.labelled_grid(rows, row_labels, min_cell=64)}
    for a in range(k):
        for sign in (1.0, -1.0):
            changes = jnp.zeros((n, k)).at[:, a].set(sign)
            rows.append(np.asarray(edit(states, x, changes)))
            row_labels.append(("+" if sign > 0 else "-") + names[a])
    grids["edits"] = imageio.labelled_grid(rows, row_labels, min_cell=64)
    sample = jit_once(method, "grid/sample", lambda: jax.jit(method.sample))
    srows, slabels = [], []
    for a in range(k):
        for value in (1.0, 0.0):
            ys = y.at[:, a].set(value)
            s, _ = sample(states, jax.random.fold_in(rng, 2 * a + int(value)), ys)
            srows.append(np.asarray(s))
            slabels.append(f"{names[a]}={int(value)}")
    if srows:
        grids["samples"] = imageio.labelled_grid(srows, slabels, min_cell=64)
    grids.update(attribute_grids(method, states, x))
    grids.update(code_split_grids(method, states, x))
    grids.update(class_interpolation_grids(method, states, jax.random.fold_in(rng, 10_000)))
    return grids


def class_interpolation_grids(method, states, rng, rows: int = 6, n: int = 7
                              ) -> dict[str, np.ndarray]:
    """`class_interpolation`: the first `rows` classes (rows), n random codes interpolated
    within each under one random label-irrelevant code (columns; Lr-LiVAE's Figure 4(a)), for
    methods that declare it (`{}` otherwise)."""
    if not method.has("class_interpolation") or len(method.image_shape) != 3:
        return {}
    num = int(getattr(getattr(method, "classes", None), "num_classes", 0) or 0)
    if num < 1:
        raise ValueError(f"{method.name}: class_interpolation needs `classes.num_classes`")
    classes = jnp.arange(min(rows, num))
    g = jit_once(method, ("grid/class_interpolation", len(classes), n), lambda: jax.jit(
        lambda s, r: method.class_interpolation(s, r, classes, n)))(states, rng)
    g = np.asarray(g)
    return {"class_interpolation": imageio.labelled_grid(
        list(g), [f"class {int(c)}" for c in classes], [f"z({j})" for j in range(n)],
        min_cell=64)}


def code_split_grids(method, states, images, n: int = 5, sweep_dims: int = 6,
                     sweep_values=tuple(range(-3, 4))) -> dict[str, np.ndarray]:
    """Grids of methods that declare `code_split` (`{}` otherwise):

    - `swap` (Lr-LiVAE's Figure 6): the top row holds the first n inputs, whose label-irrelevant
      code each column takes; each further row starts with the input whose label-relevant code
      the row takes, followed by its decodes with every column's rest;
    - `sweep` (Figure 5): the first input decoded with its label-relevant code kept and one
      label-irrelevant coordinate per row set to each of `sweep_values` (the prior is N(0, 1)),
      the others at their posterior means.
    """
    if not method.has("code_split"):
        return {}
    x = jnp.asarray(images)[:n]
    n = x.shape[0]
    swap = jit_once(method, "grid/swap", lambda: jax.jit(method.swap))
    rows = [np.concatenate([np.ones_like(np.asarray(x[:1])), np.asarray(x)])]
    for i in range(n):
        decoded = swap(states, jnp.repeat(x[i:i + 1], n, axis=0), x)
        rows.append(np.concatenate([np.asarray(x[i:i + 1]), np.asarray(decoded)]))
    out = {"swap": imageio.labelled_grid(
        rows, ["rest from"] + [f"labels from {i + 1}" for i in range(n)],
        ["source"] + [str(j + 1) for j in range(n)], min_cell=64)}
    values = jnp.asarray(sweep_values, jnp.float32)
    # Every row in one call (the dimension is traced): one compilation, not one per row.
    sweeps = jit_once(method, "grid/sweep", lambda: jax.jit(
        lambda s, xx, dd, vv: jax.vmap(lambda d: method.sweep(s, xx, d, vv)[0])(dd)))
    dims = range(min(sweep_dims, method.sweep_dims()))
    srows = list(np.asarray(sweeps(states, x[:1], jnp.arange(len(dims)), values))) if dims else []
    if srows:
        out["sweep"] = imageio.labelled_grid(
            srows, [f"rest dim {d}" for d in dims], [f"{float(v):+g}" for v in sweep_values],
            min_cell=64)
    return out


def attribute_grids(method, states, images, n: int = 5) -> dict[str, np.ndarray]:
    """Attribute-transfer grids of methods that declare `attribute_grid` (`attribute_grid(states,
    x, label, n) -> [B, M, H, W, C]`: one row per input: input, reconstruction, then M-2 decodes
    over the label's subspace or edit range); with two or more labels also the product grid of
    the first two (`label=(0, 1)`) for methods that declare `attribute_grid_pair`. `{}`
    otherwise."""
    if not method.has("attribute_grid"):
        return {}
    x = jnp.asarray(images)
    out = {}
    labels = list(range(method.num_labels))
    if method.num_labels >= 2 and method.has("attribute_grid_pair"):
        labels.append((0, 1))
    for label in labels:
        g = jit_once(method, ("grid/attribute_grid", label, n), lambda label=label: jax.jit(
            lambda s, xx: method.attribute_grid(s, xx, label, n)))(states, x)
        name = ("attribute_grid_" + "_".join(method.label_names[l] for l in label)
                if isinstance(label, tuple) else f"attribute_grid_{method.label_names[label]}")
        out[name] = imageio.make_grid(np.asarray(g.reshape((-1,) + g.shape[2:])),
                                         nrow=g.shape[1])
    return out
