"""Disentanglement probes of a trained run on synthetic_identities (paper 002, Sec. 4.3).

    python launch/probes.py --workdir=runs/identities/lrlivae [--num_train=4000] [--num_test=2000]

For a method that declares `code_split` (Lr-LiVAE, cVAE, cVAE-GAN, CSVAE, IFcVAEGAN), encodes
training and test images with the run's newest checkpoint (the config is the one the run saved
in WORKDIR/config.json) and fits linear probes (latent_jax/evaluate/probes.py):

- seen identities: probes fitted on the first `num_train` training images, scored on the first
  `num_test` test images (other photographs of the same identities);
- unseen identities: the `test_unseen` split (identities no training image shows), probes
  fitted on its first half and scored on its second half (does z_s separate people the model
  never saw?);

each with the identity's accuracy from the label-relevant code and from the rest, and each
nuisance factor's R^2 from either part. Writes WORKDIR/eval/probes_<step>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images_of(config, split: str, n: int):
    """(float32 images [n, S, S, 3], identities [n], factors [n, F]) of a split."""
    from latent_jax.data import synthetic_identities as si

    d = config.data
    src = si.SyntheticIdentities(split, image_size=int(d.image_size), seed=int(d.synthetic.seed),
                                 num_examples=n, num_identities=int(d.synthetic.num_identities))
    x = np.stack([src[i]["image"] for i in range(n)]).astype(np.float32) / 255.0
    return x, src.identity_table(), src.nuisance_table()


def encode(method, states, x: np.ndarray, batch: int = 250) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    f = jax.jit(method.encode)
    return np.concatenate([np.asarray(f(states, jnp.asarray(x[i:i + batch])))
                           for i in range(0, len(x), batch)])


def run(workdir: str, num_train: int, num_test: int) -> dict:
    from etils import epath

    from latent_jax import train
    from latent_jax.data import synthetic_identities as si
    from latent_jax.evaluate import probes
    from latent_jax.methods import base

    wd = epath.Path(workdir)
    config = train.saved_config(workdir)
    if config.data.name != "synthetic_identities":
        raise SystemExit(f"--workdir: the run trained on {config.data.name}; the probes need "
                         f"synthetic_identities (its identities and nuisance factors)")
    if config.data.preprocess not in ("resize", "none"):
        raise SystemExit("--workdir: the probes render at the model's size (preprocess resize)")
    exp, states, step = train.load_for_inference(config, workdir)
    method = exp.method
    if not method.has(base.CODE_SPLIT):
        raise SystemExit(f"--workdir: {config.method} does not declare code_split (no label-"
                         f"relevant / -irrelevant split of its code to probe)")
    mask = np.asarray(method.relevant_code_mask(), bool)
    names = tuple(si.NUISANCE_FACTORS)
    t0 = time.time()
    x_tr, id_tr, f_tr = images_of(config, "train", num_train)
    x_te, id_te, f_te = images_of(config, "test", num_test)
    x_un, id_un, f_un = images_of(config, "test_unseen", num_test)
    c_tr, c_te, c_un = (encode(method, states, x) for x in (x_tr, x_te, x_un))
    t_encode = time.time() - t0
    seen = probes.disentanglement_probes(c_tr, c_te, mask, classes_train=id_tr,
                                         classes_test=id_te, factors_train=f_tr,
                                         factors_test=f_te, factor_names=names)
    h = len(c_un) // 2
    unseen = probes.disentanglement_probes(c_un[:h], c_un[h:], mask, classes_train=id_un[:h],
                                           classes_test=id_un[h:], factors_train=f_un[:h],
                                           factors_test=f_un[h:], factor_names=names)
    result = {"step": int(step), "method": str(config.method),
              "num_identities": int(config.data.synthetic.num_identities),
              "dataset_version": si.VERSION, "seen": seen, "unseen": unseen,
              "seconds": {"render_and_encode": t_encode, "total": time.time() - t0}}
    out = wd / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"probes_{step}.json").write_text(json.dumps(result, indent=1))
    md = [f"# Probes of {config.method} at step {step} (synthetic_identities {si.VERSION}, "
          f"{result['num_identities']} identities)", "",
          "## Seen identities (probe fitted on training images, scored on test images)", "",
          probes.format_probes(seen), "",
          "## Unseen identities (test_unseen: fitted on one half, scored on the other)", "",
          probes.format_probes(unseen), ""]
    (out / f"probes_{step}.md").write_text("\n".join(md))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--num_train", type=int, default=4000)
    p.add_argument("--num_test", type=int, default=2000)
    args = p.parse_args(argv)
    if args.num_train < 2 or args.num_test < 4:
        raise SystemExit("--num_train must be >= 2 and --num_test >= 4")
    sys.path.insert(0, ROOT)
    r = run(args.workdir, args.num_train, args.num_test)
    for part in ("seen", "unseen"):
        ca = r[part]["class_accuracy"]
        m = r[part].get("mean_factor_r2", {})
        print(f"{part}: identity accuracy from the relevant code {ca['relevant']:.3f}, from the "
              f"irrelevant code {ca['irrelevant']:.3f} (chance {r[part]['chance']:.3f}); mean "
              f"nuisance R^2 from the irrelevant code {m.get('irrelevant', float('nan')):.3f}, "
              f"from the relevant code {m.get('relevant', float('nan')):.3f}")
    print(f"wrote {args.workdir}/eval/probes_{r['step']}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
