"""CelebA: preprocessing geometry, labels, balancing, per-process shares, preparation.

Three levels, none needing the real CelebA files:
- the preprocessing functions on synthetic arrays;
- the real tfds `celeb_a` data-source path under `tfds.testing.mock_data` (random records);
- a tiny CelebA built by `launch/prepare_celeba` from five fake files in the original format
  (tfds' real builder, real ArrayRecord files), whose images and attributes are known.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from latent_jax import data
from latent_jax.data import celeba
from latent_jax.data import labels as labels_lib
from latent_jax.data import pipeline
from latent_jax.data import preprocess as pp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPARE = os.path.join(REPO, "launch", "prepare_celeba")
H, W = celeba.IMAGE_SHAPE[:2]


def celeba_config(**overrides):
    c = data.default_data_config()
    c.name = "celeb_a"
    c.image_size = 32
    c.preprocess = "center_crop"
    c.read_threads = 0
    c.prefetch = 0
    c.update_from_flattened_dict(overrides)
    return c


def tree_snapshot(root) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# Preprocessing geometry on synthetic arrays.

def coordinate_image(h=H, w=W) -> np.ndarray:
    """Red = column index, green = row index (both < 256), blue = 0."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    img[..., 1] = np.arange(h, dtype=np.uint8)[:, None]
    return img


def expected_source_coordinates(method: str, size: int):
    """Source (row, col) of each output pixel centre, in pixel-centre coordinates."""
    c = np.arange(size) + 0.5
    if method == "introvac_crop":  # 218x178 -> 256x256, rows/cols 32..224, -> size
        u = 32 + c * 192 / size
        return u * H / 256 - 0.5, u * W / 256 - 0.5
    if method == "center_crop":  # rows 20..198, all 178 columns, -> size
        return 20 + c * W / size - 0.5, c * W / size - 0.5
    if method == "resize":
        return c * H / size - 0.5, c * W / size - 0.5
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["introvac_crop", "center_crop", "resize"])
@pytest.mark.parametrize("size", [32, 64, 37, 256])
def test_preprocess_geometry_on_coordinate_image(method, size):
    out = pp.preprocess(coordinate_image(), method, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    rows, cols = expected_source_coordinates(method, size)
    inner = slice(2, -2)
    # Bilinear filters reproduce a linear ramp exactly, so only uint8 rounding remains: 0.5
    # per resize, up to 0.75 when introvac_crop's second resize interpolates (upscales) the
    # rounded 256x256 intermediate. A crop box off by one source pixel shifts values by 1.
    tol = 0.8 if (method == "introvac_crop" and size > 192) else 0.6
    err_col = out[..., 0].astype(float) - cols[None, :]
    err_row = out[..., 1].astype(float) - rows[:, None]
    assert np.abs(err_col[inner, inner]).max() <= tol
    assert np.abs(err_row[inner, inner]).max() <= tol


def test_introvac_crop_drops_the_border_and_keeps_the_box():
    img = np.zeros((H, W, 3), np.uint8)
    # Source rectangle that maps inside the 256-space box (32..224): rows 28..190, cols 23..155.
    img[28:191, 23:156] = 255
    out = pp.introvac_crop(img, 64)
    assert out[1:-1, 1:-1].min() >= 250          # the box is all white...
    img2 = np.full((H, W, 3), 255, np.uint8)
    img2[28:191, 23:156] = 0
    assert pp.introvac_crop(img2, 64)[1:-1, 1:-1].max() <= 5  # ...and the border is gone


def test_center_crop_is_the_central_square():
    img = np.zeros((H, W, 3), np.uint8)
    img[20:198] = 200                      # the central 178 rows
    out = pp.center_crop(img, 178)         # same size: a pure crop
    assert (out == 200).all()
    img[19] = 50
    img[198] = 50
    assert (pp.center_crop(img, 178) == 200).all()


def test_resize_downscale_is_antialiased():
    # A one-pixel checkerboard averages to grey when shrunk 4x (point sampling would not).
    img = ((np.indices((128, 128)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    out = pp.resize(img, 32).astype(float)
    assert np.abs(out - 127.5).max() < 20


# ---------------------------------------------------------------------------------------------
# Labels.

def test_derived_facial_hair_truth_table():
    for no_beard in (False, True):
        for goatee in (False, True):
            for mustache in (False, True):
                attrs = {"No_Beard": no_beard, "Goatee": goatee, "Mustache": mustache,
                         "Eyeglasses": True}
                expect = (not no_beard) or goatee or mustache
                got = labels_lib.compute_labels(("FacialHair", "Eyeglasses", "Beard"), attrs)
                np.testing.assert_array_equal(got, [expect, 1.0, not no_beard])
    assert labels_lib.constituents("FacialHair") == ("No_Beard", "Goatee", "Mustache")
    assert labels_lib.constituents("Beard") == ("No_Beard",)
    assert labels_lib.constituents("Eyeglasses") == ("Eyeglasses",)


def test_derived_labels_vectorised_over_a_table():
    table = np.array([[True, False, False], [True, True, False], [False, False, False],
                      [True, False, True]])
    cols = labels_lib.table_as_mapping(table, ("No_Beard", "Goatee", "Mustache"))
    np.testing.assert_array_equal(labels_lib.label_values("FacialHair", cols),
                                  [False, True, True, True])


# ---------------------------------------------------------------------------------------------
# The tfds data-source path under tfds' mock.

def mock_records(n, split="train"):
    src = tfds.data_source("celeb_a", split=split, download=False)
    return [src[i] for i in range(n)]


def test_mock_spec_batches_and_label_order():
    n = 24
    cfg = celeba_config(labels=("FacialHair", "Eyeglasses", "Smiling"),
                        preprocess="introvac_crop")
    with tfds.testing.mock_data(num_examples=n):
        spec = data.get_data_spec(cfg)
        assert spec.name == "celeb_a"
        assert spec.image_shape == (32, 32, 3)
        assert spec.label_names == ("FacialHair", "Eyeglasses", "Smiling")
        assert set(celeba.ATTRIBUTE_NAMES) <= set(spec.attribute_names)
        assert {"Beard", "FacialHair"} <= set(spec.attribute_names)
        assert dict(spec.num_examples) == {"train": n, "validation": n, "test": n}

        src = data.make_source(cfg, "train")
        records = mock_records(n)
        for i in range(n):
            a = records[i]["attributes"]
            fh = (not a["No_Beard"]) or a["Goatee"] or a["Mustache"]
            ex = src[i]
            np.testing.assert_array_equal(ex["label"], [fh, a["Eyeglasses"], a["Smiling"]])
            np.testing.assert_array_equal(ex["image"], pp.introvac_crop(records[i]["image"], 32))

        it = data.make_train_iterator(cfg, global_batch_size=8, seed=1)
        batch = next(it)
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert batch["image"].max() > 0.5   # random mock pixels, not all dark
        assert batch["label"].shape == (8, 3) and batch["label"].dtype == np.float32
        assert set(np.unique(batch["label"])) <= {0.0, 1.0}


def positives_of(records, names):
    return np.array([any(labels_lib.label_values(l, r["attributes"]) for l in names)
                     for r in records])


def test_mock_balancing_keeps_positives_and_draws_random_negatives():
    n = 200
    with tfds.testing.mock_data(num_examples=n):
        records = mock_records(n)
        positives = ("Eyeglasses", "Beard")   # positive for ANY: about 3/4 of the mock's
        pos = positives_of(records, positives)
        n_pos = int(pos.sum())
        assert pos.sum() > positives_of(records, ("Eyeglasses",)).sum()
        ratio = 0.2
        k = round(ratio * n_pos)
        assert 10 < k < (~pos).sum() - 10
        cfg = celeba_config(**{"subset.positives": positives,
                               "subset.ratio": ratio, "subset_seed": 7})
        src = data.make_source(cfg, "train")
        idx = src.indices
        assert len(src) == n_pos + k
        assert set(np.flatnonzero(pos)) <= set(idx)               # every positive kept
        neg = np.array(sorted(set(idx) - set(np.flatnonzero(pos))))
        assert len(neg) == k
        assert not pos[neg].any()
        assert list(neg) != list(np.flatnonzero(~pos)[:k])       # not the first k in file order
        # Deterministic for a seed, different for another.
        np.testing.assert_array_equal(data.make_source(cfg, "train").indices, idx)
        cfg.subset_seed = 8
        assert list(data.make_source(cfg, "train").indices) != list(idx)
        cfg.subset_seed = 7
        # Splits draw independently (the mock's splits hold identical records).
        assert list(data.make_source(cfg, "validation").indices) != list(idx)
        # The spec counts the subset, and labels still come from the selected records.
        assert data.get_data_spec(cfg).num_examples["train"] == n_pos + k
        cfg.labels = ("Eyeglasses",)
        ex = data.make_source(cfg, "train")[3]
        assert ex["label"][0] == float(records[idx[3]]["attributes"]["Eyeglasses"])
        # apply_subset=False gives the whole split.
        assert len(data.make_source(cfg, "train", apply_subset=False)) == n


def test_balanced_subset_indices_unit():
    names = ("A", "B")
    table = np.zeros((100, 2), bool)
    table[:10, 0] = True           # 10 positives for A
    table[95:, 1] = True           # 5 for B
    for ratio, expect_neg in [(0.0, 0), (1.0, 15), (2.0, 30), (100.0, 85)]:
        idx = pipeline.balanced_subset_indices(table, names, ("A", "B"), ratio, 0, "train")
        assert set(range(10)) | set(range(95, 100)) <= set(idx)
        assert len(idx) == 15 + expect_neg
        assert np.all(np.diff(idx) > 0)
    idx = pipeline.balanced_subset_indices(table, names, (), 1.0, 0, "train")
    np.testing.assert_array_equal(idx, np.arange(100))


def test_mock_process_shares_are_disjoint_and_cover_the_global_batch():
    n, gb = 40, 12   # 3 steps per epoch; 4 rows dropped per epoch
    cfg = celeba_config(image_size=16, preprocess="resize")
    with tfds.testing.mock_data(num_examples=n):
        whole = data.make_train_iterator(cfg, global_batch_size=gb, seed=5)
        shares = [data.make_train_iterator(cfg, global_batch_size=gb, seed=5,
                                           process_index=p, process_count=3) for p in range(3)]
        for _ in range(7):  # across two epoch boundaries
            g = next(whole)
            parts = [next(s) for s in shares]
            assert all(p["image"].shape[0] == gb // 3 for p in parts)
            np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]),
                                          g["image"])
            np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]),
                                          g["label"])
    # The record indices behind the shares: disjoint, and a global batch has no repeats.
    streams = [pipeline._ProcessShareOfEpochs(pipeline.grain.MapDataset.source(list(range(n))),
                                              global_batch_size=gb, seed=5, process_index=p,
                                              process_count=3) for p in range(3)]
    for step in range(6):
        rows = [streams[p].parent_index(step * 4 + r) for p in range(3) for r in range(4)]
        assert len(set(rows)) == gb
    with pytest.raises(ValueError, match="global_batch_size"):
        with tfds.testing.mock_data(num_examples=n):
            data.make_train_iterator(cfg, global_batch_size=10, seed=0, process_count=3)


# ---------------------------------------------------------------------------------------------
# Not prepared.

def test_not_prepared_raises_and_creates_nothing(tmp_path):
    absent = tmp_path / "absent"
    empty = tmp_path / "empty"
    empty.mkdir()
    before = tree_snapshot(tmp_path)
    for d in (absent, empty):
        cfg = celeba_config(data_dir=str(d), **{"subset.positives": ("Eyeglasses",)})
        with pytest.raises(data.DatasetNotPreparedError) as e:
            data.get_data_spec(cfg)
        msg = str(e.value)
        assert isinstance(e.value, RuntimeError)
        assert "launch/prepare_celeba --manual_dir" in msg
        assert os.path.join(str(d), "downloads", "manual") in msg
        for name in celeba.MANUAL_FILES:
            assert name in msg
        assert "--config.data.name=synthetic_faces" in msg and ":synthetic" in msg
        with pytest.raises(data.DatasetNotPreparedError):
            data.make_train_iterator(cfg, global_batch_size=4, seed=0)
    assert tree_snapshot(tmp_path) == before
    assert not absent.exists()
    # Config errors are reported before looking for the data.
    with pytest.raises(ValueError, match="config.data.labels: unknown attribute 'Eyeglases'"):
        data.get_data_spec(celeba_config(data_dir=str(absent), labels=("Eyeglases",)))


def test_tfrecord_dataset_is_reported(tmp_path):
    vdir = tmp_path / "celeb_a" / celeba.builder_version()
    vdir.mkdir(parents=True)
    (vdir / "dataset_info.json").write_text('{"name": "celeb_a", "fileFormat": "tfrecord"}')
    with pytest.raises(data.DatasetNotPreparedError, match="'tfrecord' file format"):
        data.get_data_spec(celeba_config(data_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# launch/prepare_celeba and the real ArrayRecord path on a tiny fake CelebA.

SPLIT_OF = [0] * 10 + [1] * 3 + [2] * 3   # 16 images: train 10, validation 3, test 3


def fake_attributes(i: int) -> dict[str, bool]:
    rng = np.random.default_rng(i)
    a = {name: bool(v) for name, v in zip(celeba.ATTRIBUTE_NAMES, rng.random(40) < 0.3)}
    a["Eyeglasses"] = i % 4 == 0
    a["No_Beard"] = i % 5 != 1
    a["Goatee"] = i % 7 == 2
    a["Mustache"] = i == 3
    return a


def fake_image(i: int) -> np.ndarray:
    img = coordinate_image()
    img[..., 2] = 10 * i    # identifies the image
    return img


def write_fake_celeba(manual) -> None:
    manual.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(SPLIT_OF))]
    with zipfile.ZipFile(manual / "img_align_celeba.zip", "w") as z:
        for i, name in enumerate(names):
            buf = io.BytesIO()
            Image.fromarray(fake_image(i)).save(buf, "JPEG", quality=100, subsampling=0)
            z.writestr(f"img_align_celeba/{name}", buf.getvalue())
    with open(manual / "list_eval_partition.txt", "w") as f:
        f.writelines(f"{name} {s}\n" for name, s in zip(names, SPLIT_OF))
    with open(manual / "list_attr_celeba.txt", "w") as f:
        f.write(f"{len(names)}\n{' '.join(celeba.ATTRIBUTE_NAMES)}\n")
        for i, name in enumerate(names):
            a = fake_attributes(i)
            f.write(name + " " + " ".join("1" if a[k] else "-1" for k in celeba.ATTRIBUTE_NAMES)
                    + "\n")
    landmarks = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
                 "leftmouth_y rightmouth_x rightmouth_y")
    with open(manual / "list_landmarks_align_celeba.txt", "w") as f:
        f.write(f"{len(names)}\n{landmarks}\n")
        f.writelines(f"{name} " + " ".join([str(i)] * 10) + "\n" for i, name in enumerate(names))
    with open(manual / "identity_CelebA.txt", "w") as f:
        f.writelines(f"{name} {i % 3 + 1}\n" for i, name in enumerate(names))


def run_prepare(*args):
    return subprocess.run([sys.executable, PREPARE, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def prepared_celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    write_fake_celeba(root / "data" / "downloads" / "manual")
    # The fake files are not the release's, so their checksums are accepted explicitly.
    result = run_prepare("--data_dir", str(root / "data"), "--skip_checksums")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "splits: train 10, validation 3, test 3" in result.stdout
    return root / "data"


def identity_of(example_image) -> int:
    return int(round(float(np.median(example_image[..., 2])) / 10))


def test_prepare_help_and_missing_files(tmp_path):
    result = run_prepare("--help")
    assert result.returncode == 0 and "--manual_dir" in result.stdout
    result = run_prepare("--data_dir", str(tmp_path / "d"))
    assert result.returncode == 2
    for name in celeba.MANUAL_FILES:
        assert name in result.stderr
    assert os.path.join(str(tmp_path / "d"), "downloads", "manual") in result.stderr
    assert list(tmp_path.iterdir()) == []   # nothing created


def test_prepared_dataset_records_labels_and_geometry(prepared_celeba):
    celeba.clear_memory_cache()
    cfg = celeba_config(data_dir=str(prepared_celeba), labels=("FacialHair", "Eyeglasses"),
                        preprocess="introvac_crop", image_size=48)
    spec = data.get_data_spec(cfg)
    assert dict(spec.num_examples) == {"train": 10, "validation": 3, "test": 3}
    rows, cols = expected_source_coordinates("introvac_crop", 48)
    for split, ids in [("train", range(10)), ("test", range(13, 16))]:
        src = data.make_source(cfg, split)
        seen = []
        for k in range(len(src)):
            ex = src[k]
            i = identity_of(ex["image"])
            seen.append(i)
            a = fake_attributes(i)
            fh = (not a["No_Beard"]) or a["Goatee"] or a["Mustache"]
            np.testing.assert_array_equal(ex["label"], [fh, a["Eyeglasses"]])
            # JPEG (quality 100, no chroma subsampling) adds a little noise to the ramps.
            img = ex["image"].astype(float)
            assert np.abs(img[4:-4, 4:-4, 0] - cols[None, 4:-4]).max() <= 2.5
            assert np.abs(img[4:-4, 4:-4, 1] - rows[4:-4, None]).max() <= 2.5
        assert sorted(seen) == list(ids)


def test_prepared_dataset_attribute_cache_and_subset(prepared_celeba, tmp_path):
    celeba.clear_memory_cache()
    vdir = prepared_celeba / "celeb_a" / celeba.builder_version()
    cache = vdir / f"{celeba.CACHE_PREFIX}train.npy"
    assert cache.exists()   # written by the prepare script
    table = np.load(cache)
    assert table.shape == (10, 40) and table.dtype == bool
    src = data.make_source(celeba_config(data_dir=str(prepared_celeba), labels=()), "train")
    for k in range(10):
        a = fake_attributes(identity_of(src[k]["image"]))
        np.testing.assert_array_equal(table[k], [a[n] for n in celeba.ATTRIBUTE_NAMES])
    # A cache that is removed is computed again; with cache_dir it goes there instead.
    cache.unlink()
    cfg = celeba_config(data_dir=str(prepared_celeba),
                        **{"subset.positives": ("Eyeglasses",), "subset.ratio": 1.0})
    n_pos = int(table[:, celeba.ATTRIBUTE_NAMES.index("Eyeglasses")].sum())
    assert n_pos == 3   # images 0, 4, 8
    assert data.get_data_spec(cfg).num_examples["train"] == 2 * n_pos
    assert cache.exists()
    celeba.clear_memory_cache()
    cfg.cache_dir = str(tmp_path / "cache")
    assert len(data.make_source(cfg, "train")) == 2 * n_pos
    # The pass over the records that reads the attributes fills the identity column too.
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(
        f"celeb_a-{celeba.builder_version()}-{prefix}train.npy"
        for prefix in (celeba.CACHE_PREFIX, celeba.IDENTITY_CACHE_PREFIX))
    it = data.make_train_iterator(cfg, global_batch_size=4, seed=0)
    batch = next(it)
    assert batch["image"].shape == (4, 32, 32, 3)
    assert batch["label"][:, 0].sum() >= 1   # balanced: half the subset wears glasses


# ---------------------------------------------------------------------------------------------
# celeb_a_identities: the most frequent persons, split inside each person.

def identities_config(data_dir, num_identities=2, **overrides):
    c = celeba_config(name="celeb_a_identities", data_dir=str(data_dir), labels=("Identity",),
                      image_size=16, preprocess="resize")
    c.identities = ml_collections.ConfigDict(dict(num_identities=num_identities))
    c.update_from_flattened_dict(overrides)
    return c


def test_identity_split_rows_takes_the_most_frequent_persons_and_splits_each():
    rng = np.random.default_rng(0)
    # Person p has 3 + p images (p = 0..29), scattered over the official splits; person 100 has
    # as many as person 29 and loses the tie (larger number).
    people = np.concatenate([np.full(3 + p, p) for p in range(30)] + [np.full(32, 100)])
    rng.shuffle(people)
    columns = {"train": people[:300], "validation": people[300:400], "test": people[400:]}
    split = celeba.identity_split_rows(columns, 5, validation_fraction=0.1, test_fraction=0.2,
                                       seed=3)
    chosen = [29, 100, 28, 27, 26]   # 32 (29 before 100), 32, 31, 30, 29 images
    seen = []
    for name, (codes, rows, classes) in split.items():
        persons = np.array([columns[celeba.SPLITS[c]][r] for c, r in zip(codes, rows)])
        np.testing.assert_array_equal(persons, np.asarray(chosen)[classes])
        # Official order inside each split.
        order = codes * 10_000 + rows
        assert np.all(np.diff(order) > 0)
        seen += list(order)
        for k, person in enumerate(chosen):
            n = int((people == person).sum())
            expect = {"test": max(1, round(0.2 * n)), "validation": max(1, round(0.1 * n))}
            expect["train"] = n - expect["test"] - expect["validation"]
            assert int((classes == k).sum()) == expect[name]
    assert len(seen) == len(set(seen)) == sum(int((people == p).sum()) for p in chosen)
    again = celeba.identity_split_rows(columns, 5, validation_fraction=0.1, test_fraction=0.2,
                                       seed=3)
    other = celeba.identity_split_rows(columns, 5, validation_fraction=0.1, test_fraction=0.2,
                                       seed=4)
    for name in celeba.SPLITS:
        for a, b in zip(split[name], again[name]):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(split[s][1], other[s][1]) for s in celeba.SPLITS)
    with pytest.raises(ValueError, match="31 identities; 40 were asked for"):
        celeba.identity_split_rows(columns, 40, validation_fraction=0.1, test_fraction=0.1,
                                   seed=0)
    columns["test"] = np.concatenate([columns["test"], [7777, 7778, 7778]])
    with pytest.raises(ValueError, match="2 with fewer than 3 images"):
        celeba.identity_split_rows(columns, 33, validation_fraction=0.1, test_fraction=0.1,
                                   seed=0)


def test_prepared_dataset_identity_classes_split_inside_each_person(prepared_celeba):
    """The fake release's persons: image i is person i % 3 + 1 (6, 5 and 5 images, spread over
    the official splits). The two most frequent are person 1 (class 0) and person 2 (class 1,
    before person 3 on the tie); each keeps one test and one validation image."""
    celeba.clear_memory_cache()
    cfg = identities_config(prepared_celeba)
    spec = data.get_data_spec(cfg)
    assert dict(spec.num_examples) == {"train": 4 + 3, "validation": 2, "test": 2}
    assert dict(spec.num_classes) == {"Identity": 2}
    assert spec.version == f"identity-split-{celeba.IDENTITY_SPLIT_VERSION}"
    images = {}
    for split in celeba.SPLITS:
        src = data.make_source(cfg, split)
        images[split] = []
        for k in range(len(src)):
            i = identity_of(src[k]["image"])
            images[split].append(i)
            assert src[k]["label"].tolist() == [float(i % 3)]   # person 1 -> 0, 2 -> 1
        assert sorted({i % 3 for i in images[split]}) == [0, 1]   # both persons in every split
    everything = sorted(sum(images.values(), []))
    assert everything == [i for i in range(16) if i % 3 != 2]
    # The identity column is cached next to the prepared dataset, like the attributes.
    vdir = prepared_celeba / "celeb_a" / celeba.builder_version()
    for split in celeba.SPLITS:
        cached = np.load(vdir / f"{celeba.IDENTITY_CACHE_PREFIX}{split}.npy")
        records = celeba.open_split(split, str(prepared_celeba))
        np.testing.assert_array_equal(
            cached, [identity_of(records[k]["image"]) % 3 + 1 for k in range(len(records))])
    # Subsetting and the attribute table follow the view's rows.
    table = data.make_source(cfg, "train").records.attributes_table()
    for k, i in enumerate(images["train"]):
        a = fake_attributes(i)
        np.testing.assert_array_equal(table[k], [a[n] for n in celeba.ATTRIBUTE_NAMES])
    # A trained batch carries the class index.
    batch = next(data.make_train_iterator(cfg, global_batch_size=4, seed=0))
    assert batch["label"].shape == (4, 1) and set(np.unique(batch["label"])) <= {0.0, 1.0}


def test_identity_options_are_validated(prepared_celeba):
    with pytest.raises(ValueError, match="config.data.identities: only celeb_a_identities"):
        data.get_data_spec(_with_identities(celeba_config(data_dir=str(prepared_celeba))))
    with pytest.raises(ValueError, match="config.data.identities.test_fraction: must be in"):
        data.get_data_spec(identities_config(prepared_celeba, **{"identities.test_fraction": 0.7}))
    with pytest.raises(ValueError, match="config.data.identities.num_identities: must be an int"):
        data.get_data_spec(identities_config(prepared_celeba, num_identities=1))
    with pytest.raises(ValueError, match="3 identities; 4 were asked for"):
        data.get_data_spec(identities_config(prepared_celeba, num_identities=4))


def _with_identities(cfg):
    cfg.identities = ml_collections.ConfigDict(dict(num_identities=2))
    return cfg


@pytest.mark.parametrize("name", ["lrlivae", "cvae"])
def test_lrlivae_trains_on_celeba_identities(prepared_celeba, tmp_path, name):
    """The identity preset's data through the trainer: the class count comes from the data."""
    import jax

    from latent_jax import configlib, train

    cfg = configlib.sibling_config(os.path.join(REPO, "configs", f"{name}.py"),
                                   f"{name}.py").get_config("tiny")
    preset = configlib.sibling_config(os.path.join(REPO, "configs", "lrlivae.py"),
                                      "lrlivae.py").get_config("celeba_identities")
    assert preset.data.name == "celeb_a_identities" and preset.data.image_size == 64
    assert preset.data.identities.num_identities == 530
    cfg.data.name = "celeb_a_identities"
    cfg.data.data_dir = str(prepared_celeba)
    cfg.data.preprocess = "center_crop"
    cfg.data.labels = ("Identity",)
    cfg.data.identities = ml_collections.ConfigDict(dict(num_identities=2))
    cfg.batch_size = 4
    exp = train.Experiment(cfg, str(tmp_path / "run"))
    assert exp.method.label_classes == {"Identity": 2}
    states = exp.init_states()
    it = train.data_lib.make_train_iterator(exp.data, global_batch_size=4, seed=0)
    new, metrics, _ = exp.step_fn(0)(states, exp.next_batch(it), jax.random.PRNGKey(0))
    assert metrics and all(np.isfinite(float(v)) for v in metrics.values())
