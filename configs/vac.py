"""VAC (paper 000, Sec. 3): IntroVAC without the introspective adversarial game.

The paper's VAC runs use the same settings as IntroVAC but train for 600 epochs without
learning-rate decay. Presets as in configs/introvac.py; the synthetic preset trains for the
same number of steps as IntroVAC's (identical data, no decay).
"""

import importlib.util
import pathlib

# Load the sibling configs/introvac.py (config files are loaded by path, not as a package).
_spec = importlib.util.spec_from_file_location(
    "latent_jax_configs_introvac", pathlib.Path(__file__).with_name("introvac.py"))
introvac = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(introvac)


def get_config(preset: str = "celeba_eye"):
    c = introvac.introvac_config(introspective=False)
    c = introvac.apply_preset(c, preset or "celeba_eye")
    for player in ("encoder", "classifier", "decoder"):
        c.optim[player].schedule.kind = "constant"
    if preset in (None, "", "celeba_eye", "celeba_facial", "celeba_eyefacial"):
        c.num_epochs = 600.0
    return c
