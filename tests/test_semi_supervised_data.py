"""Semi-supervised batches (`config.data.semi_supervised`), p(y) frequencies and Hair_MULTI."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from latent_jax import data
from latent_jax.data import labels as labels_lib
from latent_jax.data import synthetic_faces


def config(num_train=40, fraction=0.25, seed=0, labels=("Male", "Smiling", "Hair_MULTI")):
    c = ml_collections.ConfigDict(data.default_data_config().to_dict(), type_safe=False)
    c.image_size = 16
    c.labels = labels
    c.synthetic.num_train = num_train
    c.synthetic.num_validation = 8
    c.synthetic.num_test = 8
    c.read_threads = 0
    c.prefetch = 0
    c.semi_supervised.fraction = fraction
    c.semi_supervised.seed = seed
    return c


def _index_of_images(c):
    src = data.make_source(c, "train")
    items = [src[i] for i in range(len(src))]
    return {it["image"].tobytes(): i for i, it in enumerate(items)}, items


def _collect(c, steps, batch=8, seed=0):
    it = data.make_train_iterator(c, global_batch_size=batch, seed=seed)
    return [next(it) for _ in range(steps)]


def test_fraction_hides_labels_of_a_seeded_subset_and_keeps_the_rest():
    c = config(num_train=40, fraction=0.25)
    index, items = _index_of_images(c)
    expected = set(data.supervised_positions(40, 0.25, 0).tolist())
    assert len(expected) == 10
    batches = _collect(c, 40)
    seen_labeled, seen_unlabeled = set(), set()
    for b in batches:
        assert b["labeled"].dtype == np.bool_ and b["labeled"].shape == (8,)
        assert b["labeled"].all() or not b["labeled"].any()   # wholly (un)supervised batches
        for img, lab, flag in zip(b["image"], b["label"], b["labeled"]):
            i = index[(np.round(img * 255.0)).astype(np.uint8).tobytes()]
            if flag:
                seen_labeled.add(i)
                np.testing.assert_array_equal(lab, items[i]["label"])
            else:
                seen_unlabeled.add(i)
                assert not lab.any()
    assert seen_labeled == expected
    assert seen_unlabeled == set(range(40)) - expected
    # supervised batches at the rate |S| / n, evenly spread
    flags = np.array([bool(b["labeled"][0]) for b in batches])
    assert flags.sum() == 10
    assert np.all(np.diff(np.flatnonzero(flags)) == 4)
    # the subset depends on the seed, deterministically
    assert set(data.supervised_positions(40, 0.25, 0).tolist()) == expected
    assert set(data.supervised_positions(40, 0.25, 1).tolist()) != expected


def test_fraction_one_labels_everything_and_small_supervised_sets_wrap_around():
    batches = _collect(config(num_train=24, fraction=1.0), 4)
    assert all(b["labeled"].all() for b in batches)
    # 0.05 of 40 = 2 supervised examples, fewer than a batch: they repeat within the batch
    c = config(num_train=40, fraction=0.05)
    index, _ = _index_of_images(c)
    sup = [b for b in _collect(c, 40) if b["labeled"][0]]
    assert len(sup) == 2
    rows = {index[(np.round(img * 255)).astype(np.uint8).tobytes()] for img in sup[0]["image"]}
    assert rows == set(data.supervised_positions(40, 0.05, 0).tolist())


def test_no_fraction_means_no_labeled_key():
    c = config(fraction=None)
    b = _collect(c, 1)[0]
    assert "labeled" not in b and b["label"].any()


def test_semi_supervised_iterator_resumes_exactly():
    c = config(num_train=40, fraction=0.2)
    it = data.make_train_iterator(c, global_batch_size=8, seed=5)
    for _ in range(7):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(9)]
    resumed = data.make_train_iterator(c, global_batch_size=8, seed=5)
    resumed.set_state(state)
    for x, y in zip(expected, [next(resumed) for _ in range(9)]):
        for k in ("image", "label", "labeled"):
            np.testing.assert_array_equal(x[k], y[k])


def test_process_shares_make_up_the_global_batch():
    c = config(num_train=40, fraction=0.5)
    whole = _collect(c, 6)
    halves = [data.make_train_iterator(c, global_batch_size=8, seed=0, process_index=p,
                                       process_count=2) for p in (0, 1)]
    for b in whole:
        parts = [next(h) for h in halves]
        np.testing.assert_array_equal(b["image"], np.concatenate([p["image"] for p in parts]))
        np.testing.assert_array_equal(b["labeled"], np.concatenate([p["labeled"] for p in parts]))


def test_label_frequencies_are_those_of_the_supervised_set():
    c = config(num_train=300, fraction=0.1)
    freq = data.label_frequencies(c)
    table = synthetic_faces.attributes_table(0, "train", 300)
    cols = labels_lib.table_as_mapping(table, synthetic_faces.ATTRIBUTES)
    sup = data.supervised_positions(300, 0.1, 0)
    male = cols["Male"][sup].mean()
    np.testing.assert_allclose(freq["Male"], [1 - male, male])
    hair = labels_lib.label_values("Hair_MULTI", cols)[sup]
    np.testing.assert_allclose(freq["Hair_MULTI"], np.bincount(hair, minlength=6) / 30)
    assert freq["Hair_MULTI"].shape == (6,)
    # without semi-supervision: the whole training split
    full = data.label_frequencies(config(num_train=300, fraction=None))
    np.testing.assert_allclose(full["Male"][1], cols["Male"].mean())


def test_hair_multi_classes():
    names = labels_lib.HAIR_MULTI_CLASSES
    def attrs(*on):
        return {n: np.array(n in on) for n in names}
    assert labels_lib.label_kind("Hair_MULTI") == labels_lib.CATEGORICAL
    assert labels_lib.num_classes("Hair_MULTI") == 6
    assert int(labels_lib.label_values("Hair_MULTI", attrs("Blond_Hair"))) == 2
    assert int(labels_lib.label_values("Hair_MULTI", attrs("Gray_Hair"))) == 4
    assert int(labels_lib.label_values("Hair_MULTI", attrs())) == 5
    assert int(labels_lib.label_values("Hair_MULTI", attrs("Bald", "Gray_Hair"))) == 0
    assert int(labels_lib.label_values("Hair_MULTI", attrs("Black_Hair", "Brown_Hair"))) == 1


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1, True])
def test_bad_fraction_names_the_key(value):
    c = config(fraction=value)
    with pytest.raises(ValueError, match=r"config\.data\.semi_supervised\.fraction"):
        data.get_data_spec(c)


def test_validation_from_train_holds_out_the_last_training_examples():
    c = config(num_train=40, fraction=None)
    c.validation_from_train = 10
    spec = data.get_data_spec(c)
    assert spec.num_examples["train"] == 30 and spec.num_examples["validation"] == 10
    faces = synthetic_faces.SyntheticFaces("train", 16, 0, 40)
    val = data.make_source(c, "validation")
    tr = data.make_source(c, "train")
    np.testing.assert_array_equal(val[0]["image"], faces[30]["image"])
    np.testing.assert_array_equal(tr[29]["image"], faces[29]["image"])
    # the supervised subset and p(y) are drawn from the 30 remaining training examples
    c.semi_supervised.fraction = 0.5
    table = synthetic_faces.attributes_table(0, "train", 40)[:30]
    male = table[:, synthetic_faces.ATTRIBUTES.index("Male")][data.supervised_positions(30, 0.5, 0)]
    np.testing.assert_allclose(data.label_frequencies(c)["Male"][1], male.mean())
    # with subset balancing the balanced rows are taken inside the held-out ranges
    c.semi_supervised.fraction = None
    c.subset.positives = ("Male",)
    c.subset.ratio = 1.0
    val = data.make_source(c, "validation")
    assert np.all(val.indices >= 30)
    assert np.all(data.make_source(c, "train").indices < 30)
    c.validation_from_train = 40
    with pytest.raises(ValueError, match=r"config\.data\.validation_from_train"):
        data.get_data_spec(c)
