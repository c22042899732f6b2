"""IFcVAEGAN (paper 003: Creswell, Bharath, Sengupta) configs, shared by the naive cVAEGAN.

`--config=configs/ifcvaegan.py:<data>[,<row>[,<objective>]]`, data one of
  celeba_smiling (default)  CelebA, centre square crop, 64x64, label Smiling, official partition
  celeba_male, celeba_eyeglasses   Sec. 4.3's other attributes
  synthetic_smiling, synthetic_eyeglasses   the embedded synthetic faces at 64x64 (at 32 px the
                            mouth is a few pixels), narrower nets, sized for a 2-core CPU
  tiny                      tests and smoke runs
row one of Table 1's five rows (default `best`):
  best              rho = 0.1, delta = 0.1, alpha = 0.2, beta = 0, with L_aux
  alpha05           the same with alpha = 0.5
  class_hat         best with L_class_hat (beta = 1)
  no_aux            best without L_aux (the naive model at alpha = 0.2)
  no_aux_class_hat  best without L_aux, with L_class_hat
and objective (default `authors`):
  authors     the authors' code's objective, which produced Table 1: their reductions (L_rec
              summed / (H W), KL summed / n_z, the GAN terms batch sums), the non-saturating
              generator, L_class_hat against y reaching only the label head
  pixel_sum   a reading of the paper's formulas: every term a batch mean of per-example sums,
              the saturating generator, L_class_hat against y_hat reaching the decoder (Eq. 9);
              its terms weigh 20-6,000x less against L_rec than the authors' (docs/methods.md)
`configs/cvaegan_naive.py` is Sec. 4.1's naive cVAEGAN (Figure 3; not a row of Table 1:
rho = delta = 0.1, alpha = 1.0, no L_aux, no L_class_hat). Every row has the same data,
networks, optimizers and training length (identical compute per step: the auxiliary network is
trained, with zero weight on the encoder, in the rows without L_aux).
Paper settings: RMSprop lr 2e-4 for every player, the discriminator's "momentum = 0.5" (Sec.
4.1; the authors' RMSprop(alpha=0.5): the squared-gradient decay, no momentum buffer), batch
64, n_z = 200 (the authors' code defaults to 100), about 10 epochs (the naive cVAEGAN 8). Keep
n_z, the image size and the batch size of a preset when comparing with the paper: the authors'
reductions tie the effective KL weight to H W / n_z and the others to H W / B.
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
OBJECTIVES = {
    "authors": dict(reduction="reference", generator="non_saturating", class_hat_target="y",
                    class_hat_grad="head"),
    "pixel_sum": dict(reduction="paper", generator="saturating", class_hat_target="y_hat",
                      class_hat_grad="all"),
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
        # The authors' objective (OBJECTIVES): 'reference' reductions or 'paper' (batch means),
        reduction="reference",
        class_hat_target="y",                # Eq. 6's y_hat (paper) or 'y' (the authors')
        class_hat_grad="head",               # 'all' (Eq. 9: decoder too) or 'head' (authors')
        generator="non_saturating",          # -delta L_gan ('saturating', paper) or authors'
        **ROWS["best"],
    ))
    for player in ("encoder", "decoder", "discriminator", "auxiliary"):
        c.optim[player] = configlib.adam(2e-4)
        c.optim[player].update(dict(name="rmsprop", decay=0.99, eps=1e-8))
    # Sec. 4.1's "momentum = 0.5" is the authors' RMSprop(alpha=0.5): decay, no momentum.
    c.optim.discriminator.decay = 0.5
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.preprocess = "center_crop"
    c.data.labels = ("Smiling",)
    c.eval.table1 = True                     # Table 1's protocol next to the shared one
    c.checkpoint.every_steps = 2000
    c.eval_every_steps = 0
    return c


def apply_preset(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    data, _, rest = (preset or "celeba_smiling").partition(",")
    row, _, objective = rest.partition(",")
    if row in OBJECTIVES and not objective:       # `<data>,<objective>`: the default row
        row, objective = "", row
    row = row or ("naive" if c.method == "cvaegan_naive" else "best")
    objective = objective or "authors"
    if row not in ROWS:
        raise ValueError(f"--config: unknown Table 1 row {row!r}; known: {', '.join(ROWS)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"--config: unknown objective {objective!r}; known: "
                         f"{', '.join(OBJECTIVES)}")
    c.loss.update(OBJECTIVES[objective])
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
        # Narrower convolutions for the 2-core CPU; the paper's n_z (the authors' reductions
        # tie the KL's effective weight to H W / n_z).
        c.model.update(dict(channels=(16, 32, 64, 128), latent_dim=200,
                            auxiliary_hidden=(256, 256)))
        c.num_epochs = 0.0
        c.num_steps = 1500
        c.checkpoint.every_steps = 500
        c.log_every_steps = 25
    elif data == "tiny":
        c = apply_preset(c, f"synthetic_smiling,{row},{objective}")
        configlib.apply_tiny(c)
        c.data.labels = ("Smiling",)
        c.model.update(dict(channels=(8, 16), latent_dim=8, auxiliary_hidden=(16,)))
    else:
        raise ValueError(f"--config: unknown preset {data!r}; known: {', '.join(DATA)}")
    return c


def get_config(preset: str = "celeba_smiling") -> ml_collections.ConfigDict:
    return configlib.keep_keys_the_method_reads(apply_preset(family_config("ifcvaegan"), preset))
