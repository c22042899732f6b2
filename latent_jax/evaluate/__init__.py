"""Evaluation shared by every method: an independent judge classifier, metrics computed through the
methods' capability functions, and JSON/Markdown reports.

- `judge`: `get_or_train_judge(data_cfg, judge_cfg, rng_seed) -> Judge` (cached per dataset).
- `metrics`: reconstruction, Fréchet distance in judge-feature space, edit success/preservation,
  conditional sampling, the method's own classifier.
- `report`: `run_evaluation(method, states, config, workdir, step, rng)` and
  `default_eval_config()`.
"""

from latent_jax.evaluate.judge import Judge, get_or_train_judge
from latent_jax.evaluate.metrics import frechet_distance, frechet_distance_from_features
from latent_jax.evaluate.report import default_eval_config, run_evaluation

__all__ = [
    "Judge",
    "get_or_train_judge",
    "frechet_distance",
    "frechet_distance_from_features",
    "default_eval_config",
    "run_evaluation",
]
