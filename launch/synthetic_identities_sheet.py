"""Writes a contact sheet of synthetic_identities: one row per identity, six photographs each.

    python launch/synthetic_identities_sheet.py docs/figures/synthetic_identities.png
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from latent_jax.data import synthetic_identities  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    Image.fromarray(synthetic_identities.contact_sheet()).save(sys.argv[1])
    print(f"wrote {sys.argv[1]}: identities 0-4 of the training split, six photographs each")
