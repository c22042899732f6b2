"""The judge: an independent attribute classifier that scores every method the same way.

The judge is a small convolutional network trained on the dataset's *real* training images
(the whole training split, `apply_subset=False`, every image with its labels even when the
method's run is semi-supervised: `pipeline.fully_labelled`), one logit per attribute, for
every attribute the dataset provides by default (`DataSpec.attribute_names`, derived labels
such as FacialHair included). It never sees a method's outputs during training, so edit success, preservation and
conditional-sample correctness measured with it are comparable across methods. Its penultimate
features (`Judge.features`) are the embedding of the Fréchet distances in
`latent_jax.evaluate.metrics` (a Fréchet distance in *judge* feature space, not Inception FID).

Architecture (`JudgeNet`): a stride-2 3x3 conv, then stride-2 3x3 convs until the feature map is
4x4 (32 px: three convs; 64 px: four), each with GroupNorm and ReLU, channels `width`, 2*width,
4*width (capped at 4*width); the flattened map goes through a Dense layer of `feature_dim` units
(the features, taken *before* their ReLU) and a linear head. Pixels are mapped to [-1, 1].
GroupNorm rather than BatchNorm: no running statistics, identical behaviour in training and
evaluation.

Training: Adam with a warm-up + cosine schedule for `steps` steps of `batch_size` images; a
per-attribute class-balanced BCE (positives weighted 1/(2p), negatives 1/(2(1-p)), p the positive
rate estimated from the first training batches, clipped to [0.01, 0.99]) so rare attributes are
not ignored; random horizontal flips and random blur as augmentation (reconstructions and samples
are blurrier than real images; attributes are invariant to both). Batches come from the data
pipeline's training iterator over the whole split; when more than one epoch is needed and the
split fits in `memory_mb` (as uint8), later epochs are reshuffled from the first epoch's images
kept in memory rather than read (or rendered) again.

Cache: trained judges are cached per dataset under `judge_cfg.cache_dir`, by default
`$LATENT_JAX_CACHE/judges` with `LATENT_JAX_CACHE` defaulting to `~/.cache/latent_jax`. The file
name is a hash of everything that determines the trained weights: the dataset (name, content
version where it has one, image size, preprocessing, synthetic seed and sizes or the data
directory), the attribute list, the judge
settings (cache_dir excepted), the seed and `JUDGE_VERSION`. One file `<key>.msgpack` holds the
parameters and the metadata (test accuracy per attribute...), written to a temporary name and
renamed, so an interrupted write never leaves a half cache; an unreadable or mismatching cache
file is reported and the judge retrained. A readable `<key>.json` next to it repeats the metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from etils import epath
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from latent_jax.data.pipeline import DataOptions
from latent_jax.errors import ConfigError
from latent_jax import interrupt
from latent_jax import paths

log = logging.getLogger(__name__)

#: Bump when the architecture, the training recipe or the cache format changes: old caches are
#: then simply not found. tests/test_versions.py fingerprints the recipe's code and fails until
#: a changed recipe has its own version.
JUDGE_VERSION = 2
# 2: trained on fully labelled data (`pipeline.fully_labelled`). Version 1 trained on the
#    run's own stream, so a semi-supervised run's judge saw its unsupervised batches' zeroed
#    labels (and the cache key, which ignores the supervision, shared it with other runs).

_CACHE_FORMAT = 1

#: Judge settings and their defaults (`config.eval.judge`).
JUDGE_DEFAULTS: dict[str, Any] = dict(
    steps=2500,            # Adam steps
    batch_size=64,
    learning_rate=2e-3,    # peak of the warm-up + cosine schedule
    width=32,              # channels of the first conv; doubled per level up to 4x
    feature_dim=128,       # penultimate (Fréchet) feature size
    balanced=True,         # class-balanced BCE per attribute
    augment=True,          # random horizontal flip + random blur
    test_examples=2000,    # test images used to measure the judge's accuracy (None: all)
    memory_mb=1024,        # replay epochs after the first from memory if the split fits (uint8)
    cache_dir=None,        # None: $LATENT_JAX_CACHE/judges (~/.cache/latent_jax/judges)
    seed=0,
)

#: Data-config keys that do not change the images or attributes the judge is trained on.
_DATA_KEYS_IGNORED = frozenset({
    "labels", "subset", "subset_seed",                     # the judge reads the whole split
    "semi_supervised",                                     # ... with every label
    "num_workers", "read_threads", "prefetch", "cache_dir",  # how, not what, data is read
    "memory_mb",
})


# --------------------------------------------------------------------------------- network
class JudgeNet(nn.Module):
    """Small CNN attribute classifier; `__call__` returns (logits, features)."""

    num_outputs: int
    width: int = 32
    feature_dim: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.astype(jnp.float32) * 2.0 - 1.0
        level = 0
        while True:
            channels = self.width * min(2 ** level, 4)
            h = nn.Conv(channels, (3, 3), strides=2, padding="SAME", name=f"conv{level}")(h)
            h = nn.GroupNorm(num_groups=min(8, channels), name=f"norm{level}")(h)
            h = nn.relu(h)
            level += 1
            if min(h.shape[1], h.shape[2]) <= 4:
                break
        h = h.reshape(h.shape[0], -1)
        features = nn.Dense(self.feature_dim, name="features")(h)
        logits = nn.Dense(self.num_outputs, name="head")(nn.relu(features))
        return logits, features


# --------------------------------------------------------------------------------- settings
def _as_dict(cfg) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, DataOptions):   # a validated config.data: the config it was given
        return dict(cfg.config)
    if isinstance(cfg, ml_collections.ConfigDict):
        return cfg.to_dict()
    return dict(cfg)


def judge_settings(judge_cfg) -> dict[str, Any]:
    """The judge config with every default filled in (unknown keys are an error)."""
    given = _as_dict(judge_cfg)
    unknown = sorted(set(given) - set(JUDGE_DEFAULTS))
    if unknown:
        raise ConfigError(f"config.eval.judge: unknown key(s) {unknown}; "
                         f"known: {sorted(JUDGE_DEFAULTS)}")
    settings = dict(JUDGE_DEFAULTS)
    nullable = ("cache_dir", "test_examples")
    settings.update({k: v for k, v in given.items() if v is not None or k in nullable})
    for key in ("steps", "batch_size", "width", "feature_dim"):
        if int(settings[key]) <= 0:
            raise ConfigError(f"config.eval.judge.{key} must be positive, got {settings[key]!r}")
    if float(settings["learning_rate"]) <= 0:
        raise ConfigError("config.eval.judge.learning_rate must be positive, "
                         f"got {settings['learning_rate']!r}")
    return settings


def default_cache_dir() -> str:
    """`$LATENT_JAX_CACHE/judges`, with `LATENT_JAX_CACHE` defaulting to ~/.cache/latent_jax."""
    root = os.environ.get("LATENT_JAX_CACHE") or "~/.cache/latent_jax"
    return str(paths.resolve(root if paths.is_remote(root) else epath.Path(root).expanduser())
               / "judges")


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def data_identity(data_cfg, spec) -> dict:
    """The part of the data config that determines the judge's training images and labels."""
    cfg = {k: v for k, v in _as_dict(data_cfg).items() if k not in _DATA_KEYS_IGNORED}
    if not cfg.get("validation_from_train"):   # the default: keys of older caches stay valid
        cfg.pop("validation_from_train", None)
    ident = dict(cfg, _name=spec.name, _image_shape=list(spec.image_shape))
    if spec.version:   # a dataset without a version keeps its older keys
        ident["_version"] = spec.version
    return _jsonable(ident)


def cache_key(data_cfg, spec, attribute_names: Sequence[str], settings: Mapping[str, Any],
              seed: int) -> str:
    """Hash of the dataset identity, the attribute list, the judge settings and the seed."""
    ident = {
        "version": JUDGE_VERSION,
        "data": data_identity(data_cfg, spec),
        "attributes": list(attribute_names),
        "judge": _jsonable({k: v for k, v in settings.items() if k not in ("cache_dir", "seed")}),
        "seed": int(seed),
    }
    blob = json.dumps(ident, sort_keys=True).encode()
    return f"{spec.name}-{spec.image_shape[0]}px-{hashlib.sha256(blob).hexdigest()[:20]}"


# --------------------------------------------------------------------------------- the judge
@functools.lru_cache(maxsize=8)
def _jitted_apply(module):
    """The judge network's jitted forward pass, one per (hashable, equal-by-fields) module: a
    judge loaded again for the next evaluation of the same run does not compile again."""
    return jax.jit(lambda params, x: module.apply({"params": params}, x))


@dataclasses.dataclass
class Judge:
    """A trained judge. `logits`, `features` and `predict` take host or device images
    `[N, H, W, C]` in [0, 1], any N (evaluated in fixed-size chunks), and return numpy arrays."""

    attribute_names: tuple[str, ...]
    module: JudgeNet
    params: Any
    test_accuracy: dict[str, float]
    test_balanced_accuracy: dict[str, float]
    test_positive_rate: dict[str, float]
    test_predicted_positive_rate: dict[str, float]
    key: str = ""
    cache_path: str | None = None
    train_seconds: float | None = None
    loaded_from_cache: bool = False
    chunk_size: int = 256

    def __post_init__(self):
        self._apply = _jitted_apply(self.module)

    # pure function, usable inside other jitted code
    def apply(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.module.apply({"params": params}, x)

    def _run(self, x) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            return (np.zeros((0, len(self.attribute_names)), np.float32),
                    np.zeros((0, self.module.feature_dim), np.float32))
        chunk = min(self.chunk_size, n)
        logits, feats = [], []
        for start in range(0, n, chunk):
            interrupt.check()
            part = x[start:start + chunk]
            m = part.shape[0]
            if m < chunk:  # pad to the compiled shape
                part = np.concatenate([part, np.zeros((chunk - m,) + part.shape[1:], part.dtype)])
            lg, ft = self._apply(self.params, part)
            logits.append(np.asarray(lg)[:m])
            feats.append(np.asarray(ft)[:m])
        return np.concatenate(logits), np.concatenate(feats)

    def logits(self, x) -> np.ndarray:
        """Attribute logits [N, n_attributes]."""
        return self._run(x)[0]

    def features(self, x) -> np.ndarray:
        """Penultimate features [N, feature_dim] (the Fréchet-distance embedding)."""
        return self._run(x)[1]

    def logits_and_features(self, x) -> tuple[np.ndarray, np.ndarray]:
        return self._run(x)

    def predict(self, x) -> np.ndarray:
        """Boolean attribute predictions [N, n_attributes] (logit > 0)."""
        return self.logits(x) > 0

    def index(self, name: str) -> int:
        return self.attribute_names.index(name)

    def summary(self) -> dict:
        """Judge metadata for reports."""
        return {
            "key": self.key,
            "attribute_names": list(self.attribute_names),
            "test_accuracy": dict(self.test_accuracy),
            "test_balanced_accuracy": dict(self.test_balanced_accuracy),
            "test_positive_rate": dict(self.test_positive_rate),
            "test_predicted_positive_rate": dict(self.test_predicted_positive_rate),
            "mean_test_accuracy": _mean(self.test_accuracy.values()),
            "mean_test_balanced_accuracy": _mean(self.test_balanced_accuracy.values()),
            "train_seconds": self.train_seconds,
            "loaded_from_cache": self.loaded_from_cache,
        }


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


# --------------------------------------------------------------------------------- training
def _blur(x: jax.Array) -> jax.Array:
    """3x3 binomial blur with edge padding."""
    k = jnp.array([1.0, 2.0, 1.0]) / 4.0
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h = k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]
    return k[0] * h[:, :, :-2] + k[1] * h[:, :, 1:-1] + k[2] * h[:, :, 2:]


def _augment(rng: jax.Array, x: jax.Array) -> jax.Array:
    flip_rng, blur_rng, amount_rng = jax.random.split(rng, 3)
    b = x.shape[0]
    flip = jax.random.bernoulli(flip_rng, 0.5, (b, 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1], x)
    # blur half of the batch by a random amount (one or two blur passes, mixed)
    blurred = _blur(x)
    blurred2 = _blur(blurred)
    amount = jax.random.uniform(amount_rng, (b, 1, 1, 1), maxval=2.0)
    amount = amount * jax.random.bernoulli(blur_rng, 0.5, (b, 1, 1, 1))
    mixed = jnp.where(amount < 1.0, x + amount * (blurred - x),
                      blurred + (amount - 1.0) * (blurred2 - blurred))
    return mixed


class _Exhausted:
    def __next__(self):
        raise RuntimeError("judge: the training iterator was closed")


class _TrainBatches:
    """Training batches from the data pipeline's iterator.

    When more than one epoch is needed and the (un-subsetted) training split fits in
    `memory_mb` as uint8, the first epoch's batches are kept and later epochs are reshuffled from
    memory (seeded), instead of reading or rendering every image again."""

    def __init__(self, iterator, num_train: int, batch_size: int, steps: int, image_shape,
                 memory_mb: float, seed: int):
        self._it = iterator
        self._batch_size = batch_size
        self._epoch_batches = num_train // batch_size
        nbytes = num_train * int(np.prod(image_shape))
        self._keep = (steps > self._epoch_batches > 0 and nbytes <= memory_mb * 2 ** 20)
        self._pending: list[dict] = []
        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._read = 0
        self._rng = np.random.default_rng(seed)
        self._order = np.zeros((0,), np.int64)

    def _read_batch(self) -> dict:
        batch = next(self._it)
        x = np.asarray(batch["image"], np.float32)
        y = np.asarray(batch["label"], np.float32)
        self._read += 1
        if self._keep and self._read <= self._epoch_batches:
            self._images.append(np.round(x * 255.0).astype(np.uint8))
            self._labels.append(y)
            if self._read == self._epoch_batches:  # the whole split is in memory now
                self._images = np.concatenate(self._images)
                self._labels = np.concatenate(self._labels)
                self.close()
        return {"image": x, "label": y}

    def peek(self, n: int) -> list[dict]:
        while len(self._pending) < n:
            self._pending.append(self._produce())
        return self._pending[:n]

    def next(self) -> dict:
        if self._pending:
            return self._pending.pop(0)
        return self._produce()

    def _produce(self) -> dict:
        """The next batch: from the pipeline until the split is in memory, then replayed."""
        if not (self._keep and self._read >= self._epoch_batches):
            return self._read_batch()
        if len(self._order) < self._batch_size:
            self._order = self._rng.permutation(len(self._images))
        idx, self._order = self._order[:self._batch_size], self._order[self._batch_size:]
        return {"image": self._images[idx].astype(np.float32) / 255.0, "label": self._labels[idx]}

    def close(self) -> None:
        close, self._it = getattr(self._it, "close", None), _Exhausted()
        if callable(close):
            close()

    def describe(self) -> str:
        if self._keep:
            return "first epoch read, later epochs replayed from memory"
        return "every batch read from the pipeline"


def _balanced_weights(labels: np.ndarray, balanced: bool) -> tuple[np.ndarray, np.ndarray]:
    n_attr = labels.shape[1]
    if not balanced:
        return np.ones(n_attr, np.float32), np.ones(n_attr, np.float32)
    p = np.clip(labels.mean(axis=0), 0.01, 0.99)
    return (0.5 / p).astype(np.float32), (0.5 / (1.0 - p)).astype(np.float32)


def _fit(module, loss_fn, batches, targets, settings: Mapping[str, Any], seed: int, image_shape,
         desc: str):
    """The judges' optimisation: Adam with a warm-up + cosine schedule over `settings['steps']`
    steps of `batches` (augmented when `settings['augment']`), minimising
    `loss_fn(params, x, targets(batch)) -> (loss, accuracy)` from `module`'s initialisation with
    `seed`. Returns (params, last loss, last accuracy); shared by the attribute judge and the
    class judge (class_judge.py)."""
    from latent_jax import logging as lj_logging  # pylint: disable=import-outside-toplevel

    steps = int(settings["steps"])
    augment = bool(settings["augment"])
    lr = float(settings["learning_rate"])
    warmup = max(1, min(100, steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1),
                                                  end_value=lr * 0.02)
    tx = optax.adam(schedule)
    rng = jax.random.PRNGKey(seed)
    init_rng, rng = jax.random.split(rng)
    params = module.init(init_rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32))["params"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(p, o, x, y, step_rng):
        if augment:
            x = _augment(step_rng, x)
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss, acc

    bar = lj_logging.ProgressBar(steps, desc=desc, enabled=jax.process_index() == 0)
    loss = acc = float("nan")
    for step in range(steps):
        batch = batches.next()
        params, opt_state, loss, acc = train_step(params, opt_state, batch["image"],
                                                  targets(batch), jax.random.fold_in(rng, step))
        bar.update(step + 1, {"loss": loss, "batch_accuracy": acc})
    bar.close()
    batches.close()
    jax.block_until_ready(params)
    return params, loss, acc


def train_judge_params(data_cfg, spec, attribute_names: Sequence[str], settings: Mapping[str, Any],
                       seed: int, progress: Callable[[str], None] | None = None) -> tuple[Any, dict]:
    """Trains a judge; returns (params, metadata with the test metrics and training time)."""
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel

    say = progress or log.info
    attribute_names = tuple(attribute_names)
    n_attr = len(attribute_names)
    steps = int(settings["steps"])
    batch_size = int(settings["batch_size"])
    module = JudgeNet(num_outputs=n_attr, width=int(settings["width"]),
                      feature_dim=int(settings["feature_dim"]))
    t0 = time.time()
    # Every training example with its labels, whatever the method's supervision.
    data_cfg = data_lib.pipeline.fully_labelled(data_cfg)
    iterator = data_lib.make_train_iterator(data_cfg, global_batch_size=batch_size, seed=seed,
                                            label_names=attribute_names, apply_subset=False)
    num_train = len(data_lib.make_source(data_cfg, "train", label_names=attribute_names,
                                         apply_subset=False))
    batches = _TrainBatches(iterator, num_train, batch_size, steps, spec.image_shape,
                            float(settings["memory_mb"]), seed)
    # Positive rates for the balanced loss from the first batches (they are trained on too).
    labels0 = np.concatenate([b["label"] for b in batches.peek(min(steps, 16))])
    if labels0.shape[1] != n_attr:
        raise ValueError(f"judge: expected {n_attr} attribute columns, got {labels0.shape[1]}")
    if np.any((labels0 != 0) & (labels0 != 1)):
        raise ValueError("judge: attributes must be binary (0/1); use config.eval.judge "
                         "attributes that are binary")
    w_pos, w_neg = _balanced_weights(labels0, bool(settings["balanced"]))
    w_pos_j, w_neg_j = jnp.asarray(w_pos), jnp.asarray(w_neg)

    def loss_fn(p, x, y):
        logits, _ = module.apply({"params": p}, x)
        bce = optax.sigmoid_binary_cross_entropy(logits, y)
        weights = y * w_pos_j + (1.0 - y) * w_neg_j
        acc = jnp.mean((logits > 0) == (y > 0.5))
        return jnp.mean(weights * bce), acc

    say(f"judge: training on {spec.name} ({spec.image_shape[0]} px) for {steps} steps of "
        f"{batch_size}, {n_attr} attributes")
    t_train = time.time()
    params, loss, acc = _fit(module, loss_fn, batches, lambda b: b["label"], settings, seed,
                             spec.image_shape, "judge")
    say(f"judge: {steps} steps in {time.time() - t_train:.1f} s ({batches.describe()}), last "
        f"batch loss {float(loss):.4f}, accuracy {float(acc):.3f}")
    train_seconds = time.time() - t0

    judge = Judge(attribute_names, module, params, {}, {}, {}, {})
    test = measure_accuracy(judge, data_cfg, attribute_names,
                            max_examples=settings["test_examples"],
                            batch_size=max(batch_size, 128))
    meta = dict(test, train_seconds=train_seconds, steps=steps)
    say(f"judge: trained in {train_seconds:.0f} s; test accuracy "
        f"{_mean(test['test_accuracy'].values()):.3f}, balanced "
        f"{_mean(test['test_balanced_accuracy'].values()):.3f} on {test['test_examples']} images")
    return params, meta


def accuracy_table(pred: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict:
    """Per-attribute accuracy, balanced accuracy and positive rates of boolean predictions."""
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth) > 0.5
    acc, bal, pos, ppos = {}, {}, {}, {}
    for j, name in enumerate(names):
        p, t = pred[:, j], truth[:, j]
        acc[name] = float(np.mean(p == t)) if len(t) else float("nan")
        rates = []
        if t.any():
            rates.append(float(np.mean(p[t])))
        if (~t).any():
            rates.append(float(np.mean(~p[~t])))
        bal[name] = float(np.mean(rates)) if rates else float("nan")
        pos[name] = float(np.mean(t)) if len(t) else float("nan")
        ppos[name] = float(np.mean(p)) if len(p) else float("nan")
    return {"accuracy": acc, "balanced_accuracy": bal, "positive_rate": pos,
            "predicted_positive_rate": ppos}


def measure_accuracy(judge: Judge, data_cfg, attribute_names: Sequence[str],
                     max_examples: int | None, batch_size: int) -> dict:
    """The judge's accuracy on the (whole, un-subsetted) test split."""
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel

    preds, truths = [], []
    for batch in data_lib.iterate_eval_batches(data_cfg, "test", batch_size,
                                               label_names=tuple(attribute_names),
                                               apply_subset=False, max_examples=max_examples):
        mask = np.asarray(batch["mask"], bool)
        preds.append(judge.predict(np.asarray(batch["image"])[mask]))
        truths.append(np.asarray(batch["label"])[mask])
    pred = np.concatenate(preds) if preds else np.zeros((0, len(attribute_names)), bool)
    truth = np.concatenate(truths) if truths else np.zeros((0, len(attribute_names)))
    table = accuracy_table(pred, truth, attribute_names)
    return {"test_accuracy": table["accuracy"],
            "test_balanced_accuracy": table["balanced_accuracy"],
            "test_positive_rate": table["positive_rate"],
            "test_predicted_positive_rate": table["predicted_positive_rate"],
            "test_examples": int(pred.shape[0])}


# --------------------------------------------------------------------------------- cache
def _atomic_write(path, payload: bytes) -> None:
    """Temporary file, then rename (etils.epath: local or gs:// caches)."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        tmp.write_bytes(payload)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_judge_cache(path: str, params, meta: Mapping[str, Any]) -> None:
    """Writes params + metadata atomically (temporary file, then rename)."""
    state = {"format": _CACHE_FORMAT,
             "meta_json": json.dumps(_jsonable(meta)),
             "params": flax.serialization.to_state_dict(jax.device_get(params))}
    _atomic_write(path, flax.serialization.msgpack_serialize(state))
    _atomic_write(epath.Path(path).with_suffix(".json"),
                  json.dumps(_jsonable(meta), indent=2).encode())


def load_judge_cache(path: str, template_params, expected_key: str,
                     attribute_names: Sequence[str]) -> tuple[Any, dict]:
    """Reads a cache file; raises on anything missing, corrupt or not matching."""
    state = flax.serialization.msgpack_restore(epath.Path(path).read_bytes())
    if not isinstance(state, dict) or state.get("format") != _CACHE_FORMAT:
        raise ValueError("unknown cache format")
    meta = json.loads(state["meta_json"])
    if meta.get("key") != expected_key:
        raise ValueError(f"cache key mismatch ({meta.get('key')!r})")
    if list(meta.get("attribute_names", [])) != list(attribute_names):
        raise ValueError("attribute list mismatch")
    params = flax.serialization.from_state_dict(template_params, state["params"])
    bad = [jax.tree_util.keystr(k) for k, (a, b) in
           _zip_leaves(template_params, params) if np.shape(a) != np.shape(b)]
    if bad:
        raise ValueError(f"parameter shapes differ at {bad[:3]}")
    for k in ("test_accuracy", "test_balanced_accuracy"):
        if set(meta[k]) != set(attribute_names):
            raise ValueError(f"{k} does not cover the attributes")
    params = jax.tree.map(jnp.asarray, params)
    return params, meta


def _zip_leaves(a, b):
    la = jax.tree_util.tree_flatten_with_path(a)[0]
    lb = jax.tree.leaves(b)
    if len(la) != len(lb):
        raise ValueError("parameter tree structure differs")
    return [(path, (x, y)) for (path, x), y in zip(la, lb)]


def _binary_attributes(names: Sequence[str]) -> tuple[str, ...]:
    """The binary ones among a dataset's attributes (categorical derived labels are skipped)."""
    from latent_jax.data import labels as labels_lib  # pylint: disable=import-outside-toplevel

    return tuple(n for n in names if labels_lib.label_kind(n) == labels_lib.BINARY)


def cache_path(settings: Mapping[str, Any], key: str) -> epath.Path:
    """Where the judge (or class judge) of `key` is cached: `settings['cache_dir']` or
    `default_cache_dir()`, `~` expanded for local paths."""
    cache_dir = str(settings["cache_dir"] or default_cache_dir())
    path = epath.Path(cache_dir)
    return (path if paths.is_remote(cache_dir) else path.expanduser()) / f"{key}.msgpack"


def load_or_train(what: str, settings: Mapping[str, Any], key: str, seed: int, module,
                  input_shape, names: Sequence[str], train: Callable[[], tuple[Any, dict]],
                  **meta_extra) -> tuple[Any, dict, bool, epath.Path]:
    """(params, metadata, loaded from the cache, cache path) of the judge `module` (taking
    images of `input_shape`) cached under `key`: read from the cache when a usable file is
    there, else `train()`ed and written to it (with `meta_extra` in its metadata). An unusable
    or unwritable cache is reported, not fatal. Shared by the attribute judge and the class
    judge (class_judge.py)."""
    path = cache_path(settings, key)
    template = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0),
                            jnp.zeros((1,) + tuple(input_shape), jnp.float32))["params"])
    if path.exists():
        try:
            params, meta = load_judge_cache(path, template, key, names)
            log.info("%s: loaded %s", what, path)
            return params, meta, True, path
        except Exception as e:  # pylint: disable=broad-except
            log.warning("%s: ignoring unusable cache %s (%s: %s); retraining", what, path,
                        type(e).__name__, e)
    params, meta = train()
    meta = dict(meta, key=key, attribute_names=list(names),
                settings={k: v for k, v in settings.items() if k != "cache_dir"}, seed=seed,
                created=time.strftime("%Y-%m-%dT%H:%M:%S"), **meta_extra)
    try:
        save_judge_cache(path, params, meta)
        log.info("%s: cached at %s", what, path)
    except OSError as e:
        log.warning("%s: could not write the cache %s (%s)", what, path, e)
    return params, meta, False, path


def get_or_train_judge(data_cfg, judge_cfg=None, rng_seed: int | None = None, *,
                       attribute_names: Sequence[str] | None = None,
                       progress: Callable[[str], None] | None = None) -> Judge:
    """Loads the cached judge for this dataset, or trains (and caches) it.

    Args:
      data_cfg: the validated `config.data` (`data.DataOptions`) or the ConfigDict.
      judge_cfg: `config.eval.judge` (missing fields take `JUDGE_DEFAULTS`).
      rng_seed: training seed; None uses `judge_cfg.seed`. It is part of the cache key. Use the
        same seed for every method that is to be compared (the evaluation does: judge_cfg.seed).
      attribute_names: attributes to judge; default every attribute of the dataset.
      progress: callable receiving progress lines (default: logging at INFO).
    """
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel

    settings = judge_settings(judge_cfg)
    seed = int(settings["seed"] if rng_seed is None else rng_seed)
    spec = data_lib.get_data_spec(data_cfg)
    names = tuple(_binary_attributes(spec.attribute_names) if attribute_names is None
                  else attribute_names)
    unknown = [n for n in names if n not in spec.attribute_names]
    if unknown:
        raise ConfigError(f"judge attributes {unknown} are not provided by dataset {spec.name!r}; "
                         f"available: {list(spec.attribute_names)}")
    key = cache_key(data_cfg, spec, names, settings, seed)
    module = JudgeNet(num_outputs=len(names), width=int(settings["width"]),
                      feature_dim=int(settings["feature_dim"]))
    params, meta, loaded, path = load_or_train(
        "judge", settings, key, seed, module, spec.image_shape, names,
        lambda: train_judge_params(data_cfg, spec, names, settings, seed, progress),
        dataset=spec.name, image_shape=list(spec.image_shape))

    return Judge(attribute_names=names, module=module, params=params,
                 test_accuracy=dict(meta["test_accuracy"]),
                 test_balanced_accuracy=dict(meta["test_balanced_accuracy"]),
                 test_positive_rate=dict(meta.get("test_positive_rate", {})),
                 test_predicted_positive_rate=dict(meta.get("test_predicted_positive_rate", {})),
                 key=key, cache_path=path, train_seconds=meta.get("train_seconds"),
                 loaded_from_cache=loaded)
