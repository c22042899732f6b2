"""``toy2d``: the 2-D toy of Lr-LiVAE's Section 4.1 (paper 002), generated with numpy.

Three classes of 2-D points; x is label relevant, y is not. The paper does not give the
distribution; here class c in {0, 1, 2} has x ~ N(2 (c - 1), 0.25^2) and y ~ U[-2, 2] for every
class, so a model that reads the class from x alone and keeps y free generates the whole
vertical spread of each class. The raw attributes are the one-hot columns ``class_0``,
``class_1``, ``class_2``; the categorical label ``Toy_CLASS`` (3 classes) is derived from them.
Records are ``{'image': float32 [2], 'attributes': {...}}``, passed through unscaled (preprocess
``raw``), so a batch's ``image`` is the points, ``[B, 2]``. Each split is drawn from its own
generator, seeded with (seed, split id).
"""

from __future__ import annotations

import numpy as np

from latent_jax.data import labels as labels_lib

ATTRIBUTES = ("class_0", "class_1", "class_2")
SPLITS = ("train", "validation", "test")
CLASS_CENTRES = (-2.0, 0.0, 2.0)
X_STD = 0.25
Y_RANGE = (-2.0, 2.0)


def make_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(points [n, 2] float32, classes [n] int)."""
    c = rng.integers(0, 3, n)
    x = np.asarray(CLASS_CENTRES)[c] + X_STD * rng.standard_normal(n)
    y = rng.uniform(*Y_RANGE, n)
    return np.stack([x, y], axis=-1).astype(np.float32), c


labels_lib.register_derived_label(
    "Toy_CLASS", ATTRIBUTES,
    lambda a: np.argmax(np.stack([np.asarray(a[n]) for n in ATTRIBUTES], axis=-1), axis=-1),
    kind=labels_lib.CATEGORICAL, num_classes=3,
    description="the toy2d class (0, 1, 2), from the one-hot class_* attributes")


class Toy2D:
    """Random-access source of one split, grain-compatible (picklable, ``len``, ``[i]``)."""

    def __init__(self, split: str, seed: int = 0, num_examples: int = 3000):
        if split not in SPLITS:
            raise ValueError(f"toy2d: unknown split {split!r}; known: {', '.join(SPLITS)}")
        rng = np.random.default_rng([int(seed), SPLITS.index(split), 2])
        self.points, self.classes = make_points(int(num_examples), rng)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index) -> dict:
        i = int(index)
        return {"image": self.points[i],
                "attributes": {n: bool(self.classes[i] == k) for k, n in enumerate(ATTRIBUTES)}}

    def attributes_table(self) -> np.ndarray:
        return np.eye(3, dtype=bool)[self.classes]
