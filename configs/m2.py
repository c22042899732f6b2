"""M2 (Kingma et al. 2014, report App. A.1): the CCVAE configs (configs/ccvae.py) with
method 'm2'; presets and the ',<fraction>' suffix as there. alpha (loss.classifier_weight)
weighs the auxiliary classifier's log-likelihood on supervised examples.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "latent_jax_configs_ccvae", pathlib.Path(__file__).with_name("ccvae.py"))
ccvae = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ccvae)

PRESETS = ccvae.PRESETS
# Per labelled example and label, on the same scale as the summed Laplace log-likelihood.
CLASSIFIER_WEIGHT = 100.0


def get_config(arg: str = "celeba"):
    c = ccvae.apply_preset(ccvae.ccvae_config("m2"), arg)
    c.loss.classifier_weight = CLASSIFIER_WEIGHT
    return c
