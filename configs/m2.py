"""M2 (Kingma et al. 2014, report App. A.1): the CCVAE configs (configs/ccvae.py) with
method 'm2'; presets and the ',<fraction>' suffix as there. alpha (loss.classifier_weight)
weighs the auxiliary classifier's log-likelihood on supervised examples (100, set in ccvae.py).
"""

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic,1.0"

ccvae = configlib.sibling_config(__file__, "ccvae.py")

PRESETS = ccvae.PRESETS


def get_config(arg: str = "celeba"):
    return configlib.keep_keys_the_method_reads(ccvae.auxiliary_classifier_config("m2", arg))
