"""VAC (paper 000, Sec. 3): IntroVAC without the introspective adversarial game.

The paper's VAC runs use the same settings as IntroVAC but train for 600 epochs without
learning-rate decay. Presets as in configs/introvac.py; the synthetic preset trains for the
same number of steps as IntroVAC's (identical data, no decay).
"""

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic"

introvac = configlib.sibling_config(__file__, "introvac.py")


def get_config(preset: str = "celeba_eye"):
    c = introvac.introvac_config(introspective=False)
    c = introvac.apply_preset(c, preset or "celeba_eye")
    for player in ("encoder", "classifier", "decoder"):
        c.optim[player].schedule.kind = "constant"
    if preset in (None, "", "celeba_eye", "celeba_facial", "celeba_eyefacial"):
        c.num_epochs = 600.0
    return configlib.keep_keys_the_method_reads(c)
