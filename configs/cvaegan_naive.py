"""cvaegan_naive (paper 003, Sec. 4.1 and Table 1's first row): the presets of
configs/ifcvaegan.py with method 'cvaegan_naive' and its weights (rho = delta = 0.1,
alpha = 1.0, no L_aux, no L_class_hat).

Same data, networks (less the auxiliary network), optimizers and training length as the
IFcVAEGAN rows. `--config=configs/cvaegan_naive.py:<data>`.
"""

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic_eyeglasses"

ifcvaegan = configlib.sibling_config(__file__, "ifcvaegan.py")


def get_config(preset: str = "celeba_smiling"):
    return ifcvaegan.apply_preset(ifcvaegan.family_config("cvaegan_naive"), preset)
