"""IFcVAEGAN (paper 003: Creswell, Bharath, Sengupta) configs, shared by the naive cVAEGAN.

`--config=configs/ifcvaegan.py:<data>[,<row>]`, data one of
  celeba_smiling (default)  CelebA, centre square crop, 64x64, label Smiling, official partition
  celeba_male, celeba_eyeglasses   Sec. 4.3's other attributes
  synthetic_smiling, synthetic_eyeglasses   the embedded synthetic faces at 64x64 (at 32 px the
                            mouth is a few pixels), narrower nets, sized for a 2-core CPU
  tiny                      tests and smoke runs
and row one of Table 1's rows (default `best`):
  best              rho = 0.1, delta = 0.1, alpha = 0.2, beta = 0, with L_aux
  alpha05           the same with alpha = 0.5
  class_hat         best with L_class_hat (beta = 1)
  no_aux            best without L_aux
  no_aux_class_hat  best without L_aux, with L_class_hat
`configs/cvaegan_naive.py` is the sixth row (rho = delta = 0.1, alpha = 1.0, no L_aux, no
L_class_hat). Every row has the same data, networks, optimizers and training length (identical
compute per step: the auxiliary network is trained, with zero weight on the encoder, in the
rows without L_aux).
Paper settings: RMSprop lr 2e-4 for every player, the discriminator with momentum 0.5
(Sec. 4.1), batch 64, n_z = 200, about 10 epochs (the naive cVAEGAN 8).
"""

import ml_collections

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic_eyeglasses"

DATA = ("celeba_smiling", "celeba_male", "celeba_eyeglasses", "synthetic_smiling",
        "synthetic_eyeglasses", "tiny")
ROWS = {
    "best": dict(rho=0.1, delta=0.1, alpha=0.2, beta=0.0, aux=1.0),
    "alpha05": dict(rho=0.1, delta=0.1, alpha=0.5, beta=0.0, aux=1.0),
    "class_hat": dict(rho=0.1, delta=0.1, alpha=0.2, beta=1.0, aux=1.0),
    "no_aux": dict(rho=0.1, delta=0.1, alpha=0.2, beta=0.0, aux=0.0),
    "no_aux_class_hat": dict(rho=0.1, delta=0.1, alpha=0.2, beta=1.0, aux=0.0),
    "naive": dict(rho=0.1, delta=0.1, alpha=1.0, beta=0.0, aux=0.0),
}


def family_config(method: str = "ifcvaegan") -> ml_collections.ConfigDict:
    c = configlib.base_config()
    c.method = method
    c.batch_size = 64
    c.num_epochs = 10.0
    c.model = ml_collections.ConfigDict(dict(
        compute_dtype="float32",  # or 'bfloat16' (float32 parameters and losses; nets.precision)
        remat=False,  # True: recompute activations in the backward pass (nets.remat)
        latent_dim=200,                      # n_z (paper; the reference code uses 100)
        channels=(64, 128, 256, 512),        # conv5x5/2 per entry (reference)
        auxiliary_hidden=(1000, 1000),       # A_psi (reference)
    ))
    c.loss = ml_collections.ConfigDict(dict(
        reduction="paper",                   # means (paper) or 'reference' (sums, see module)
        class_hat_target="y_hat",            # Eq. 6 (paper) or 'y' (reference)
        generator="saturating",              # -delta L_gan (paper) or 'non_saturating'
        **ROWS["best"],
    ))
    for player in ("encoder", "decoder", "discriminator", "auxiliary"):
        c.optim[player] = configlib.adam(2e-4)
        c.optim[player].update(dict(name="rmsprop", decay=0.99, eps=1e-8))
    c.optim.discriminator.momentum = 0.5     # Sec. 4.1: "momentum = 0.5"
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.preprocess = "center_crop"
    c.data.labels = ("Smiling",)
    c.eval.table1 = True                     # Table 1's protocol next to the shared one
    c.checkpoint.every_steps = 2000
    c.eval_every_steps = 0
    return c


def apply_preset(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    data, _, row = (preset or "celeba_smiling").partition(",")
    row = row or ("naive" if c.method == "cvaegan_naive" else "best")
    if row not in ROWS:
        raise ValueError(f"--config: unknown Table 1 row {row!r}; known: {', '.join(ROWS)}")
    if (row == "naive") != (c.method == "cvaegan_naive"):
        raise ValueError("--config: the 'naive' row is configs/cvaegan_naive.py, and that "
                         "config has no other row")
    c.loss.update(ROWS[row])
    if data == "celeba_smiling":
        pass
    elif data in ("celeba_male", "celeba_eyeglasses"):
        c.data.labels = ({"celeba_male": "Male", "celeba_eyeglasses": "Eyeglasses"}[data],)
    elif data in ("synthetic_smiling", "synthetic_eyeglasses"):
        c.data.name = "synthetic_faces"
        c.data.preprocess = "resize"
        c.data.labels = ("Smiling",) if data == "synthetic_smiling" else ("Eyeglasses",)
        c.model.update(dict(channels=(16, 32, 64, 128), latent_dim=64,
                            auxiliary_hidden=(256, 256)))
        c.num_epochs = 0.0
        c.num_steps = 1500
        c.checkpoint.every_steps = 500
        c.log_every_steps = 25
    elif data == "tiny":
        c = apply_preset(c, "synthetic_smiling," + row)
        configlib.apply_tiny(c)
        c.data.labels = ("Smiling",)
        c.model.update(dict(channels=(8, 16), latent_dim=8, auxiliary_hidden=(16,)))
    else:
        raise ValueError(f"--config: unknown preset {data!r}; known: {', '.join(DATA)}")
    return c


def get_config(preset: str = "celeba_smiling") -> ml_collections.ConfigDict:
    return apply_preset(family_config("ifcvaegan"), preset)
