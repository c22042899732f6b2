"""Writes tests/golden/synthetic_faces-<VERSION>.npz and synthetic_identities-<VERSION>.npz,
the reference renders of the current `synthetic_faces.VERSION` and
`synthetic_identities.VERSION` that tests/test_versions.py compares the renderers with.

Run it only together with a deliberate change of the renderer and a new VERSION:

    python tests/make_golden.py

It writes only the files that do not exist yet and never overwrites the file of an existing
version (a changed rendering under an old
version is exactly what the test exists to catch).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from latent_jax.data import synthetic_faces as sf
from latent_jax.data import synthetic_identities as si

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


def golden_path(version: str = sf.VERSION, dataset: str = "synthetic_faces") -> str:
    return os.path.join(GOLDEN_DIR, f"{dataset}-{version}.npz")


# synthetic_identities: (seed, split, index, size, num_identities), including two images of one
# identity, an unseen identity and another seed.
IDENTITY_RENDERS = (
    (0, "train", 0, 32, 300), (0, "train", 300, 32, 300), (0, "test", 0, 32, 300),
    (0, "test_unseen", 0, 32, 300), (0, "validation", 3, 64, 300), (5, "train", 2, 32, 7),
)
IDENTITY_TABLE_SIZE = 400


def identities_golden_path(version: str = si.VERSION) -> str:
    return golden_path(version, "synthetic_identities")


def compute_identities() -> dict[str, np.ndarray]:
    """Everything the synthetic_identities golden file holds, computed now."""
    out: dict[str, np.ndarray] = {}
    for k, (seed, split, index, size, ids) in enumerate(IDENTITY_RENDERS):
        image, attrs = si.render(seed, split, index, size, num_identities=ids)
        out[f"image{k}"] = image
        out[f"image{k}_attributes"] = np.array([attrs[a] for a in si.ATTRIBUTES])
        out[f"image{k}_identity"] = np.array(attrs[si.IDENTITY])
    regions = si.attribute_regions(0, "train", 0, 32)
    out["regions0"] = np.stack([regions[a] for a in si.ATTRIBUTES])
    for split in si.SPLITS:
        out[f"table_{split}"] = si.attributes_table(0, split, IDENTITY_TABLE_SIZE)
        out[f"identities_{split}"] = si.identity_table(split, IDENTITY_TABLE_SIZE)
        out[f"nuisance_{split}"] = si.nuisance_table(0, split, 100)
    out["attribute_names"] = np.array(si.ATTRIBUTES)
    out["nuisance_names"] = np.array(tuple(si.NUISANCE_FACTORS))
    return out


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
    wrote = 0
    for path, make in ((golden_path(), compute), (identities_golden_path(), compute_identities)):
        if os.path.exists(path):
            print(f"{path} exists: reference renders of a released version are never "
                  f"rewritten (bump the VERSION to change them)", file=sys.stderr)
            continue
        os.makedirs(GOLDEN_DIR, exist_ok=True)
        np.savez_compressed(path, **make())
        print(f"wrote {path}")
        wrote += 1
    return 0 if wrote else 1


if __name__ == "__main__":
    sys.exit(main())
