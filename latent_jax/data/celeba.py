"""CelebA through tfds' `celeb_a` builder, read as an ArrayRecord data source (no TensorFlow).

Records (tfds `celeb_a` 2.1.0): `image` uint8 (218, 178, 3), `attributes` a dict of 40 bools,
`landmarks`, `identity`. Splits `train` / `validation` / `test` are CelebA's official
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

import logging
import os
import threading
import uuid
from typing import Any

import numpy as np

from latent_jax import paths

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
# Attribute table (for subset balancing), cached on disk.

_TABLES: dict[tuple[str, str, int], np.ndarray] = {}
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


def _cache_path(source, split: str, cache_dir: str | None, has_records: bool):
    """Where the table of `split` is cached, or None when it should not be written to disk.

    Without `cache_dir`, the cache lives next to the prepared ArrayRecord files; a source
    whose directory holds no such files (e.g. under `tfds.testing.mock_data`) gets no cache.
    """
    from etils import epath

    file_name = f"{CACHE_PREFIX}{split}.npy"
    if cache_dir:
        return epath.Path(cache_dir) / f"{NAME}-{builder_version()}-{file_name}"
    if not has_records:
        return None
    return epath.Path(str(source.dataset_info.data_dir)) / file_name


def _read_table(path, n: int) -> np.ndarray | None:
    try:
        with path.open("rb") as f:
            table = np.load(f, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if table.dtype != np.bool_ or table.shape != (n, len(ATTRIBUTE_NAMES)):
        logging.warning("ignoring attribute cache %s of shape %s (expected (%d, %d))",
                        path, table.shape, n, len(ATTRIBUTE_NAMES))
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
        logging.warning("could not cache the CelebA attribute table at %s (%s); set "
                        "config.data.cache_dir to a writable directory to cache it", path, e)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def compute_attribute_table(split: str, data_dir: str | None, num_records: int, *,
                            skip_images: bool = True) -> np.ndarray:
    """Reads every record's attributes: bool `[num_records, 40]` in `ATTRIBUTE_NAMES` order.

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
    table = np.empty((num_records, len(ATTRIBUTE_NAMES)), np.bool_)
    for i in range(num_records):
        attrs = source[i]["attributes"]
        table[i] = [bool(attrs[name]) for name in ATTRIBUTE_NAMES]
        if i and i % 20000 == 0:
            logging.info("CelebA %s: read the attributes of %d / %d records", split, i,
                         num_records)
    return table


def attribute_table(split: str, data_dir: str | None = None, *, source=None,
                    cache_dir: str | None = None) -> np.ndarray:
    """Bool `[len(split), 40]` attribute table of a split, from the cache or computed once."""
    source = source if source is not None else open_split(split, data_dir)
    n = len(source)
    has_records = _has_record_files(source, split)
    path = _cache_path(source, split, cache_dir, has_records)
    key = (str(path) if path is not None else f"memory:{resolve_data_dir(data_dir)}", split, n)
    with _TABLES_LOCK:
        if key in _TABLES:
            return _TABLES[key]
    table = _read_table(path, n) if path is not None and path.exists() else None
    if table is None:
        logging.info("CelebA %s: reading the attributes of %d records (once; cached%s)", split,
                     n, f" in {path}" if path is not None else " in memory only")
        table = compute_attribute_table(split, data_dir, n, skip_images=has_records)
        if path is not None:
            _write_table(path, table)
    table.setflags(write=False)
    with _TABLES_LOCK:
        _TABLES[key] = table
    return table


def clear_memory_cache() -> None:
    """Forgets the attribute tables held in memory (the files on disk stay)."""
    with _TABLES_LOCK:
        _TABLES.clear()
