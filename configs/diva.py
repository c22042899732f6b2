"""Adapted DIVA (report App. A.3): the CCVAE configs (configs/ccvae.py) with
method 'diva'; presets and the ',<fraction>' suffix as there. alpha (loss.classifier_weight)
weighs the auxiliary classifier's log-likelihood on supervised examples.
"""

from latent_jax import configlib

ccvae = configlib.sibling_config(__file__, "ccvae.py")

PRESETS = ccvae.PRESETS
# Per labelled example and label, on the same scale as the summed Laplace log-likelihood.
CLASSIFIER_WEIGHT = 100.0


def get_config(arg: str = "celeba"):
    c = ccvae.apply_preset(ccvae.ccvae_config("diva"), arg)
    c.loss.classifier_weight = CLASSIFIER_WEIGHT
    return c
