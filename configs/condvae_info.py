"""condvae_info (paper 001, CSVAE's baseline): the presets of configs/csvae.py with method 'condvae_info'.

Same data, networks, latent size (dim Z + k dim W_i), optimizers, loss weights and training
length as CSVAE, so the models are compared at identical compute per step and step count.
"""

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic_glasses"

csvae = configlib.sibling_config(__file__, "csvae.py")


def get_config(preset: str = "celeba_glasses"):
    c = csvae.apply_preset(csvae.family_config("condvae_info"), preset or "celeba_glasses")
    return configlib.keep_keys_the_method_reads(c)
