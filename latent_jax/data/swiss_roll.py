"""``swiss_roll``: the toy data of CSVAE's Section 5.1 (paper 001), generated with numpy.

The points follow scikit-learn's ``make_swiss_roll`` (without noise by default):

    t ~ 1.5 pi (1 + 2 U[0, 1)),   h ~ 21 U[0, 1),   (x, y, z) = (t cos t, h, t sin t),

and each point gets the binary attribute ``x_gt_10`` = (x > 10), which splits the roll in two
as in the paper. Each split is drawn from its own generator, seeded with (seed, split id), so
the splits never share points. Records are ``{'image': float32 [3], 'attributes': {...}}``:
the pipeline passes float ``image`` arrays through unscaled, so a batch's ``image`` is the
point itself, shape ``[B, 3]``.
"""

from __future__ import annotations

import numpy as np

ATTRIBUTES = ("x_gt_10",)
SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_SIZES = {"train": 10000, "validation": 1000, "test": 2000}


def make_swiss_roll(n: int, rng: np.random.Generator, noise: float = 0.0) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """(points [n, 3] float32, roll parameter t [n]) as scikit-learn's make_swiss_roll."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    h = 21.0 * rng.random(n)
    points = np.stack([t * np.cos(t), h, t * np.sin(t)], axis=-1)
    if noise:
        points = points + noise * rng.standard_normal(points.shape)
    return points.astype(np.float32), t


def label(points: np.ndarray) -> np.ndarray:
    """The paper's label: 1 where x > 10."""
    return np.asarray(points)[..., 0] > 10.0


class SwissRoll:
    """Random-access source of one split, grain-compatible (picklable, ``len``, ``[i]``)."""

    def __init__(self, split: str, seed: int = 0, num_examples: int | None = None,
                 noise: float = 0.0):
        if split not in SPLITS:
            raise ValueError(f"swiss_roll: unknown split {split!r}; known: {', '.join(SPLITS)}")
        n = DEFAULT_SPLIT_SIZES[split] if num_examples is None else int(num_examples)
        rng = np.random.default_rng([int(seed), SPLITS.index(split)])
        self.points, self.t = make_swiss_roll(n, rng, noise)
        self.labels = label(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index) -> dict:
        i = int(index)
        return {"image": self.points[i], "attributes": {"x_gt_10": bool(self.labels[i])}}

    def attributes_table(self) -> np.ndarray:
        return self.labels[:, None].copy()
