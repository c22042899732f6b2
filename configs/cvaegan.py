"""cvaegan (paper 002, Lr-LiVAE's baseline): the presets of configs/lrlivae.py with method 'cvaegan',
less those that change only what it does not read (MEANINGLESS below).

Same data, networks (encoder and decoder trunks; cvaegan's discriminator and classifier have the
width of Lr-LiVAE's discriminator), total latent size (z_s_dim + z_u_dim), optimizers and
training length as Lr-LiVAE. See latent_jax/methods/cvaegan.py for the losses.
"""

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic"

lrlivae = configlib.sibling_config(__file__, "lrlivae.py")


# Lr-LiVAE presets that change only what cvaegan does not read (the pixel discriminator, the
# adversarial loss, the reference code's Lr-LiVAE weights and batch reuse): under this method
# they would train the plain preset's model under another name.
MEANINGLESS = ("synthetic_reference", "synthetic_nogan", "identities_reference",
               "identities_hinge", "identities_nogan")


def get_config(preset: str = "synthetic"):
    if preset in MEANINGLESS:
        raise ValueError(f"--config: preset {preset!r} changes only Lr-LiVAE settings that "
                         f"cvaegan does not read; use {preset.split('_')[0]!r}")
    c = lrlivae.apply_preset(lrlivae.family_config("cvaegan"), preset or "synthetic")
    return configlib.keep_keys_the_method_reads(c)
