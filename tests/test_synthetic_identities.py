"""synthetic_identities: identities fix the face, images vary only the nuisance; the label
Identity reaches the pipeline and the methods with the dataset's class count."""

import importlib.util
import os
import pickle

import numpy as np
import pytest

from latent_jax import configlib
from latent_jax.data import labels as labels_lib
from latent_jax.data import pipeline
from latent_jax.data import synthetic_faces as sf
from latent_jax.data import synthetic_identities as si
from latent_jax.errors import ConfigError

K = 7
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(name):
    spec = importlib.util.spec_from_file_location(f"identities_test_cfg_{name}",
                                                  os.path.join(REPO, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("tiny")


def _draws(split, n, k=K):
    return si._combined(0, split, np.arange(n), k, si.DEFAULT_NUM_UNSEEN)


def test_an_identity_fixes_every_trait_but_the_expression():
    ids, attr, par = _draws("train", 10 * K)
    table = si.attributes_table(0, "train", 10 * K, K)
    smiling = si.ATTRIBUTES.index("Smiling")
    identity_cols = [j for j, n in enumerate(sf._NUISANCE_NAMES) if n in si.IDENTITY_PARAMETERS]
    image_cols = [j for j, n in enumerate(sf._NUISANCE_NAMES) if n in si.IMAGE_PARAMETERS]
    assert set(si.IDENTITY_PARAMETERS) | set(si.IMAGE_PARAMETERS) == set(sf._NUISANCE_NAMES)
    for k in range(K):
        rows = np.flatnonzero(ids == k)
        assert len(rows) == 10
        fixed = np.delete(table[rows], smiling, axis=1)
        assert (fixed == fixed[0]).all(), k
        assert np.allclose(par[rows][:, identity_cols], par[rows[0]][identity_cols])
        # ... and the image's nuisance differs from one photograph to the next.
        assert np.ptp(par[rows][:, image_cols], axis=0).min() > 0
        traits = si.identity_traits(0, k)
        assert all(traits[a] == bool(fixed[0][j]) for j, a in
                   enumerate(a for a in si.ATTRIBUTES if a != "Smiling"))
    # Different identities differ.
    assert len({tuple(np.round(par[ids == k][0][identity_cols], 6)) for k in range(K)}) == K
    assert "Wearing_Hat" not in si.ATTRIBUTES


def test_splits_share_the_seen_identities_and_test_unseen_holds_new_ones():
    train = si.identity_table("train", 50, K)
    test = si.identity_table("test", 50, K)
    unseen = si.identity_table("test_unseen", 50, K, num_unseen=4)
    assert set(train) == set(test) == set(range(K))
    assert set(unseen) == set(range(K, K + 4))
    sheet = si.contact_sheet(split="test_unseen", identities=[K + 1], per_identity=3, size=16,
                             num_identities=K, num_unseen=4)
    assert sheet.shape == (16, 48, 3)
    assert np.array_equal(sheet[:, 16:32], si.render(0, "test_unseen", 5, 16, K, 4)[0])
    with pytest.raises(ValueError, match="has identities"):
        si.contact_sheet(identities=[K], num_identities=K)
    a = si.render(0, "train", 3, 32, K)
    b = si.render(0, "test", 3, 32, K)
    assert a[1]["Identity"] == b[1]["Identity"] == 3
    assert not np.array_equal(a[0], b[0])    # same person, another photograph


def test_records_tables_and_factors_agree_and_are_deterministic():
    src = si.SyntheticIdentities("validation", image_size=32, num_examples=12, num_identities=K)
    again = pickle.loads(pickle.dumps(src))
    table, ids, factors = src.attributes_table(), src.identity_table(), src.nuisance_table()
    assert factors.shape == (12, len(si.NUISANCE_FACTORS))
    names = list(si.NUISANCE_FACTORS)
    for i in range(12):
        r, r2 = src[i], again[i]
        assert np.array_equal(r["image"], r2["image"]) and r["image"].shape == (32, 32, 3)
        assert [r["attributes"][a] for a in si.ATTRIBUTES] == list(table[i])
        assert r["attributes"]["Identity"] == ids[i] == i % K
        assert factors[i, names.index("Smiling")] == float(r["attributes"]["Smiling"])
    _, _, par = _draws("validation", 12)
    assert np.allclose(factors[:, names.index("x")], sf._NUISANCE_LOW[0] + sf._NUISANCE_SPAN[0]
                       * par[:, 0])
    with pytest.raises(ValueError, match="unknown split"):
        si.SyntheticIdentities("dev")
    with pytest.raises(ValueError, match="num_identities"):
        si.SyntheticIdentities("train", num_identities=0)


def _config(**synthetic):
    c = configlib.base_config()
    c.data.name = "synthetic_identities"
    c.data.image_size = 16
    c.data.labels = ("Identity", "Eyeglasses")
    c.data.synthetic.update(dict(num_train=40, num_validation=8, num_test=8, num_identities=K))
    c.data.synthetic.update(synthetic)
    return c


def test_the_pipeline_serves_identity_as_a_categorical_label_with_the_datasets_count():
    c = _config()
    spec = pipeline.get_data_spec(c.data)
    assert spec.num_classes == {"Identity": K, "Eyeglasses": 2}
    assert labels_lib.label_kind("Identity") == labels_lib.CATEGORICAL
    src = pipeline.make_source(c.data, "train")
    labels = np.stack([src[i]["label"] for i in range(len(src))])
    assert np.array_equal(labels[:, 0], np.arange(40) % K)
    freq = pipeline.label_frequencies(c.data)
    assert freq["Identity"].shape == (K,) and np.isclose(freq["Identity"].sum(), 1.0)
    assert np.allclose(freq["Identity"], np.bincount(np.arange(40) % K) / 40)
    # Without the dataset the count is unknown, and the registry says so.
    with pytest.raises(ValueError, match="set by the dataset"):
        labels_lib.num_classes("Identity")
    with pytest.raises(ConfigError, match="num_identities"):
        pipeline.get_data_spec(_config(num_identities=1).data)
    other = configlib.base_config()
    other.data.labels = ("Identity",)
    with pytest.raises(ConfigError, match="unknown attribute 'Identity'"):
        pipeline.options(other.data)   # synthetic_faces has no identities


def test_methods_size_their_classes_from_the_data_spec():
    from latent_jax.methods import base

    c = _tiny("lrlivae")
    c.data = _config().data
    spec = pipeline.get_data_spec(c.data)
    lrlivae = base.get_method(c, spec, steps_per_epoch=5)
    assert lrlivae.classes.num_classes == 2 * K
    c2 = _tiny("ccvae")
    c2.data = _config().data
    ccvae = base.get_method(c2, spec, steps_per_epoch=5)
    assert ccvae.layout.num_classes == (K, 2)


def test_probes_of_a_trained_run_read_its_saved_config_and_split_its_code(tmp_path):
    """launch/probes.py on a 2-step lrlivae run: identity probes from z_s and z_u for seen and
    unseen identities, and a factor R^2 for each nuisance factor, written next to the reports."""
    import json
    import sys

    from latent_jax import train

    c = _tiny("lrlivae")
    c.data = _config().data
    c.data.labels = ("Identity",)
    c.update_from_flattened_dict({"num_steps": 2, "evaluate_at_end": False, "grid_size": 0})
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(c, workdir)
    sys.path.insert(0, os.path.join(REPO, "launch"))
    try:
        import probes as probes_script
    finally:
        sys.path.pop(0)
    result = probes_script.run(workdir, num_train=28, num_test=14)
    assert result["step"] == 2 and result["num_identities"] == K
    for part in ("seen", "unseen"):
        r = result[part]
        assert r["dims"] == {"relevant": c.model.z_s_dim, "irrelevant": c.model.z_u_dim}
        assert 0 <= r["class_accuracy"]["relevant"] <= 1
        assert set(r["factor_r2"]) == set(si.NUISANCE_FACTORS)
    assert result["seen"]["chance"] == pytest.approx(1 / K)
    # The unseen probe is fitted on the first 7 of 14 test_unseen images: 7 identities.
    assert result["unseen"]["chance"] == pytest.approx(1 / 7)
    saved = json.loads((tmp_path / "run" / "eval" / "probes_2.json").read_text())
    assert saved["seen"]["class_accuracy"] == result["seen"]["class_accuracy"]
    assert "Unseen identities" in (tmp_path / "run" / "eval" / "probes_2.md").read_text()


def test_identities_outside_the_label_set_are_in_training_but_never_labelled():
    """Sec. 3.6: with num_unlabeled_identities = 3 the training split also shows identities
    K + U .. K + U + 2 (neither seen labelled nor in test_unseen); no supervised batch holds
    one, the supervised share f is drawn among the others, and p(y) counts only them."""
    c = _config(num_train=100, num_unlabeled_identities=3)
    c.data.labels = ("Identity",)
    with pytest.raises(ConfigError, match="semi_supervised.fraction"):
        pipeline.options(c.data)
    c.data.semi_supervised.fraction = 0.5
    u = si.DEFAULT_NUM_UNSEEN
    ids = si.identity_table("train", 100, K, num_outside=3)
    assert set(ids) == set(range(K)) | {K + u, K + u + 1, K + u + 2}
    assert not set(ids) & set(si.identity_table("test_unseen", 100, K))
    src = pipeline.make_source(c.data, "train")
    assert src[K]["label"][0] == K + u     # the record keeps who it is
    # The attribute regions are those of the image the record shows (an outside identity's).
    regions = pipeline.attribute_regions(c.data, "train", K + 1)
    for i in (K - 1, K):
        expected = si.attribute_regions(0, "train", i, 16, K, num_outside=3)
        assert all(np.array_equal(regions[a][i], expected[a]) for a in si.ATTRIBUTES)
    assert not all(np.array_equal(regions[a][K], si.attribute_regions(0, "train", K, 16, K)[a])
                   for a in si.ATTRIBUTES)
    it = pipeline.make_train_iterator(c.data, global_batch_size=10, seed=0)
    seen_labelled, unlabelled = set(), 0
    for _ in range(30):
        b = next(it)
        if b["labeled"].all():
            seen_labelled |= set(np.round(b["label"][:, 0]).astype(int).tolist())
        else:
            assert not b["labeled"].any() and np.all(b["label"] == 0)
            unlabelled += 1
    assert seen_labelled and max(seen_labelled) < K and unlabelled
    labelable = int(np.sum(ids < K))
    freq = pipeline.label_frequencies(c.data)["Identity"]
    assert freq.shape == (K,) and np.isclose(freq.sum(), 1.0)
    positions = pipeline._supervised(ids < K, np.arange(100), pipeline.options(c.data))
    assert len(positions) == round(0.5 * labelable) and np.all(ids[positions] < K)
    other = configlib.base_config()
    other.data.synthetic.num_unlabeled_identities = 2
    other.data.semi_supervised.fraction = 0.5
    with pytest.raises(ConfigError, match="only synthetic_identities"):
        pipeline.options(other.data)
