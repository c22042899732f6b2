"""Image grids of reconstructions, attribute edits and conditional samples.

Built only from a method's capabilities (reconstruct / edit / sample), so every method gets
the same grids without the trainer knowing which method it runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from latent_jax import logging as lj_logging


def make_grids(method, states, images, labels, rng, strength=None) -> dict[str, np.ndarray]:
    """uint8 grids keyed by name:

    - `reconstructions`: inputs (row 1) and reconstructions (row 2);
    - `edits`: inputs, reconstructions, then for each label a row with it added (+1) and a row
      with it removed (-1);
    - `samples`: for each label, conditional samples with it on, then with it off (other labels
      taken from the inputs' label rows).
    """
    x = jnp.asarray(images)
    y = jnp.asarray(labels)
    n, k = x.shape[0], method.num_labels
    recon = jax.jit(method.reconstruct)(states, x)
    edit = jax.jit(method.edit, static_argnames=("strength",))
    rows = [x, recon]
    grids = {"reconstructions": lj_logging.make_grid(np.asarray(jnp.concatenate(rows)), nrow=n)}
    for a in range(k):
        for sign in (1.0, -1.0):
            changes = jnp.zeros((n, k)).at[:, a].set(sign)
            rows.append(edit(states, x, changes, strength=strength))
    grids["edits"] = lj_logging.make_grid(np.asarray(jnp.concatenate(rows)), nrow=n)
    sample = jax.jit(method.sample)
    srows = []
    for a in range(k):
        for value in (1.0, 0.0):
            ys = y.at[:, a].set(value)
            s, _ = sample(states, jax.random.fold_in(rng, 2 * a + int(value)), ys)
            srows.append(s)
    if srows:
        grids["samples"] = lj_logging.make_grid(np.asarray(jnp.concatenate(srows)), nrow=n)
    return grids
