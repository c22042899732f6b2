"""The grain pipeline on the embedded synthetic faces: spec, batches, epochs, resume, eval."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from latent_jax import data
from latent_jax.data import pipeline
from latent_jax.data import synthetic_faces
from latent_jax.errors import ConfigError


def config(num_train=48, **overrides):
    c = ml_collections.ConfigDict(data.default_data_config().to_dict(), type_safe=False)
    c.image_size = 16
    c.labels = ("Eyeglasses", "FacialHair", "Male")
    c.synthetic.num_train = num_train
    c.synthetic.num_validation = 37
    c.synthetic.num_test = 20
    c.read_threads = 2
    c.prefetch = 2
    c.update_from_flattened_dict(overrides)
    return c


def take(it, n):
    return [next(it) for _ in range(n)]


def row_keys(batch):
    return [b.tobytes() for b in batch["image"]]


def test_default_config_is_valid_and_complete():
    c = data.default_data_config()
    spec = data.get_data_spec(c)
    assert spec.name == "synthetic_faces"
    assert spec.image_shape == (64, 64, 3)
    assert spec.label_names == ("Eyeglasses",)
    assert dict(spec.num_examples) == {"train": 20000, "validation": 2000, "test": 2000}
    assert set(c.keys()) >= {"name", "image_size", "preprocess", "labels", "subset",
                             "subset_seed", "data_dir", "synthetic", "num_workers", "prefetch"}


def test_spec_and_subset_sizes():
    c = config()
    spec = data.get_data_spec(c)
    assert spec.image_shape == (16, 16, 3)
    assert spec.label_names == ("Eyeglasses", "FacialHair", "Male")
    assert set(synthetic_faces.ATTRIBUTES) <= set(spec.attribute_names)
    assert {"Beard", "FacialHair"} <= set(spec.attribute_names)
    assert dict(spec.num_examples) == {"train": 48, "validation": 37, "test": 20}

    c = config(num_train=400, **{"subset.positives": ("Eyeglasses",), "subset.ratio": 2.0})
    table = synthetic_faces.SyntheticFaces("train", 16, 0, 400).attributes_table()
    n_pos = int(table[:, synthetic_faces.ATTRIBUTES.index("Eyeglasses")].sum())
    assert 0 < n_pos < 200
    spec = data.get_data_spec(c)
    assert spec.num_examples["train"] == n_pos + round(2.0 * n_pos)
    src = data.make_source(c, "train")
    labels = np.stack([src[i]["label"] for i in range(len(src))])
    assert labels[:, 0].sum() == n_pos   # every positive kept


def test_source_items_follow_label_order():
    c = config(labels=("Male", "FacialHair", "Eyeglasses"))
    src = data.make_source(c, "validation")
    faces = synthetic_faces.SyntheticFaces("validation", 16, 0, 37)
    for i in (0, 5, 36):
        ex, face = src[i], faces[i]
        a = face["attributes"]
        fh = (not a["No_Beard"]) or a["Goatee"] or a["Mustache"]
        np.testing.assert_array_equal(ex["label"], [a["Male"], fh, a["Eyeglasses"]])
        np.testing.assert_array_equal(ex["image"], face["image"])
        assert ex["image"].dtype == np.uint8 and ex["label"].dtype == np.float32
    override = data.make_source(c, "validation", label_names=("Smiling",))
    assert override[0]["label"].tolist() == [float(faces[0]["attributes"]["Smiling"])]


def test_train_batches_and_epoch_reshuffle():
    c = config(num_train=50)      # 3 global batches of 16 per epoch, 2 examples dropped
    it = data.make_train_iterator(c, global_batch_size=16, seed=0)
    batches = take(it, 6)
    b = batches[0]
    assert b["image"].shape == (16, 16, 16, 3) and b["image"].dtype == np.float32
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0 and b["image"].std() > 0.05
    assert b["label"].shape == (16, 3) and b["label"].dtype == np.float32
    epoch0 = sum((row_keys(x) for x in batches[:3]), [])
    epoch1 = sum((row_keys(x) for x in batches[3:]), [])
    assert len(set(epoch0)) == 48 and len(set(epoch1)) == 48   # no repeats within an epoch
    assert epoch0 != epoch1                                    # reshuffled
    assert len(set(epoch0) | set(epoch1)) > 48                 # a different remainder dropped
    # The same seed gives the same stream, another seed another one.
    again = take(data.make_train_iterator(c, global_batch_size=16, seed=0), 6)
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x["image"], y["image"])
    other = next(data.make_train_iterator(c, global_batch_size=16, seed=1))
    assert row_keys(other) != row_keys(batches[0])


def test_state_resume_gives_identical_batches():
    c = config(num_train=40)
    it = data.make_train_iterator(c, global_batch_size=8, seed=3)
    take(it, 4)
    state = it.get_state()
    state = json.loads(json.dumps(state))   # checkpoints store it as JSON
    expected = take(it, 4)                   # crosses the epoch boundary at batch 5
    resumed = data.make_train_iterator(c, global_batch_size=8, seed=3)
    resumed.set_state(state)
    for x, y in zip(expected, take(resumed, 4)):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_worker_processes_give_the_same_stream_and_resume():
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    c = config(num_train=32)
    reference = take(data.make_train_iterator(c, global_batch_size=8, seed=2), 6)
    c.num_workers = 1
    it = data.make_train_iterator(c, global_batch_size=8, seed=2)
    got = take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    resumed = data.make_train_iterator(c, global_batch_size=8, seed=2)
    resumed.set_state(state)
    got += take(resumed, 3)
    for x, y in zip(reference, got):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_examples_are_read_once_and_served_from_memory_when_the_split_fits(monkeypatch):
    """config.data.memory_mb: the second and third epochs read no record (the renderer is
    not called) and give the batches of a run that reads every epoch; a split that does not
    fit is read every epoch; a pickled source (a grain worker's) starts without memory."""
    import pickle

    reads = []
    render = synthetic_faces.SyntheticFaces.__getitem__
    monkeypatch.setattr(synthetic_faces.SyntheticFaces, "__getitem__",
                        lambda self, i: reads.append(i) or render(self, i))
    batches = {}
    for memory_mb in (0, 1):    # 32 images of 16x16x3: 24 KiB
        reads.clear()
        it = data.make_train_iterator(config(num_train=32, memory_mb=memory_mb, prefetch=0),
                                      global_batch_size=8, seed=2)
        batches[memory_mb] = take(it, 12)   # three epochs, nothing read ahead
        assert len(reads) == (96 if memory_mb == 0 else 32), memory_mb
    for x, y in zip(batches[0], batches[1]):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])

    reads.clear()
    def source(c):    # the training stream's source
        return pipeline._source(pipeline.options(c), "train", ("Eyeglasses",), True,
                                memory_mb=c.memory_mb)

    src = source(config(num_train=2000, image_size=32, memory_mb=1))
    for _ in range(2):      # 2000 images of 32x32x3 need 6 MiB
        src[0], src[1]
    assert len(reads) == 4
    src = source(config(num_train=32, memory_mb=1))
    first = src[3]
    copy = pickle.loads(pickle.dumps(src))
    reads.clear()
    np.testing.assert_array_equal(copy[3]["image"], first["image"])
    np.testing.assert_array_equal(src[3]["image"], first["image"])
    assert len(reads) == 1     # the copy read it again, the original did not


def test_eval_batches_are_ordered_padded_and_masked():
    c = config()
    src = data.make_source(c, "validation")
    batches = list(data.iterate_eval_batches(c, "validation", 16))
    assert [int(b["mask"].sum()) for b in batches] == [16, 16, 5]
    last = batches[-1]
    assert last["image"].shape == (16, 16, 16, 3) and last["label"].shape == (16, 3)
    assert not last["mask"][5:].any() and last["mask"][:5].all()
    assert (last["image"][5:] == 0).all() and (last["label"][5:] == 0).all()
    images = np.concatenate([b["image"] for b in batches])[:37]
    labels = np.concatenate([b["label"] for b in batches])[:37]
    for i in (0, 17, 36):
        np.testing.assert_allclose(images[i], src[i]["image"] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(labels[i], src[i]["label"])
    limited = list(data.iterate_eval_batches(c, "validation", 16, max_examples=20))
    assert [int(b["mask"].sum()) for b in limited] == [16, 4]
    exact = list(data.iterate_eval_batches(c, "test", 10))
    assert [int(b["mask"].sum()) for b in exact] == [10, 10]


@pytest.mark.parametrize("key, value, message", [
    ("name", "celeba", "config.data.name: unknown dataset 'celeba'"),
    ("labels", ("Eyeglases",),
     "config.data.labels: unknown attribute 'Eyeglases' for dataset synthetic_faces; known: "),
    ("labels", "Eyeglasses", "config.data.labels: must be a tuple"),
    ("labels", ("Male", "Male"), "config.data.labels: repeated"),
    ("labels", ("Attractive",), "config.data.labels: unknown attribute 'Attractive'"),
    ("preprocess", "introvac_crop", "config.data.preprocess: 'introvac_crop' is not available "
                                    "for dataset synthetic_faces"),
    ("image_size", 8, "config.data.image_size"),
    ("subset.positives", ("Glasses",), "config.data.subset.positives: unknown attribute"),
    ("subset.ratio", -1.0, "config.data.subset.ratio"),
    ("subset_seed", -3, "config.data.subset_seed"),
    ("num_workers", -1, "config.data.num_workers"),
    ("synthetic.num_train", 0, "config.data.synthetic.num_train"),
])
def test_bad_configs_name_the_key(key, value, message):
    c = config(**{key: value})
    with pytest.raises(ValueError) as e:
        data.get_data_spec(c)
    assert message in str(e.value)


def test_bad_config_keys_and_arguments():
    c = config()
    c.labls = ("Eyeglasses",)
    with pytest.raises(ValueError, match=r"config.data.labls: unknown key"):
        data.get_data_spec(c)
    c = config(name="celeb_a", preprocess="none")
    with pytest.raises(ValueError, match="config.data.preprocess: 'none' is not available"):
        data.get_data_spec(c)
    c = config()
    with pytest.raises(ValueError, match="global_batch_size"):
        data.make_train_iterator(c, global_batch_size=49, seed=0)
    with pytest.raises(ValueError, match="label_names: unknown attribute 'Nose'"):
        data.make_source(c, "train", label_names=("Nose",))
    with pytest.raises(ValueError, match="split"):
        data.make_source(c, "valid")


def test_a_run_validates_its_data_config_once(tmp_path, monkeypatch):
    """The trainer validates `config.data` into `DataOptions` once and hands that to the
    pipeline, the method, the judge and the reports, which do not validate it again."""
    import tiny
    from latent_jax import train

    calls = []
    validate = pipeline._validate
    monkeypatch.setattr(pipeline, "_validate", lambda cfg: calls.append(1) or validate(cfg))
    config = tiny.config(num_steps=2, evaluate_at_end=True)
    config.eval.update(dict(num_examples=16, num_samples=8, batch_size=8))
    config.eval.judge.update(dict(steps=2, batch_size=8, test_examples=16,
                                  cache_dir=str(tmp_path / "judges")))
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert result and calls == [1]
    opts = pipeline.options(config.data)
    assert pipeline.options(opts) is opts and len(calls) == 2
    assert data.get_data_spec(opts).options is opts and len(calls) == 2
    bad = config.data.copy_and_resolve_references()
    bad.image_size = 0
    with pytest.raises(ConfigError, match="config.data.image_size"):
        pipeline.options(bad)
