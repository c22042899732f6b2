"""cvaegan_naive (paper 003, Sec. 4.1 and Figure 3; not a row of Table 1, whose "W/Out L_aux"
row is the naive model at alpha = 0.2): the presets of configs/ifcvaegan.py with method
'cvaegan_naive' and its weights (rho = delta = 0.1, alpha = 1.0, no L_aux, no L_class_hat).

Same data, networks (less the auxiliary network), optimizers, objective and training length as
the IFcVAEGAN rows. `--config=configs/cvaegan_naive.py:<data>[,<objective>]` (objective
`authors`, the default, or `pixel_sum`: configs/ifcvaegan.py).

The authors' naive script differs: a 2-way softmax label head with a one-hot label into the
decoder, its class loss an NLL on probabilities (-mean p_y, a bug), and alpha 1e-3 by default;
here the IFcVAEGAN networks (a sigmoid head, BCE) keep the comparison with IFcVAEGAN controlled.
"""

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic_eyeglasses"

ifcvaegan = configlib.sibling_config(__file__, "ifcvaegan.py")


def get_config(preset: str = "celeba_smiling"):
    c = ifcvaegan.apply_preset(ifcvaegan.family_config("cvaegan_naive"), preset)
    return configlib.keep_keys_the_method_reads(c)
