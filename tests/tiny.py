"""A tiny IntroVAC configuration shared by the engine tests (16x16 synthetic faces)."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "introvac.py") + ":synthetic"

OVERRIDES = {
    "data.image_size": "16",
    "data.synthetic.num_train": "96",
    "data.synthetic.num_validation": "32",
    "data.synthetic.num_test": "32",
    "data.subset.positives": "()",
    "model.channels": "(8,16)",
    "model.latent_dim": "8",
    "batch_size": "8",
    "num_steps": "12",
    "introspection.pretrain_epochs": "0.34",   # 4 of the 12 steps are VAC pre-training
    "checkpoint.every_steps": "2",
    "checkpoint.max_to_keep": "2",
    "log_every_steps": "1",
    "evaluate_at_end": "False",
    "langevin.num_steps": "5",
    "grid_size": "4",
}


def flags(workdir, **extra):
    overrides = dict(OVERRIDES, **{k: str(v) for k, v in extra.items()})
    return [f"--config={CONFIG}", f"--workdir={workdir}"] + [
        f"--config.{k}={v}" for k, v in overrides.items()]


def config(**extra):
    """The same configuration as a ConfigDict (in-process tests)."""
    import ast
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_introvac_config", CONFIG.split(":")[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("synthetic")
    def parse(v):
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v

    overrides = dict(OVERRIDES, **{k: str(v) for k, v in extra.items()})
    c.update_from_flattened_dict({k: parse(v) for k, v in overrides.items()})
    return c
