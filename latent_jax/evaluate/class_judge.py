"""The class judge: a K-way classifier of one categorical label, trained on real images.

The attribute judge (`judge.py`) has one sigmoid per binary attribute; a categorical label with
many classes (synthetic_identities' `Identity`, CCVAE's `Hair_MULTI`) needs a softmax over its
classes. The class judge is the same network (`judge.JudgeNet`, its settings from
`config.eval.judge`) with a K-way head, trained with the same recipe (Adam with warm-up and
cosine decay, random flips and blur, the first epoch kept in memory and replayed) on a softmax
cross-entropy instead of the balanced BCE, on the whole training split of the dataset's real
images. It gives Lr-LiVAE's Tables 1-2 for categorical classes: the judge score of
class-conditional samples (the Inception Score's formula with this classifier; never called
IS) and how often a sample is judged to show the class it was drawn for.

It is cached like the attribute judge, in the same directory, under a key that adds the label,
its class count and `CLASS_JUDGE_VERSION` to the attribute judge's (tests/test_versions.py
fingerprints this module's recipe as it does the judge's).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latent_jax import interrupt
from latent_jax.evaluate import judge as judge_lib

log = logging.getLogger(__name__)

#: Bump when this recipe changes (tests/test_versions.py holds it to a fingerprint).
CLASS_JUDGE_VERSION = 1


@dataclasses.dataclass
class ClassJudge:
    """A trained K-way judge of `label`. `log_probs` / `predict` take images [N, H, W, C] in
    [0, 1] (any N, evaluated in fixed-size chunks) and return numpy arrays."""

    label: str
    num_classes: int
    module: judge_lib.JudgeNet
    params: Any
    test_accuracy: float
    test_examples: int
    key: str = ""
    train_seconds: float | None = None
    loaded_from_cache: bool = False
    chunk_size: int = 256

    def __post_init__(self):
        self._apply = judge_lib._jitted_apply(self.module)

    def log_probs(self, x) -> np.ndarray:
        """log p(c|x) [N, K]."""
        x = np.asarray(x, np.float32)
        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        chunk = min(self.chunk_size, len(x))
        out = []
        for start in range(0, len(x), chunk):
            interrupt.check()
            part = x[start:start + chunk]
            m = len(part)
            if m < chunk:
                part = np.concatenate([part, np.zeros((chunk - m,) + part.shape[1:], part.dtype)])
            logits, _ = self._apply(self.params, part)
            out.append(np.asarray(jax.nn.log_softmax(logits, axis=-1))[:m])
        return np.concatenate(out)

    def predict(self, x) -> np.ndarray:
        """The most probable class of each image [N] (int)."""
        return np.argmax(self.log_probs(x), axis=-1)

    def summary(self) -> dict:
        return {"label": self.label, "num_classes": self.num_classes, "key": self.key,
                "test_accuracy": self.test_accuracy, "test_examples": self.test_examples,
                "train_seconds": self.train_seconds, "loaded_from_cache": self.loaded_from_cache}


def _cache_attributes(label: str, num_classes: int) -> list[str]:
    """What stands in the attribute judge's attribute list for this judge's cache key."""
    return [f"class_judge/v{CLASS_JUDGE_VERSION}/{label}/{int(num_classes)}"]


def train_class_judge_params(data_cfg, spec, label: str, num_classes: int,
                             settings: Mapping[str, Any], seed: int,
                             progress: Callable[[str], None] | None = None) -> tuple[Any, dict]:
    """Trains the K-way judge; returns (params, metadata with its test accuracy)."""
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel

    say = progress or log.info
    steps, batch_size = int(settings["steps"]), int(settings["batch_size"])
    module = judge_lib.JudgeNet(num_outputs=int(num_classes), width=int(settings["width"]),
                                feature_dim=int(settings["feature_dim"]))
    t0 = time.time()
    names = (label,)
    # Every training example with its labels, whatever the method's supervision.
    data_cfg = data_lib.pipeline.fully_labelled(data_cfg)
    iterator = data_lib.make_train_iterator(data_cfg, global_batch_size=batch_size, seed=seed,
                                            label_names=names, apply_subset=False)
    num_train = len(data_lib.make_source(data_cfg, "train", label_names=names,
                                         apply_subset=False))
    batches = judge_lib._TrainBatches(iterator, num_train, batch_size, steps, spec.image_shape,
                                      float(settings["memory_mb"]), seed)

    def loss_fn(p, x, y):
        logits, _ = module.apply({"params": p}, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.mean(ce), jnp.mean(jnp.argmax(logits, -1) == y)

    say(f"class judge: training a {num_classes}-way judge of {label} on {spec.name} "
        f"({spec.image_shape[0]} px) for {steps} steps of {batch_size}")
    params, _, _ = judge_lib._fit(
        module, loss_fn, batches,
        lambda b: np.round(np.asarray(b["label"])[:, 0]).astype(np.int32), settings, seed,
        spec.image_shape, "class judge")
    train_seconds = time.time() - t0

    judge = ClassJudge(label, int(num_classes), module, params, float("nan"), 0)
    hits, n = 0, 0
    for batch in data_lib.iterate_eval_batches(data_cfg, "test", max(batch_size, 128),
                                               label_names=names, apply_subset=False,
                                               max_examples=settings["test_examples"]):
        mask = np.asarray(batch["mask"], bool)
        truth = np.round(np.asarray(batch["label"])[mask, 0]).astype(np.int64)
        hits += int(np.sum(judge.predict(np.asarray(batch["image"])[mask]) == truth))
        n += int(mask.sum())
    accuracy = hits / max(1, n)
    say(f"class judge: trained in {train_seconds:.0f} s; test accuracy {accuracy:.3f} on {n} "
        f"images (chance {1 / num_classes:.3f})")
    return params, {"test_accuracy": {label: accuracy}, "test_balanced_accuracy": {label: accuracy},
                    "test_examples": n, "train_seconds": train_seconds, "steps": steps}


def get_or_train_class_judge(data_cfg, label: str, judge_cfg=None, rng_seed: int | None = None,
                             *, progress: Callable[[str], None] | None = None) -> ClassJudge:
    """Loads the cached class judge of `label` (a categorical label of the dataset) or trains
    and caches it. `judge_cfg` is `config.eval.judge` (its `attributes` key is ignored)."""
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel
    from latent_jax.data import labels as labels_lib  # pylint: disable=import-outside-toplevel

    cfg = {k: v for k, v in judge_lib._as_dict(judge_cfg).items() if k != "attributes"}
    settings = judge_lib.judge_settings(cfg)
    seed = int(settings["seed"] if rng_seed is None else rng_seed)
    opts = data_lib.options(data_cfg)
    dataset = data_lib.DATASETS[opts.name]
    if labels_lib.label_kind(label) != labels_lib.CATEGORICAL:
        raise ValueError(f"class judge: {label!r} is not a categorical label")
    num_classes = labels_lib.num_classes(label, dataset.categorical(opts))
    spec = data_lib.get_data_spec(opts)
    names = _cache_attributes(label, num_classes)
    key = judge_lib.cache_key(opts, spec, names, settings, seed)
    module = judge_lib.JudgeNet(num_outputs=int(num_classes), width=int(settings["width"]),
                                feature_dim=int(settings["feature_dim"]))
    params, meta, loaded, _ = judge_lib.load_or_train(
        "class judge", settings, key, seed, module, spec.image_shape, [label],
        lambda: train_class_judge_params(opts, spec, label, num_classes, settings, seed,
                                         progress),
        num_classes=int(num_classes), dataset=spec.name)
    return ClassJudge(label, int(num_classes), module, params,
                      float(meta["test_accuracy"][label]), int(meta.get("test_examples", 0)),
                      key=key, train_seconds=meta.get("train_seconds"), loaded_from_cache=loaded)
