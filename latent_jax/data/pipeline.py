"""The data pipeline: config validation, labelled random-access sources and grain iterators.

See docs/contracts.md ("Data") for the interface and docs/data.md for what happens to the
images and labels. Everything here is host-side numpy; nothing imports JAX.

Flow for training: dataset records (`{'image': uint8, 'attributes': {name: bool}}`) ->
`LabeledSource` (subset selection, preprocessing, label vector) -> grain `MapDataset.source`
-> a seeded order that reshuffles every epoch and hands each process its rows of each global
batch -> float32 conversion -> batches -> `to_iter_dataset` (read threads, prefetch buffer)
-> optional worker processes (`mp_prefetch`). The resulting iterator supports `get_state()` /
`set_state()` (a small JSON-serialisable dict) and resumes at the same batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import threading
import zlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import ml_collections
import numpy as np
from ml_collections import config_dict

from latent_jax import interrupt
from latent_jax.data import celeba
from latent_jax.data import labels as labels_lib
from latent_jax.data import preprocess as preprocess_lib
from latent_jax.data import synthetic_identities  # registers its categorical label Identity
from latent_jax.data import toy2d   # registers its derived label Toy_CLASS at import
from latent_jax.errors import ConfigError

SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------------
# Config.

MEMORY_MB_DEFAULT = 1024   # config.data.memory_mb, also for configs saved before it existed


def default_data_config() -> ml_collections.ConfigDict:
    """`config.data` with every field the data pipeline reads, at its default."""
    return ml_collections.ConfigDict(dict(
        # 'synthetic_faces' (embedded, procedurally rendered), 'celeb_a' (tfds, prepared with
        # launch/prepare_celeba; the official partition) or 'celeb_a_identities' (the same
        # files: the most frequent persons, split inside each person; the optional key
        # `identities` sets how), 'synthetic_identities', 'swiss_roll', 'toy2d'.
        name="synthetic_faces",
        # Final square image size.
        image_size=64,
        # 'introvac_crop' | 'center_crop' | 'resize' for celeb_a; 'resize' | 'none' for
        # synthetic_faces (rendered at image_size). See preprocess.py.
        preprocess="resize",
        # The method's labels, in label-vector order: raw attributes or derived labels
        # (labels.py: Beard, FacialHair).
        labels=("Eyeglasses",),
        # Keep every example positive for ANY of `positives` plus round(ratio * n_positive)
        # negatives drawn at random with `subset_seed`, per split; () = no subsetting.
        subset=ml_collections.ConfigDict(dict(positives=(), ratio=1.0)),
        subset_seed=0,
        # tfds data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
        data_dir=config_dict.placeholder(str),
        # Where CelebA's attribute tables are cached (None: next to the prepared dataset).
        cache_dir=config_dict.placeholder(str),
        # The embedded data sets' seed and split sizes. An optional key `num_identities` sets
        # synthetic_identities' number of identities (the classes of its label Identity;
        # absent: 300); the identities presets add it, so that configs of the other datasets
        # (their judge cache keys, their checkpoints' configs) stay as they were. Another
        # optional key, `num_unlabeled_identities` (absent: 0), adds training images of that
        # many identities outside the label set, never labelled (needs semi_supervised).
        synthetic=ml_collections.ConfigDict(dict(
            seed=0, num_train=20000, num_validation=2000, num_test=2000)),
        # Semi-supervision (training split only): with `fraction` set, a seeded random share
        # `fraction` of the (subsetted) training examples keeps its labels and the rest has them
        # hidden (zeroed); every training batch then carries `labeled` (bool [B]). Batches are
        # wholly supervised or wholly unsupervised, supervised ones spread evenly at the rate
        # n_supervised / n_train (see `_SemiSupervisedStream`). None: no `labeled` key.
        semi_supervised=ml_collections.ConfigDict(dict(
            fraction=config_dict.placeholder(float), seed=0)),
        # > 0: the last `validation_from_train` examples of the dataset's training split are the
        # validation split and the rest the training split (the CCVAE reference's CelebA split:
        # 10000); 0: the dataset's own validation split.
        validation_from_train=0,
        # grain worker processes for training (0: read in the training process).
        num_workers=0,
        # Threads reading and preprocessing batches in each process (grain ReadOptions).
        read_threads=4,
        # Batches read ahead per process (grain's prefetch buffer; per worker with workers).
        prefetch=4,
        # Examples are kept in memory after their first read, as read and preprocessed
        # (uint8), when the split fits in this many MiB per process (per worker with
        # workers): later epochs are then served from memory instead of being rendered or
        # decoded again. 0: never.
        memory_mb=MEMORY_MB_DEFAULT,
    ))


# celeb_a_identities' optional `config.data.identities` (absent: these values), an optional
# key so that the other datasets' configs (their judge cache keys, their checkpoints' configs)
# stay as they were: the number of persons (FaceScrub's 530 by default, Lr-LiVAE's dataset),
# each person's share of validation and test images, and the seed of the split.
IDENTITY_DEFAULTS = dict(num_identities=530, validation_fraction=0.1, test_fraction=0.1, seed=0)
_TOP_KEYS = tuple(default_data_config().keys()) + ("identities",)
_SUBSET_KEYS = ("positives", "ratio")
_SYNTHETIC_KEYS = ("seed", "num_train", "num_validation", "num_test", "num_identities",
                   "num_unlabeled_identities")
_SEMI_KEYS = ("fraction", "seed")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """A validated `config.data` (see :func:`options`): what the pipeline, the judge and the
    reports receive, so that a run validates its data config once. Every public function here
    takes either this or the `config.data` ConfigDict."""

    name: str
    image_size: int
    preprocess: str
    labels: tuple[str, ...]
    positives: tuple[str, ...]
    ratio: float
    subset_seed: int
    data_dir: str | None
    cache_dir: str | None
    synthetic_seed: int
    synthetic_sizes: Mapping[str, int]
    num_identities: int
    num_unlabeled_identities: int
    # celeb_a_identities: (validation_fraction, test_fraction, seed) of the split per person.
    identity_split: tuple[float, float, int]
    supervised_fraction: float | None
    supervised_seed: int
    validation_from_train: int
    num_workers: int
    read_threads: int
    prefetch: int
    memory_mb: int
    # The config as given (a plain dict): the judge keys its cache on it.
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True)
class _DatasetDef:
    """What the pipeline needs to know about one dataset."""

    attribute_names: Callable[[], tuple[str, ...]]  # raw attributes, attribute-table order
    preprocessing: tuple[str, ...]                  # allowed values of config.data.preprocess
    open: Callable[[DataOptions, str], Any]            # split -> records with image, attributes
    table: Callable[[DataOptions, str, Any], np.ndarray]  # attribute table of the opened split
    image_sizes: Callable[[], tuple[int, int]] = lambda: (1, 1 << 30)  # allowed image_size
    # (opts, split, record index) -> {attribute: bool [S, S]} where it is drawn; None: unknown
    regions: Callable[[DataOptions, str, int], Mapping[str, np.ndarray]] | None = None
    # Shape of one example's `image` for a given image_size; None: (size, size, 3).
    example_shape: Callable[[int], tuple[int, ...]] | None = None
    # Version of the data's content (a renderer's or generator's); part of the judge's cache
    # key and of the evaluation report, so results on different versions are never mixed.
    version: Callable[[], str] = lambda: ""
    # Categorical labels whose values are record attributes of their own (int, not part of the
    # bool attribute table) and whose class count the dataset sets: their names, and
    # opts -> {name: classes}.
    categorical_names: tuple[str, ...] = ()
    categorical: Callable[[DataOptions], Mapping[str, int]] = lambda opts: {}
    # (opts, split, source) -> {name: int column} for those labels, without reading images.
    categorical_table: Callable[[DataOptions, str, Any], Mapping[str, np.ndarray]] = (
        lambda opts, split, source: {})
    # (opts, split, source) -> bool [n]: records that may be labelled (None: all). The others
    # (classes outside the label set) are never in the supervised share.
    labelable: Callable[[DataOptions, str, Any], np.ndarray | None] = (
        lambda opts, split, source: None)


def _example_shape(opts: "DataOptions") -> tuple[int, ...]:
    shape = DATASETS[opts.name].example_shape
    return (opts.image_size, opts.image_size, 3) if shape is None else tuple(shape(opts.image_size))


def _synthetic_module():
    from latent_jax.data import synthetic_faces

    return synthetic_faces


def _synthetic_open(opts: DataOptions, split: str):
    return _synthetic_module().SyntheticFaces(
        split, image_size=opts.image_size, seed=opts.synthetic_seed,
        num_examples=opts.synthetic_sizes[split])


def _identities_open(opts: DataOptions, split: str):
    return synthetic_identities.SyntheticIdentities(
        split, image_size=opts.image_size, seed=opts.synthetic_seed,
        num_examples=opts.synthetic_sizes[split], num_identities=opts.num_identities,
        num_outside=opts.num_unlabeled_identities)


def _swiss_roll_open(opts: DataOptions, split: str):
    from latent_jax.data import swiss_roll

    return swiss_roll.SwissRoll(split, seed=opts.synthetic_seed,
                                num_examples=opts.synthetic_sizes[split])


def _toy2d_open(opts: DataOptions, split: str):
    return toy2d.Toy2D(split, seed=opts.synthetic_seed, num_examples=opts.synthetic_sizes[split])


def _celeba_open(opts: DataOptions, split: str):
    return celeba.open_split(split, opts.data_dir)


def _celeba_table(opts: DataOptions, split: str, source) -> np.ndarray:
    return celeba.attribute_table(split, opts.data_dir, source=source, cache_dir=opts.cache_dir)


def _celeba_identities_open(opts: DataOptions, split: str):
    val, test, seed = opts.identity_split
    return celeba.IdentityRecords(split, opts.data_dir, num_identities=opts.num_identities,
                                  validation_fraction=val, test_fraction=test, seed=seed,
                                  cache_dir=opts.cache_dir)


DATASETS: dict[str, _DatasetDef] = {
    "synthetic_faces": _DatasetDef(
        attribute_names=lambda: tuple(_synthetic_module().ATTRIBUTES),
        preprocessing=("resize", "none"),
        open=_synthetic_open,
        table=lambda opts, split, source: np.asarray(source.attributes_table(), bool),
        image_sizes=lambda: (_synthetic_module().MIN_SIZE, _synthetic_module().MAX_SIZE),
        regions=lambda opts, split, i: _synthetic_module().attribute_regions(
            opts.synthetic_seed, split, i, opts.image_size),
        version=lambda: _synthetic_module().VERSION,
    ),
    # Lr-LiVAE's FaceScrub analogue: identities fix the face, images vary the nuisance.
    "synthetic_identities": _DatasetDef(
        attribute_names=lambda: synthetic_identities.ATTRIBUTES,
        preprocessing=("resize", "none"),
        open=_identities_open,
        table=lambda opts, split, source: np.asarray(source.attributes_table(), bool),
        image_sizes=lambda: (synthetic_identities.MIN_SIZE, synthetic_identities.MAX_SIZE),
        regions=lambda opts, split, i: synthetic_identities.attribute_regions(
            opts.synthetic_seed, split, i, opts.image_size, opts.num_identities,
            num_outside=opts.num_unlabeled_identities),
        version=lambda: synthetic_identities.VERSION,
        categorical_names=(synthetic_identities.IDENTITY,),
        categorical=lambda opts: {synthetic_identities.IDENTITY: opts.num_identities},
        categorical_table=lambda opts, split, source: {
            synthetic_identities.IDENTITY: source.identity_table()},
        labelable=lambda opts, split, source: source.labelable(),
    ),
    "celeb_a": _DatasetDef(
        attribute_names=lambda: celeba.ATTRIBUTE_NAMES,
        preprocessing=("introvac_crop", "center_crop", "resize"),
        open=_celeba_open,
        table=_celeba_table,
    ),
    # Lr-LiVAE's identity classes on CelebA: the most frequent persons, split inside each.
    "celeb_a_identities": _DatasetDef(
        attribute_names=lambda: celeba.ATTRIBUTE_NAMES,
        preprocessing=("introvac_crop", "center_crop", "resize"),
        open=_celeba_identities_open,
        table=lambda opts, split, source: source.attributes_table(),
        version=lambda: f"identity-split-{celeba.IDENTITY_SPLIT_VERSION}",
        categorical_names=(celeba.IDENTITY,),
        categorical=lambda opts: {celeba.IDENTITY: opts.num_identities},
        categorical_table=lambda opts, split, source: {celeba.IDENTITY: source.identity_table()},
    ),
    # CSVAE's toy (paper 001, Sec. 5.1): 3-D points, label x_gt_10; sizes from config.data.synthetic.
    "swiss_roll": _DatasetDef(
        attribute_names=lambda: ("x_gt_10",),
        preprocessing=("raw",),
        open=_swiss_roll_open,
        table=lambda opts, split, source: source.attributes_table(),
        example_shape=lambda size: (3,),
    ),
    # Lr-LiVAE's toy (paper 002, Sec. 4.1): 2-D points of 3 classes, label Toy_CLASS.
    "toy2d": _DatasetDef(
        attribute_names=lambda: toy2d.ATTRIBUTES,
        preprocessing=("raw",),
        open=_toy2d_open,
        table=lambda opts, split, source: source.attributes_table(),
        example_shape=lambda size: (2,),
    ),
}


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _int(cfg, key: str, path: str, minimum: int, default: int | None = None) -> int:
    """`cfg[key]`, an int >= `minimum`; `default` where the key is absent (keys added after
    configs were saved with checkpoints)."""
    value = cfg.get(key, default)
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{path}: must be an int >= {minimum}, got {value!r}")
    return int(value)


def _optional_str(cfg, key: str, path: str) -> str | None:
    value = cfg.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be a path string or None, got {value!r}")
    return value


def _names(value, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"{path}: must be a tuple of names, got the string {value!r} "
                         f"(write ({value!r},))")
    try:
        names = tuple(value)
    except TypeError:
        raise ConfigError(f"{path}: must be a tuple of names, got {value!r}") from None
    for n in names:
        if not isinstance(n, str):
            raise ConfigError(f"{path}: must be a tuple of names, got {value!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: repeated names {dup}")
    return names


def _check_keys(cfg, known: Sequence[str], path: str) -> None:
    unknown = sorted(set(cfg.keys()) - set(known))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key; {path} has: {', '.join(known)}")


def _check_labels(names: Sequence[str], dataset: str, known: Sequence[str], path: str) -> None:
    for n in names:
        if n not in known:
            raise ConfigError(f"{path}: unknown attribute {n!r} for dataset {dataset}; "
                             f"known: {', '.join(known)}")


def options(data) -> DataOptions:
    """`config.data` validated into :class:`DataOptions` without touching any data (a
    `ConfigError` names the offending key); a `DataOptions` is returned as it is."""
    if isinstance(data, DataOptions):
        return data
    return _validate(data)


def _validate(data_cfg) -> DataOptions:
    """Checks `config.data` without touching any data; raises ConfigError naming the key."""
    if data_cfg is None or not hasattr(data_cfg, "keys"):
        raise ConfigError(f"config.data: must be a ConfigDict, got {type(data_cfg).__name__}")
    _check_keys(data_cfg, _TOP_KEYS, "config.data")
    name = data_cfg.get("name")
    if name not in DATASETS:
        raise ConfigError(f"config.data.name: unknown dataset {name!r}; known: "
                         f"{', '.join(DATASETS)}")
    dataset = DATASETS[name]
    image_size = _int(data_cfg, "image_size", "config.data.image_size", 1)
    lo, hi = dataset.image_sizes()
    if not lo <= image_size <= hi:
        raise ConfigError(f"config.data.image_size: {name} supports sizes {lo}..{hi}, got "
                         f"{image_size}")
    method = data_cfg.get("preprocess")
    if method not in dataset.preprocessing:
        raise ConfigError(f"config.data.preprocess: {method!r} is not available for dataset "
                         f"{name}; use one of: {', '.join(dataset.preprocessing)}")
    label_names = _names(data_cfg.get("labels", ()), "config.data.labels")

    subset = data_cfg.get("subset")
    if subset is None or not hasattr(subset, "keys"):
        raise ConfigError("config.data.subset: must be a ConfigDict(positives=..., ratio=...)")
    _check_keys(subset, _SUBSET_KEYS, "config.data.subset")
    positives = _names(subset.get("positives", ()), "config.data.subset.positives")
    known = _known_labels(name)
    _check_labels(label_names, name, known, "config.data.labels")
    _check_labels(positives, name, known, "config.data.subset.positives")
    for p in positives:
        if labels_lib.label_kind(p) != labels_lib.BINARY:
            raise ConfigError(f"config.data.subset.positives: {p!r} is not a binary label")
    ratio = subset.get("ratio", 1.0)
    if (not isinstance(ratio, (int, float, np.number)) or isinstance(ratio, bool)
            or not math.isfinite(ratio) or ratio < 0):
        raise ConfigError(f"config.data.subset.ratio: must be a number >= 0, got {ratio!r}")
    subset_seed = _int(data_cfg, "subset_seed", "config.data.subset_seed", 0)

    synthetic = data_cfg.get("synthetic")
    if synthetic is None or not hasattr(synthetic, "keys"):
        raise ConfigError("config.data.synthetic: must be a ConfigDict(seed=..., num_train=..., "
                         "num_validation=..., num_test=...)")
    _check_keys(synthetic, _SYNTHETIC_KEYS, "config.data.synthetic")
    synthetic_seed = _int(synthetic, "seed", "config.data.synthetic.seed", 0)
    sizes = {split: _int(synthetic, f"num_{split}", f"config.data.synthetic.num_{split}", 1)
             for split in SPLITS}
    num_identities = synthetic_identities.DEFAULT_NUM_IDENTITIES
    if synthetic.get("num_identities") is not None:
        num_identities = _int(synthetic, "num_identities", "config.data.synthetic.num_identities",
                              2)
    num_unlabeled = 0
    if synthetic.get("num_unlabeled_identities") is not None:
        num_unlabeled = _int(synthetic, "num_unlabeled_identities",
                             "config.data.synthetic.num_unlabeled_identities", 0)

    identity_split = (IDENTITY_DEFAULTS["validation_fraction"],
                      IDENTITY_DEFAULTS["test_fraction"], IDENTITY_DEFAULTS["seed"])
    identities = data_cfg.get("identities")
    if identities is not None:
        if name != "celeb_a_identities":
            raise ConfigError(f"config.data.identities: only celeb_a_identities reads it, not "
                             f"{name} (synthetic_identities: config.data.synthetic."
                             "num_identities)")
        if not hasattr(identities, "keys"):
            raise ConfigError("config.data.identities: must be a ConfigDict with keys "
                             f"{', '.join(IDENTITY_DEFAULTS)}")
        _check_keys(identities, tuple(IDENTITY_DEFAULTS), "config.data.identities")
    if name == "celeb_a_identities":
        ident = dict(IDENTITY_DEFAULTS)
        if identities is not None:
            ident.update({key: identities[key] for key in identities.keys()})
        num_identities = _int(ident, "num_identities", "config.data.identities.num_identities", 2)
        fractions = []
        for key in ("validation_fraction", "test_fraction"):
            f = ident[key]
            if (not isinstance(f, (int, float, np.number)) or isinstance(f, bool)
                    or not 0.0 < float(f) < 0.5):
                raise ConfigError(f"config.data.identities.{key}: must be in (0, 0.5), got {f!r}")
            fractions.append(float(f))
        identity_split = (fractions[0], fractions[1],
                          _int(ident, "seed", "config.data.identities.seed", 0))

    semi = data_cfg.get("semi_supervised")
    if semi is None or not hasattr(semi, "keys"):
        raise ConfigError("config.data.semi_supervised: must be a ConfigDict(fraction=..., seed=...)")
    _check_keys(semi, _SEMI_KEYS, "config.data.semi_supervised")
    fraction = semi.get("fraction")
    if fraction is not None:
        if (not isinstance(fraction, (int, float, np.number)) or isinstance(fraction, bool)
                or not 0.0 < float(fraction) <= 1.0):
            raise ConfigError("config.data.semi_supervised.fraction: must be in (0, 1] or None, "
                             f"got {fraction!r}")
        fraction = float(fraction)
    supervised_seed = _int(semi, "seed", "config.data.semi_supervised.seed", 0)
    if num_unlabeled and name != "synthetic_identities":
        raise ConfigError("config.data.synthetic.num_unlabeled_identities: only "
                         f"synthetic_identities has identities, not {name}")
    if num_unlabeled and fraction is None:
        raise ConfigError("config.data.synthetic.num_unlabeled_identities: images outside the "
                         "label set are never labelled, so they need a semi-supervised stream: "
                         "set config.data.semi_supervised.fraction (1.0 labels every other "
                         "image)")

    return DataOptions(
        name=name,
        image_size=image_size,
        preprocess=method,
        labels=label_names,
        positives=positives,
        ratio=float(ratio),
        subset_seed=subset_seed,
        data_dir=_optional_str(data_cfg, "data_dir", "config.data.data_dir"),
        cache_dir=_optional_str(data_cfg, "cache_dir", "config.data.cache_dir"),
        synthetic_seed=synthetic_seed,
        synthetic_sizes=sizes,
        num_identities=num_identities,
        num_unlabeled_identities=num_unlabeled,
        identity_split=identity_split,
        supervised_fraction=fraction,
        supervised_seed=supervised_seed,
        validation_from_train=_int(data_cfg, "validation_from_train",
                                   "config.data.validation_from_train", 0),
        num_workers=_int(data_cfg, "num_workers", "config.data.num_workers", 0),
        read_threads=_int(data_cfg, "read_threads", "config.data.read_threads", 0),
        prefetch=_int(data_cfg, "prefetch", "config.data.prefetch", 0),
        memory_mb=_int(data_cfg, "memory_mb", "config.data.memory_mb", 0,
                       default=MEMORY_MB_DEFAULT),
        config=data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg),
    )


def fully_labelled(data_cfg) -> DataOptions:
    """The same data with every training example labelled: no semi-supervised stream (whose
    unsupervised batches carry zeroed labels) and no identities outside the label set. What
    the judges train on, whatever the method's supervision; read without `memory_mb` (the
    judges replay their own batches, `eval.judge.memory_mb`)."""
    opts = options(data_cfg)
    return dataclasses.replace(opts, supervised_fraction=None, num_unlabeled_identities=0,
                               memory_mb=0)


def _known_labels(dataset: str) -> tuple[str, ...]:
    """Labels a dataset can give: raw attributes, derived labels computable from them, and the
    dataset's own categorical labels."""
    d = DATASETS[dataset]
    return labels_lib.available_labels(d.attribute_names()) + tuple(d.categorical_names)


def dataset_num_classes(data_cfg) -> dict[str, int]:
    """Class count of each of `config.data.labels` (2 for binary labels)."""
    opts = options(data_cfg)
    classes = DATASETS[opts.name].categorical(opts)
    return {n: labels_lib.num_classes(n, classes) for n in opts.labels}


def _label_names(opts: DataOptions, label_names) -> tuple[str, ...]:
    if label_names is None:
        return opts.labels
    names = _names(label_names, "label_names")
    _check_labels(names, opts.name, _known_labels(opts.name), "label_names")
    return names


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r}; known: {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------------------------
# Subsetting.

def balanced_subset_indices(
    table: np.ndarray,
    attribute_names: Sequence[str],
    positives: Sequence[str],
    ratio: float,
    seed: int,
    split: str,
) -> np.ndarray:
    """Rows kept by subset balancing, sorted: every positive plus random negatives.

    An example is positive when it is positive for ANY label of `positives` (raw or derived).
    The `round(ratio * n_positive)` negatives (Python's `round`; all negatives when there are
    fewer) are drawn without replacement by a generator seeded with `(seed, crc32(split))`, so
    each split draws independently and the draw does not depend on file order.
    """
    n = int(np.shape(table)[0])
    if not positives:
        return np.arange(n, dtype=np.int64)
    columns = labels_lib.table_as_mapping(table, attribute_names)
    positive = np.zeros(n, bool)
    for label in positives:
        positive |= labels_lib.label_values(label, columns).astype(bool)
    pos = np.flatnonzero(positive)
    neg = np.flatnonzero(~positive)
    k = int(round(ratio * len(pos)))
    if k > len(neg):
        logging.warning("subset of %s: %d negatives wanted (ratio %g x %d positives), only %d "
                        "exist; keeping all", split, k, ratio, len(pos), len(neg))
        k = len(neg)
    rng = np.random.default_rng([int(seed), zlib.crc32(split.encode())])
    chosen = rng.choice(neg, size=k, replace=False) if k else np.zeros(0, np.int64)
    return np.sort(np.concatenate([pos, chosen]).astype(np.int64))


def supervised_positions(num_examples: int, fraction: float, seed: int) -> np.ndarray:
    """Positions (sorted) of the examples that keep their labels under semi-supervision.

    `max(1, round(fraction * num_examples))` positions of `range(num_examples)` drawn without
    replacement by a generator seeded with `(seed, crc32('supervised'))`; the rest have their
    labels hidden. The same seed and size always give the same positions.
    """
    n = int(num_examples)
    k = min(n, max(1, int(round(float(fraction) * n))))
    rng = np.random.default_rng([int(seed), zlib.crc32(b"supervised")])
    return np.sort(rng.permutation(n)[:k]).astype(np.int64)


def _supervised(labelable: np.ndarray | None, record_rows: np.ndarray,
                opts: DataOptions) -> np.ndarray:
    """Positions (into `record_rows`, the examples' record indices) of the supervised share:
    `supervised_positions` over the examples that may be labelled (all of them when
    `labelable` is None; records of classes outside the label set never are)."""
    record_rows = np.asarray(record_rows, np.int64)
    if labelable is None:
        return supervised_positions(len(record_rows), opts.supervised_fraction,
                                    opts.supervised_seed)
    candidates = np.flatnonzero(np.asarray(labelable, bool)[record_rows])
    if len(candidates) == 0:
        raise ConfigError("config.data.semi_supervised: no training example may be labelled")
    return candidates[supervised_positions(len(candidates), opts.supervised_fraction,
                                           opts.supervised_seed)]


def label_frequencies(data_cfg, label_names: Sequence[str] | None = None
                      ) -> dict[str, np.ndarray]:
    """Per label, the class frequencies [num_classes] of the *supervised* training examples
    (all training examples when `config.data.semi_supervised.fraction` is None), after subset
    balancing: the p(y) of semi-supervised methods. Reads the attribute table only."""
    opts = options(data_cfg)
    names = _label_names(opts, label_names)
    dataset = DATASETS[opts.name]
    records = dataset.open(opts, "train")
    table = np.asarray(dataset.table(opts, "train", records), bool)
    rows = np.arange(len(table))
    base = _holdout_rows(opts, "train", len(records))
    if base is not None:
        rows = rows[base]
    if opts.positives:
        rows = rows[balanced_subset_indices(table[rows], dataset.attribute_names(),
                                            opts.positives, opts.ratio, opts.subset_seed, "train")]
    if opts.supervised_fraction is not None:
        rows = rows[_supervised(dataset.labelable(opts, "train", records), rows, opts)]
    columns = labels_lib.table_as_mapping(table[rows], dataset.attribute_names())
    columns.update({name: np.asarray(col)[rows] for name, col in
                    dataset.categorical_table(opts, "train", records).items()})
    classes = dataset.categorical(opts)
    out = {}
    for name in names:
        values = labels_lib.label_values(name, columns).astype(np.int64)
        counts = np.bincount(values, minlength=labels_lib.num_classes(name, classes))
        out[name] = counts.astype(np.float64) / max(1, counts.sum())
    return out


# ---------------------------------------------------------------------------------------------
# Sources.

class LabeledSource:
    """Random access to preprocessed examples: `src[i] -> {'image': uint8, 'label': float32}`.

    Wraps a dataset's records (`{'image': uint8 [H, W, C], 'attributes': {name: bool}}`),
    optionally restricted to `indices` (subset balancing). Picklable when the records' source
    is (tfds data sources and the synthetic faces are), so grain workers can use it.

    With `memory_mb` > 0, each example is kept after its first read (image and label, as
    returned) when all of them fit in that many MiB: records are deterministic, so later
    epochs read memory instead of rendering or decoding again. The memory is this object's
    (a grain worker, which gets a pickled copy, fills its own).
    """

    def __init__(self, records, *, label_names: Sequence[str], preprocess: str,
                 image_size: int, indices: np.ndarray | None = None, name: str = "",
                 memory_mb: int = 0):
        self._records = records
        self._label_names = tuple(label_names)
        self._preprocess = preprocess
        self._image_size = int(image_size)
        self._indices = None if indices is None else np.asarray(indices, np.int64)
        self._name = name
        self._memory_mb = int(memory_mb)
        self._memory = None          # (images, labels, kept) once the first example is read
        self._memory_lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_memory"], state["_memory_lock"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._memory_lock = threading.Lock()

    @property
    def label_names(self) -> tuple[str, ...]:
        return self._label_names

    @property
    def records(self):
        """The dataset's records (before subset selection)."""
        return self._records

    @property
    def indices(self) -> np.ndarray:
        """Record index of each example."""
        if self._indices is None:
            return np.arange(len(self._records), dtype=np.int64)
        return self._indices

    def __len__(self) -> int:
        return len(self._records) if self._indices is None else len(self._indices)

    def record_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} examples")
        i = int(i) % n
        return i if self._indices is None else int(self._indices[i])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        j = self.record_index(i)
        pos = int(i) % len(self)
        memory = self._memory
        if memory is not None and memory[2][pos]:
            return {"image": memory[0][pos].copy(), "label": memory[1][pos].copy()}
        record = self._records[j]
        image = preprocess_lib.preprocess(np.asarray(record["image"]), self._preprocess,
                                          self._image_size)
        label = labels_lib.compute_labels(self._label_names, record["attributes"])
        if self._memory_mb > 0:
            self._keep(pos, image, label)
        return {"image": image, "label": label}

    def _keep(self, pos: int, image: np.ndarray, label: np.ndarray) -> None:
        if self._memory is None:
            with self._memory_lock:
                if self._memory_mb <= 0:
                    return
                if self._memory is None:
                    image, label = np.asarray(image), np.asarray(label)
                    n = len(self)
                    if n * (image.nbytes + label.nbytes) > self._memory_mb * 2 ** 20:
                        logging.info("%s: %d examples do not fit in config.data.memory_mb=%d "
                                     "MiB; read every epoch", self._name, n, self._memory_mb)
                        self._memory_mb = 0
                        return
                    self._memory = (np.empty((n,) + image.shape, image.dtype),
                                    np.empty((n,) + label.shape, label.dtype),
                                    np.zeros((n,), np.bool_))
        images, labels, kept = self._memory
        images[pos], labels[pos] = image, label
        kept[pos] = True

    def __repr__(self) -> str:
        return (f"LabeledSource({self._name}, n={len(self)}, labels={self._label_names}, "
                f"preprocess={self._preprocess!r}, size={self._image_size})")


def _record_split(opts: DataOptions, split: str) -> str:
    """The dataset split a split's records come from (`validation_from_train`)."""
    return "train" if opts.validation_from_train and split == "validation" else split


def _holdout_rows(opts: DataOptions, split: str, n_records: int) -> np.ndarray | None:
    """With `validation_from_train = k`: rows [0, n - k) of the dataset's training split for
    'train', rows [n - k, n) for 'validation'; None otherwise."""
    k = opts.validation_from_train
    if not k or split not in ("train", "validation"):
        return None
    if k >= n_records:
        raise ConfigError(f"config.data.validation_from_train: {k} is not smaller than the "
                         f"{n_records} training examples of {opts.name}")
    return (np.arange(n_records - k, n_records) if split == "validation"
            else np.arange(n_records - k)).astype(np.int64)


def _source(opts: DataOptions, split: str, label_names: tuple[str, ...],
            apply_subset: bool, memory_mb: int = 0) -> LabeledSource:
    _check_split(split)
    dataset = DATASETS[opts.name]
    record_split = _record_split(opts, split)
    records = dataset.open(opts, record_split)
    base = _holdout_rows(opts, split, len(records))
    indices = base
    if apply_subset and opts.positives:
        table = np.asarray(dataset.table(opts, record_split, records))
        if base is not None:
            table = table[base]
        indices = balanced_subset_indices(table, dataset.attribute_names(), opts.positives,
                                          opts.ratio, opts.subset_seed, split)
        if base is not None:
            indices = base[indices]
    return LabeledSource(records, label_names=label_names, preprocess=opts.preprocess,
                         image_size=opts.image_size, indices=indices,
                         name=f"{opts.name}/{split}", memory_mb=memory_mb)


def make_source(data_cfg, split: str, *, label_names: Sequence[str] | None = None,
                apply_subset: bool = True) -> LabeledSource:
    """Random access to one split: `len(src)`, `src[i] -> {'image': uint8, 'label': float32}`."""
    opts = options(data_cfg)
    _check_split(split)
    return _source(opts, split, _label_names(opts, label_names), apply_subset)


def attribute_regions(data_cfg, split: str, num_examples: int) -> dict[str, np.ndarray] | None:
    """Per raw attribute, bool [N, S, S]: where it is drawn on each of the first `num_examples`
    images of the un-subsetted `split` (the evaluation images), or None when the dataset does
    not provide regions (CelebA). Used to measure how local attribute edits are."""
    opts = options(data_cfg)
    _check_split(split)
    dataset = DATASETS[opts.name]
    if dataset.regions is None or opts.preprocess not in ("resize", "none"):
        return None
    per = [dataset.regions(opts, split, i) for i in range(int(num_examples))]
    if not per:
        return None
    return {name: np.stack([r[name] for r in per]).astype(bool) for name in per[0]}


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What methods and the trainer need to know about the data (docs/contracts.md)."""

    name: str
    image_shape: tuple[int, int, int]
    label_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    num_examples: Mapping[str, int]
    version: str = ""   # the data's content version where the dataset has one ("" otherwise)
    # Class count of each of `label_names` (2 for binary labels; a categorical label's count,
    # which the dataset may set, e.g. synthetic_identities' Identity). Empty: the registry's.
    num_classes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # The validated data config this describes: pass it on instead of `config.data`.
    options: DataOptions | None = dataclasses.field(default=None, compare=False, repr=False)


def get_data_spec(data_cfg) -> DataSpec:
    """Validates `config.data` and describes the data; `DatasetNotPreparedError` for CelebA
    that is not prepared. Cheap, except that the first subsetted use of a CelebA split reads
    its attributes once (cached on disk afterwards)."""
    opts = options(data_cfg)
    dataset = DATASETS[opts.name]
    num_examples = {}
    for split in SPLITS:
        num_examples[split] = len(_source(opts, split, opts.labels, apply_subset=True))
    return DataSpec(
        name=opts.name,
        image_shape=_example_shape(opts),
        label_names=opts.labels,
        attribute_names=labels_lib.available_labels(dataset.attribute_names()),
        num_examples=num_examples,
        version=dataset.version(),
        num_classes=dataset_num_classes(opts),
        options=opts,
    )


# ---------------------------------------------------------------------------------------------
# grain datasets.

def to_float(example: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 image -> float32 in [0, 1] (float data, e.g. points, passes unscaled);
    label -> float32."""
    out = dict(example)
    image = np.asarray(example["image"])
    scale = np.float32(255.0) if image.dtype == np.uint8 else np.float32(1.0)
    out["image"] = image.astype(np.float32) / scale
    out["label"] = np.asarray(example["label"], np.float32)
    return out


class _EndlessBatchStream(grain.MapDataset):
    """Shared machinery of the endless training streams below: this process's share of every
    global batch, per-epoch permutations drawn from the seed (cached, old epochs evicted), and
    pickling without the lock or the cache (grain worker processes rebuild them)."""

    def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, seed: int,
                 process_index: int, process_count: int):
        super().__init__(parent)
        self._global_batch = int(global_batch_size)
        self._local_batch = self._global_batch // process_count
        self._process_index = int(process_index)
        self._seed = int(seed)
        self._permutations: dict[tuple[Any, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sys.maxsize

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_permutations"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _cached_permutation(self, stream, epoch: int, n: int, rng_key: Sequence[int]) -> np.ndarray:
        """`default_rng(rng_key).permutation(n)`, cached per (stream, epoch); a stream keeps only
        its last two epochs."""
        key = (stream, epoch)
        with self._lock:
            perm = self._permutations.get(key)
        if perm is None:
            perm = np.random.default_rng(list(rng_key)).permutation(n)
            with self._lock:
                self._permutations[key] = perm
                for old in [k for k in self._permutations if k[0] == stream and k[1] < epoch - 1]:
                    del self._permutations[old]
        return perm


class _ProcessShareOfEpochs(_EndlessBatchStream):
    """An endless stream of this process's rows of each global batch, reshuffled every epoch.

    Epoch `e` visits the parent's elements in the order of a permutation drawn by
    `numpy.random.default_rng([seed, e])`; its first `(n // B) * B` positions form `n // B`
    global batches of `B` rows (the remainder, a different random set each epoch, is dropped).
    Process `p` of `P` gets rows `[p * B / P, (p + 1) * B / P)` of every global batch, so the
    processes' shares are disjoint and together make up the global batch. Element `j` of this
    dataset is row `j % b` of local batch `j // b` (`b = B / P`).
    """

    def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, seed: int,
                 process_index: int, process_count: int):
        super().__init__(parent, global_batch_size=global_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count)
        self._n = len(parent)
        self._steps_per_epoch = self._n // self._global_batch

    def __str__(self) -> str:
        return (f"ProcessShareOfEpochs(global_batch={self._global_batch}, "
                f"process={self._process_index}, seed={self._seed})")

    def _permutation(self, epoch: int) -> np.ndarray:
        return self._cached_permutation(0, epoch, self._n, (self._seed, epoch))

    def parent_index(self, index: int) -> int:
        step, row = divmod(int(index), self._local_batch)
        epoch, step_in_epoch = divmod(step, self._steps_per_epoch)
        position = (step_in_epoch * self._global_batch
                    + self._process_index * self._local_batch + row)
        return int(self._permutation(epoch)[position])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self.parent_index(index)]


class _SemiSupervisedStream(_EndlessBatchStream):
    """Endless semi-supervised batches: each global batch is wholly supervised (labels kept,
    `labeled=True`) or wholly unsupervised (labels zeroed, `labeled=False`).

    The parent's positions are split into a supervised set S (`supervised_positions`) and the
    rest U. Global step `s` is supervised iff `floor((s + 1) r) > floor(s r)` with
    `r = |S| / (|S| + |U|)`, which spreads the supervised batches evenly at rate r (the
    reference code takes a supervised batch every `int(1 / f)` batches). Supervised batches read
    S as one endless stream: position `q` of the stream is element `q mod |S|` of a permutation
    drawn by `default_rng([seed, 1, q // |S|])`, so a small S (|S| < B) simply wraps around and
    every pass over S is reshuffled; U likewise with stream id 2. Process `p` of `P` gets rows
    `[p b, (p + 1) b)` of every global batch (`b = B / P`). Everything is a function of the
    element index, so grain's iterator state resumes exactly.
    """

    def __init__(self, parent: grain.MapDataset, *, supervised: np.ndarray,
                 global_batch_size: int, seed: int, process_index: int, process_count: int):
        super().__init__(parent, global_batch_size=global_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count)
        n = len(parent)
        mask = np.zeros(n, bool)
        mask[np.asarray(supervised, np.int64)] = True
        self._streams = {True: np.flatnonzero(mask), False: np.flatnonzero(~mask)}
        self._n = n
        self._n_sup = int(mask.sum())

    def __str__(self) -> str:
        return (f"SemiSupervisedStream(supervised={self._n_sup}/{self._n}, "
                f"global_batch={self._global_batch}, seed={self._seed})")

    def supervised_steps_before(self, step: int) -> int:
        return (int(step) * self._n_sup) // self._n

    def is_supervised_step(self, step: int) -> bool:
        return self.supervised_steps_before(step + 1) > self.supervised_steps_before(step)

    def _stream_element(self, supervised: bool, position: int) -> int:
        members = self._streams[supervised]
        epoch, offset = divmod(position, len(members))
        perm = self._cached_permutation(supervised, epoch, len(members),
                                        (self._seed, 1 if supervised else 2, epoch))
        return int(members[perm[offset]])

    def parent_index(self, index: int) -> tuple[int, bool]:
        step, row = divmod(int(index), self._local_batch)
        supervised = self.is_supervised_step(step)
        before = self.supervised_steps_before(step)
        k = before if supervised else step - before
        position = k * self._global_batch + self._process_index * self._local_batch + row
        return self._stream_element(supervised, position), supervised

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        parent_index, supervised = self.parent_index(index)
        example = dict(self._parent[parent_index])
        if not supervised:
            example["label"] = np.zeros_like(np.asarray(example["label"], np.float32))
        example["labeled"] = np.bool_(supervised)
        return example


class _PadWithMask(grain.MapDataset):
    """The parent's elements with `mask=True`, then zero rows with `mask=False` up to a
    multiple of `batch_size`."""

    def __init__(self, parent: grain.MapDataset, *, batch_size: int,
                 image_shape: tuple[int, ...], num_labels: int):
        super().__init__(parent)
        self._n = len(parent)
        self._length = -(-self._n // batch_size) * batch_size
        self._image_shape = tuple(image_shape)
        self._num_labels = int(num_labels)

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"PadWithMask(n={self._n}, padded={self._length})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        index = int(index) % self._length
        if index < self._n:
            return {**self._parent[index], "mask": np.bool_(True)}
        return {"image": np.zeros(self._image_shape, np.float32),
                "label": np.zeros((self._num_labels,), np.float32),
                "mask": np.bool_(False)}


def _read_options(opts: DataOptions) -> grain.ReadOptions:
    threads = opts.read_threads if opts.prefetch > 0 else 0
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=opts.prefetch)


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app (tests, notebooks) mark
    them parsed so that their defaults are used instead of raising UnparsedFlagAccessError."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_iterator(
    data_cfg,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    label_names: Sequence[str] | None = None,
    apply_subset: bool = True,
    memory: bool = True,
) -> grain.DatasetIterator:
    """Endless iterator over this process's share of each global training batch.

    Yields `{'image': float32 [b, H, W, C], 'label': float32 [b, n]}` with
    `b = global_batch_size // process_count`. Reshuffled every epoch (seeded by `seed`);
    the incomplete last global batch of each epoch is dropped. With
    `config.data.semi_supervised.fraction` set, batches also carry `labeled` (bool [b]) and
    are drawn by `_SemiSupervisedStream` instead (labels of unlabeled rows zeroed).
    `get_state()` returns a small JSON-serialisable dict; `set_state()` on a fresh iterator
    resumes at the same batch.
    With `memory` (the default), examples are kept in memory after their first read when the
    split fits in `config.data.memory_mb` (`LabeledSource`).
    """
    opts = options(data_cfg)
    names = _label_names(opts, label_names)
    if not _is_int(global_batch_size) or global_batch_size < 1:
        raise ValueError(f"global_batch_size: must be a positive int, got {global_batch_size!r}")
    if not _is_int(process_count) or process_count < 1:
        raise ValueError(f"process_count: must be a positive int, got {process_count!r}")
    if not _is_int(process_index) or not 0 <= process_index < process_count:
        raise ValueError(f"process_index: must be in [0, {process_count}), got "
                         f"{process_index!r}")
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size: {global_batch_size} is not divisible by the "
                         f"{process_count} processes")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed: must be an int >= 0, got {seed!r}")
    source = _source(opts, "train", names, apply_subset,
                     memory_mb=opts.memory_mb if memory else 0)
    if len(source) < global_batch_size:
        raise ValueError(f"global_batch_size: {global_batch_size} is larger than the training "
                         f"split ({len(source)} examples after subsetting)")
    local_batch = global_batch_size // process_count
    ds = grain.MapDataset.source(source)
    if opts.supervised_fraction is None:
        ds = _ProcessShareOfEpochs(ds, global_batch_size=global_batch_size, seed=seed,
                                   process_index=process_index, process_count=process_count)
    else:
        labelable = DATASETS[opts.name].labelable(opts, "train", source.records)
        ds = _SemiSupervisedStream(
            ds, supervised=_supervised(labelable, source.indices, opts),
            global_batch_size=global_batch_size, seed=seed, process_index=process_index,
            process_count=process_count)
    ds = ds.map(to_float)
    ds = ds.batch(local_batch, drop_remainder=True)
    it_ds = ds.to_iter_dataset(_read_options(opts))
    if opts.num_workers > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=opts.num_workers, per_worker_buffer_size=max(1, opts.prefetch)))
    return iter(it_ds)


def iterate_eval_batches(
    data_cfg,
    split: str,
    batch_size: int,
    *,
    label_names: Sequence[str] | None = None,
    apply_subset: bool = True,
    max_examples: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Finite, ordered batches of a split (its first `max_examples` examples if given).

    Every batch has `batch_size` rows: the last one is padded with zero rows, and `mask`
    (bool `[batch_size]`) is False on the padding.
    """
    opts = options(data_cfg)
    names = _label_names(opts, label_names)
    _check_split(split)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
    if max_examples is not None and (not _is_int(max_examples) or max_examples < 0):
        raise ValueError(f"max_examples: must be an int >= 0 or None, got {max_examples!r}")
    source = _source(opts, split, names, apply_subset)
    n = len(source) if max_examples is None else min(len(source), int(max_examples))
    ds = grain.MapDataset.source(source)
    if n < len(source):
        ds = ds[:n]
    ds = ds.map(to_float)
    ds = _PadWithMask(ds, batch_size=batch_size,
                      image_shape=_example_shape(opts), num_labels=len(names))
    ds = ds.batch(batch_size, drop_remainder=False)
    return _interruptible(iter(ds.to_iter_dataset(_read_options(opts))))


def _interruptible(batches: Iterator) -> Iterator:
    """`batches`, acting on a recorded signal between two of them (latent_jax.interrupt)."""
    for batch in batches:
        interrupt.check()
        yield batch
