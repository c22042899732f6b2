"""vae (paper 001, CSVAE's baseline): the presets of configs/csvae.py with method 'vae'.

Same data, networks, latent size (dim Z + k dim W_i), optimizers, loss weights and training
length as CSVAE, so the models are compared at identical compute per step and step count.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "latent_jax_configs_csvae", pathlib.Path(__file__).with_name("csvae.py"))
csvae = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(csvae)


def get_config(preset: str = "celeba_glasses"):
    return csvae.apply_preset(csvae.family_config("vae"), preset or "celeba_glasses")
