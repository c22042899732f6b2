"""Writes tests/golden/synthetic_faces-<VERSION>.npz, the reference renders of the current
`synthetic_faces.VERSION` that tests/test_versions.py compares the renderer with.

Run it only together with a deliberate change of the renderer and a new VERSION:

    python tests/make_golden.py

It refuses to overwrite the file of an existing version (a changed rendering under an old
version is exactly what the test exists to catch).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from latent_jax.data import synthetic_faces as sf

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")

# (seed, split, index, size, overrides): a few faces per split and size, one with an override.
RENDERS = (
    (0, "train", 0, 32, None), (0, "train", 1, 32, None), (0, "train", 2, 32, None),
    (0, "train", 3, 32, None), (0, "validation", 0, 32, None), (0, "test", 0, 32, None),
    (7, "train", 5, 32, None), (0, "test", 1, 64, None), (0, "train", 4, 128, None),
    (0, "train", 1, 32, {"Smiling": True, "Eyeglasses": True}),
)
REGIONS = ((0, "train", 0, 32), (0, "test", 1, 64))
TABLE_SIZE = 500


def golden_path(version: str = sf.VERSION) -> str:
    return os.path.join(GOLDEN_DIR, f"synthetic_faces-{version}.npz")


def compute() -> dict[str, np.ndarray]:
    """Everything the golden file holds, computed by the current renderer."""
    out: dict[str, np.ndarray] = {}
    for k, (seed, split, index, size, overrides) in enumerate(RENDERS):
        image, attrs = sf.render(seed, split, index, size, overrides=overrides)
        out[f"image{k}"] = image
        out[f"image{k}_attributes"] = np.array([attrs[a] for a in sf.ATTRIBUTES])
    for k, (seed, split, index, size) in enumerate(REGIONS):
        regions = sf.attribute_regions(seed, split, index, size)
        out[f"regions{k}"] = np.stack([regions[a] for a in sf.ATTRIBUTES])
    for split in sf.SPLITS:
        out[f"table_{split}"] = sf.attributes_table(0, split, TABLE_SIZE)
    out["attribute_names"] = np.array(sf.ATTRIBUTES)
    return out


def main() -> int:
    path = golden_path()
    if os.path.exists(path):
        print(f"{path} exists: reference renders of a released version are never rewritten; "
              f"bump synthetic_faces.VERSION first", file=sys.stderr)
        return 1
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    np.savez_compressed(path, **compute())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
