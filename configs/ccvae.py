"""CCVAE (paper 004: reproduction report of Joy et al., ICLR 2021) configs; also the base of
configs/m2.py and configs/diva.py.

`--config=configs/ccvae.py:<preset>[,<fraction>]`, e.g. `configs/ccvae.py:synthetic,0.2`:
  celeba (default)   CelebA 64x64 (resize, no crop), the 18 "easy" labels, z = 18 + 27
  celeba_multi       the same with Hair_MULTI (6 classes) replacing the four hair colours
  synthetic          the embedded synthetic faces at 32x32, all 16 attributes, narrower nets,
                     sized for a 2-core CPU (a fixed number of steps, identical for ccvae, m2,
                     diva)
  synthetic_multi    synthetic with Hair_MULTI replacing Bald and the four hair colours
The supervised fraction f (presets 0.004, 0.06, 0.2, 1.0; any value in (0, 1]) defaults to 0.2;
it is `config.data.semi_supervised.fraction`.
Paper/reference settings: one Adam, lr 1e-4, batch 200, about 200 epochs, K = 100 samples for
q(y|x), Laplace(x_hat, 1) likelihood, one latent dimension per label.
"""

import ml_collections

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic,1.0"

PRESETS = ("celeba", "celeba_multi", "synthetic", "synthetic_multi", "tiny")
FRACTIONS = (0.004, 0.06, 0.2, 1.0)

CELEBA_EASY_LABELS = (
    "Arched_Eyebrows", "Bags_Under_Eyes", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Eyeglasses", "Heavy_Makeup", "Male", "No_Beard", "Pale_Skin",
    "Receding_Hairline", "Smiling", "Wavy_Hair", "Wearing_Necktie", "Young")
HAIR = ("Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


def ccvae_config(method: str = "ccvae") -> ml_collections.ConfigDict:
    c = configlib.base_config()
    c.method = method
    c.batch_size = 200
    c.num_epochs = 200.0
    c.model = ml_collections.ConfigDict(dict(
        compute_dtype="float32",  # or 'bfloat16' (float32 parameters and losses; nets.precision)
        remat=False,  # True: recompute activations in the backward pass (nets.remat)
        label_dims=1,            # latent dimensions of z_c per label
        free_dims=27,            # z_not_c (DIVA: z_x; M2: z has label_dims * n + free_dims)
        channels=(32, 32, 64, 128),
        top=256,
    ))
    c.loss = ml_collections.ConfigDict(dict(
        num_classifier_samples=100,   # K of the q(y|x) estimate (ccvae)
        weighted_kl="sampled",        # ccvae: z_c term inside the weighted supervised bound
        classifier_weight=1.0,        # alpha of M2 / alpha_y of DIVA (not used by ccvae)
    ))
    c.optim.model = configlib.adam(1e-4)
    c.edit = ml_collections.ConfigDict(dict(strength=1.0))
    c.data.name = "celeb_a"
    c.data.image_size = 64
    c.data.preprocess = "resize"
    c.data.labels = CELEBA_EASY_LABELS
    c.data.semi_supervised.fraction = 0.2
    c.data.validation_from_train = 10000   # the reference: the last 10000 training images
    c.checkpoint.every_steps = 2000
    return c


def apply_preset(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
    preset, _, fraction = (arg or "celeba").partition(",")
    if preset == "celeba":
        pass
    elif preset == "celeba_multi":
        c.data.labels = tuple(n for n in CELEBA_EASY_LABELS if n not in HAIR) + ("Hair_MULTI",)
    elif preset in ("synthetic", "synthetic_multi"):
        from latent_jax.data import synthetic_faces

        c.data.name = "synthetic_faces"
        c.data.image_size = 32
        c.data.preprocess = "resize"
        c.data.validation_from_train = 0     # the synthetic faces have their own validation split
        c.data.labels = tuple(synthetic_faces.ATTRIBUTES)
        if preset == "synthetic_multi":
            c.data.labels = tuple(n for n in c.data.labels if n not in HAIR) + ("Hair_MULTI",)
        c.model.channels = (32, 32, 64)
        c.model.top = 128
        c.model.free_dims = 16
        # Sized for a 2-core CPU (a few minutes per run): batch 64 instead of 200 (more updates
        # for the same images), lr 5e-4 instead of 1e-4, 1200 steps (about 4 epochs).
        c.batch_size = 64
        c.num_steps = 1200
        c.optim.model.learning_rate = 5e-4
        c.eval.num_examples = 500
        c.eval.num_samples = 64
        c.checkpoint.every_steps = 500
        c.log_every_steps = 50
    elif preset == "tiny":
        # Tests and smoke runs: 16 px, three binary labels and the categorical Hair_MULTI, half
        # of the training set labelled, tiny nets, 6 steps.
        c = apply_preset(c, "synthetic,0.5")
        configlib.apply_tiny(c)
        c.data.labels = ("Male", "Smiling", "Eyeglasses", "Hair_MULTI")
        c.model.update(dict(channels=(8, 16), top=16, free_dims=3))
        c.loss.num_classifier_samples = 7
    else:
        raise ValueError(f"--config: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if fraction:
        try:
            c.data.semi_supervised.fraction = float(fraction)
        except ValueError:
            raise ValueError(f"--config: fraction {fraction!r} after the preset is not a number "
                             f"(e.g. {FRACTIONS})") from None
    return c


# alpha of M2 and DIVA (loss.classifier_weight): per labelled example and label, on the same
# scale as the summed Laplace log-likelihood.
AUXILIARY_CLASSIFIER_WEIGHT = 100.0


def auxiliary_classifier_config(method: str, arg: str) -> ml_collections.ConfigDict:
    """M2 or adapted DIVA: this file's config and preset for `method`, with alpha set."""
    c = apply_preset(ccvae_config(method), arg)
    c.loss.classifier_weight = AUXILIARY_CLASSIFIER_WEIGHT
    return c


def get_config(arg: str = "celeba") -> ml_collections.ConfigDict:
    return configlib.keep_keys_the_method_reads(apply_preset(ccvae_config("ccvae"), arg))
