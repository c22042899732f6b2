"""CelebA through tfds' `celeb_a` builder, read as an ArrayRecord data source (no TensorFlow).

Records (tfds `celeb_a` 2.1.0): `image` uint8 (218, 178, 3), `attributes` a dict of 40 bools,
`landmarks`, `identity` (a dict with the person's number, `Identity_No`). Splits `train` /
`validation` / `test` are CelebA's official
partition (162,770 / 19,867 / 19,962 images).

tfds cannot download CelebA reliably (Google Drive's download quota, tensorflow/datasets
issues 1482, 3150, 3544), so it is prepared once from the original files with
`launch/prepare_celeba` (see docs/data.md). When it is not prepared, `open_split` raises
`DatasetNotPreparedError`, having created nothing on disk.

Subset balancing needs every record's attributes. Reading them means parsing every record, so
the bool table `[num_records, 40]` (columns in `ATTRIBUTE_NAMES` order, rows in record order)
is computed once per split and cached as `latent_jax-attributes-<split>.npy` in the prepared
dataset's directory (`<data_dir>/celeb_a/<version>/`), or in `cache_dir` when one is given
(e.g. when the dataset directory is read-only). `launch/prepare_celeba` writes the caches
right after preparing the dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from latent_jax import paths
from latent_jax.data import labels as labels_lib

NAME = "celeb_a"
SPLITS = ("train", "validation", "test")
IMAGE_SHAPE = (218, 178, 3)
SPLIT_SIZES = {"train": 162770, "validation": 19867, "test": 19962}

# The 40 attributes in the order of list_attr_celeba.txt (and of tfds' features).
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# The files tfds' celeb_a builder takes from its manual directory (the names in its
# checksums file), in the order of the official release.
MANUAL_FILES: tuple[str, ...] = (
    "img_align_celeba.zip",
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "identity_CelebA.txt",
)

CACHE_PREFIX = "latent_jax-attributes-"
IDENTITY_CACHE_PREFIX = "latent_jax-identity-"


class DatasetNotPreparedError(RuntimeError):
    """CelebA is not prepared as an ArrayRecord tfds dataset in the data directory."""


def default_data_dir() -> str:
    """tfds' default data directory (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`)."""
    from tensorflow_datasets.core import constants

    getter = getattr(constants, "get_default_data_dir", None)
    return getter() if getter is not None else constants.DATA_DIR


def resolve_data_dir(data_dir: str | None) -> str:
    return os.path.expanduser(str(data_dir)) if data_dir else default_data_dir()


def builder_version() -> str:
    import tensorflow_datasets as tfds

    return str(tfds.builder_cls(NAME).VERSION)


def manual_dir(data_dir: str | None) -> str:
    """Where tfds looks for the manually downloaded files: `<data_dir>/downloads/manual`."""
    return os.path.join(resolve_data_dir(data_dir), "downloads", "manual")


def not_prepared_message(data_dir: str | None, reason: str) -> str:
    root = resolve_data_dir(data_dir)
    manual = manual_dir(data_dir)
    files = "\n".join(f"       {name}" for name in MANUAL_FILES)
    dd = f" --data_dir {root}" if data_dir else ""
    return (
        f"CelebA ('{NAME}') is not prepared in {root}: {reason}\n"
        "tfds cannot download CelebA itself reliably (Google Drive refuses the files once its "
        "daily download quota is used up; tensorflow/datasets issues 1482, 3150, 3544). "
        "Prepare it once from the original files:\n"
        f"  1. Put these five files of the CelebA release (Align&Cropped images, "
        f"annotations, evaluation partition) in {manual}/ :\n{files}\n"
        f"  2. Run: launch/prepare_celeba --manual_dir {manual}{dd}\n"
        "     (it builds the ArrayRecord dataset through tfds' celeb_a builder; see "
        "docs/data.md).\n"
        "Or run on the embedded synthetic dataset instead: --config.data.name=synthetic_faces "
        "--config.data.preprocess=resize, or a config's ':synthetic' preset, e.g. "
        "--config=configs/introvac.py:synthetic."
    )


def _version_dir(data_dir: str | None) -> str:
    return os.path.join(resolve_data_dir(data_dir), NAME, builder_version())


def _diagnose(data_dir: str | None) -> str:
    """Why the data source could not be built, from what is on disk (reads only)."""
    vdir = _version_dir(data_dir)
    if paths.is_remote(vdir):
        return f"no readable prepared dataset at {vdir}."
    info = os.path.join(vdir, "dataset_info.json")
    if not os.path.exists(info):
        return f"no prepared dataset at {vdir}."
    try:
        import json

        with open(info) as f:
            fmt = json.load(f).get("fileFormat", "tfrecord")
    except (OSError, ValueError):
        fmt = "unknown"
    if fmt != "array_record":
        return (f"the dataset at {vdir} is prepared in the {fmt!r} file format, which has no "
                "random access. Prepare it again as ArrayRecord (move that directory away "
                "first).")
    return f"the dataset at {vdir} could not be opened."


def _data_source(split: str, data_dir: str | None, decoders: Any = None):
    import tensorflow_datasets as tfds

    return tfds.data_source(NAME, split=split, data_dir=data_dir, download=False,
                            decoders=decoders)


def open_split(split: str, data_dir: str | None = None):
    """tfds' random-access data source for one split, or `DatasetNotPreparedError`.

    Never downloads or prepares anything and creates nothing on disk.
    """
    if split not in SPLITS:
        raise ValueError(f"CelebA has splits {SPLITS}, not {split!r}")
    if data_dir and not paths.is_remote(data_dir) and not os.path.isdir(resolve_data_dir(data_dir)):
        raise DatasetNotPreparedError(not_prepared_message(
            data_dir, f"the data directory {resolve_data_dir(data_dir)} does not exist."))
    try:
        source = _data_source(split, data_dir)
        n = len(source)
    except Exception as e:  # tfds raises various types here (KeyError, NotImplementedError...)
        raise DatasetNotPreparedError(
            not_prepared_message(data_dir, _diagnose(data_dir)) + f"\n(tfds: {e!r})") from e
    if n <= 0:
        raise DatasetNotPreparedError(
            not_prepared_message(data_dir, f"its split {split!r} is empty."))
    keys = set(source.dataset_info.features["attributes"].keys())
    if keys != set(ATTRIBUTE_NAMES):
        raise DatasetNotPreparedError(not_prepared_message(
            data_dir, f"its attributes {sorted(keys)} are not CelebA's 40 attributes."))
    return source


# ---------------------------------------------------------------------------------------------
# Per-record tables (attributes for subset balancing, identities for the identity splits),
# cached on disk.

@dataclasses.dataclass(frozen=True)
class _TableKind:
    """One per-record table: its cache file prefix, dtype, columns (None: one value a record)
    and how one record's row is read."""

    name: str
    prefix: str
    dtype: Any
    columns: int | None
    read: Callable[[Mapping[str, Any]], Any]

    def shape(self, n: int) -> tuple[int, ...]:
        return (n,) if self.columns is None else (n, self.columns)


_ATTRIBUTES = _TableKind("attributes", CACHE_PREFIX, np.bool_, len(ATTRIBUTE_NAMES),
                         lambda r: [bool(r["attributes"][name]) for name in ATTRIBUTE_NAMES])
_IDENTITIES = _TableKind("identities", IDENTITY_CACHE_PREFIX, np.int64, None,
                         lambda r: int(r["identity"]["Identity_No"]))
_KINDS = (_ATTRIBUTES, _IDENTITIES)

_TABLES: dict[tuple[str, str, str, int], np.ndarray] = {}
_TABLES_LOCK = threading.Lock()


def _has_record_files(source, split: str) -> bool:
    """Whether the source's directory holds ArrayRecord files of `split` (False under
    `tfds.testing.mock_data`, whose sources have none)."""
    from etils import epath

    try:
        ds_dir = epath.Path(str(source.dataset_info.data_dir))
        return any(ds_dir.glob(f"{NAME}-{split}.array_record*"))
    except (OSError, AttributeError):
        return False


def _cache_path(kind: _TableKind, source, split: str, cache_dir: str | None, has_records: bool):
    """Where the table of `split` is cached, or None when it should not be written to disk.

    Without `cache_dir`, the cache lives next to the prepared ArrayRecord files; a source
    whose directory holds no such files (e.g. under `tfds.testing.mock_data`) gets no cache.
    """
    from etils import epath

    file_name = f"{kind.prefix}{split}.npy"
    if cache_dir:
        return epath.Path(cache_dir) / f"{NAME}-{builder_version()}-{file_name}"
    if not has_records:
        return None
    return epath.Path(str(source.dataset_info.data_dir)) / file_name


def _read_table(kind: _TableKind, path, n: int) -> np.ndarray | None:
    try:
        with path.open("rb") as f:
            table = np.load(f, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if table.dtype != kind.dtype or table.shape != kind.shape(n):
        logging.warning("ignoring cached table %s of shape %s and dtype %s (expected %s, %s)",
                        path, table.shape, table.dtype, kind.shape(n), np.dtype(kind.dtype))
        return None
    return table


def _write_table(path, table: np.ndarray) -> None:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            np.save(f, table, allow_pickle=False)
        tmp.replace(path)
    except OSError as e:
        logging.warning("could not cache the CelebA table at %s (%s); set "
                        "config.data.cache_dir to a writable directory to cache it", path, e)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _compute_tables(kinds: Sequence[_TableKind], split: str, data_dir: str | None,
                    num_records: int, *, skip_images: bool = True) -> list[np.ndarray]:
    """Reads every record once and fills each of `kinds`' tables.

    With `skip_images` the JPEGs are not decoded (about twice as fast); tfds' mock data
    sources cannot skip decoding without TensorFlow, so mocked sources pass False.
    """
    import tensorflow_datasets as tfds

    source = None
    if skip_images:
        try:
            source = _data_source(split, data_dir,
                                  decoders={"image": tfds.decode.SkipDecoding()})
            source[0]
        except Exception:  # pylint: disable=broad-except
            source = None
    if source is None:
        source = _data_source(split, data_dir)
    tables = [np.empty(kind.shape(num_records), kind.dtype) for kind in kinds]
    for i in range(num_records):
        record = source[i]
        for kind, table in zip(kinds, tables):
            table[i] = kind.read(record)
        if i and i % 20000 == 0:
            logging.info("CelebA %s: read %d / %d records", split, i, num_records)
    return tables


def _table(kind: _TableKind, split: str, data_dir: str | None, source,
           cache_dir: str | None) -> np.ndarray:
    """`kind`'s table of a split, from memory, from its cache, or read once from the records.
    A read fills every table kind whose cache is missing in the same pass over the records."""
    source = source if source is not None else open_split(split, data_dir)
    n = len(source)
    has_records = _has_record_files(source, split)
    paths_ = {k: _cache_path(k, source, split, cache_dir, has_records) for k in _KINDS}

    def key(k):
        p = paths_[k]
        return (k.prefix, str(p) if p is not None else f"memory:{resolve_data_dir(data_dir)}",
                split, n)

    with _TABLES_LOCK:
        if key(kind) in _TABLES:
            return _TABLES[key(kind)]
    path = paths_[kind]
    table = _read_table(kind, path, n) if path is not None and path.exists() else None
    if table is None:
        with _TABLES_LOCK:
            in_memory = {k.prefix for k in _KINDS if key(k) in _TABLES}
        missing = [k for k in _KINDS if k is kind or (
            k.prefix not in in_memory and (paths_[k] is None or not paths_[k].exists()))]
        logging.info("CelebA %s: reading %s of %d records (once; cached%s)", split,
                     " and ".join(k.name for k in missing), n,
                     f" in {path.parent}" if path is not None else " in memory only")
        computed = _compute_tables(missing, split, data_dir, n, skip_images=has_records)
        for k, t in zip(missing, computed):
            t.setflags(write=False)
            if paths_[k] is not None:
                _write_table(paths_[k], t)
            with _TABLES_LOCK:
                _TABLES[key(k)] = t
        return computed[missing.index(kind)]
    table.setflags(write=False)
    with _TABLES_LOCK:
        _TABLES[key(kind)] = table
    return table


def attribute_table(split: str, data_dir: str | None = None, *, source=None,
                    cache_dir: str | None = None) -> np.ndarray:
    """Bool `[len(split), 40]` attribute table of a split, from the cache or computed once."""
    return _table(_ATTRIBUTES, split, data_dir, source, cache_dir)


def identity_column(split: str, data_dir: str | None = None, *, source=None,
                    cache_dir: str | None = None) -> np.ndarray:
    """int64 `[len(split)]`: every record's `identity` (CelebA's person id), from the cache or
    computed once (in the same pass as the attribute table when that is missing too)."""
    return _table(_IDENTITIES, split, data_dir, source, cache_dir)


def clear_memory_cache() -> None:
    """Forgets the attribute tables held in memory (the files on disk stay)."""
    with _TABLES_LOCK:
        _TABLES.clear()


# ---------------------------------------------------------------------------------------------
# The N most frequent identities, split inside each identity (Lr-LiVAE's identity classes).

IDENTITY = labels_lib.IDENTITY
# Version of the rule below (which identities, which image goes to which split): part of the
# judge's cache key and of every report, so results on other splits are never mixed.
IDENTITY_SPLIT_VERSION = "1"


def identity_split_rows(identities: Mapping[str, np.ndarray], num_identities: int, *,
                        validation_fraction: float, test_fraction: float, seed: int
                        ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split, `(official split index into SPLITS, row in that split, class)` of its images.

    CelebA's official partition puts each person in one split only, so it cannot test the
    classification of identities seen in training. Here every image of the three official
    splits counts: the `num_identities` persons with the most images (ties: the smaller
    identity number first) are the classes, class 0 the most frequent. Each person's images,
    in official order, are permuted by a generator seeded with `(seed, identity)`; the first
    `max(1, round(test_fraction * n))` go to 'test', the next `max(1, round(validation_fraction
    * n))` to 'validation', the rest (at least one) to 'train'. Rows are sorted in official
    order within each split. Pure numpy: the same columns always give the same split.
    """
    num_identities = int(num_identities)
    codes = np.concatenate([np.full(len(identities[s]), k, np.int64)
                            for k, s in enumerate(SPLITS)])
    rows = np.concatenate([np.arange(len(identities[s]), dtype=np.int64) for s in SPLITS])
    ids = np.concatenate([np.asarray(identities[s], np.int64) for s in SPLITS])
    persons, counts = np.unique(ids, return_counts=True)
    if num_identities > len(persons):
        raise ValueError(f"CelebA has {len(persons)} identities; {num_identities} were asked for")
    chosen = persons[np.lexsort((persons, -counts))][:num_identities]
    need = 3
    few = counts[np.searchsorted(persons, chosen)] < need
    if few.any():
        raise ValueError(f"the {num_identities} most frequent CelebA identities include "
                         f"{int(few.sum())} with fewer than {need} images, too few to split "
                         "into train, validation and test; ask for fewer identities")
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for cls, person in enumerate(chosen):
        mine = np.flatnonzero(ids == person)   # official order
        n = len(mine)
        n_test = max(1, int(round(test_fraction * n)))
        n_val = max(1, int(round(validation_fraction * n)))
        if n_test + n_val >= n:
            n_test, n_val = 1, 1
        order = np.random.default_rng([int(seed), int(person)]).permutation(mine)
        parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val],
                 "train": order[n_test + n_val:]}
        for split, idx in parts.items():
            out[split].append(np.stack([idx, np.full(len(idx), cls)], axis=-1))
    result = {}
    for split in SPLITS:
        pairs = np.concatenate(out[split]) if out[split] else np.zeros((0, 2), np.int64)
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        result[split] = (codes[pairs[:, 0]], rows[pairs[:, 0]], pairs[:, 1].astype(np.int64))
    return result


class IdentityRecords:
    """Random access to one split of CelebA's `num_identities` most frequent persons, split
    inside each person (`identity_split_rows`): `src[i] = {'image': uint8 [218, 178, 3],
    'attributes': {40 attributes: bool, 'Identity': class}}`. Picklable (grain workers)."""

    def __init__(self, split: str, data_dir: str | None = None, *, num_identities: int,
                 validation_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 cache_dir: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"CelebA has splits {SPLITS}, not {split!r}")
        self._sources = {s: open_split(s, data_dir) for s in SPLITS}
        columns = {s: identity_column(s, data_dir, source=src, cache_dir=cache_dir)
                   for s, src in self._sources.items()}
        self._codes, self._rows, self._classes = identity_split_rows(
            columns, num_identities, validation_fraction=validation_fraction,
            test_fraction=test_fraction, seed=seed)[split]
        self._data_dir, self._cache_dir = data_dir, cache_dir
        self.split = split
        self.num_identities = int(num_identities)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index) -> dict:
        index = int(index)
        record = self._sources[SPLITS[self._codes[index]]][int(self._rows[index])]
        attributes = dict(record["attributes"])
        attributes[IDENTITY] = int(self._classes[index])
        return {"image": record["image"], "attributes": attributes}

    def identity_table(self) -> np.ndarray:
        """int64 [n]: each image's class (0 = the most frequent person)."""
        return self._classes

    def attributes_table(self) -> np.ndarray:
        """bool [n, 40]: each image's attributes, in `ATTRIBUTE_NAMES` order."""
        tables = [attribute_table(s, self._data_dir, source=self._sources[s],
                                  cache_dir=self._cache_dir) for s in SPLITS]
        out = np.empty((len(self), len(ATTRIBUTE_NAMES)), np.bool_)
        for k, table in enumerate(tables):
            mine = self._codes == k
            out[mine] = table[self._rows[mine]]
        return out
