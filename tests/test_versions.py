"""Content versions are honest: what they name has not changed under them.

The judge's cache key carries `synthetic_faces.VERSION` and `judge.JUDGE_VERSION`, and so do
the evaluation reports. A change to the renderer or to the judge's recipe that forgets its bump
would silently reuse judges cached for other data or another recipe, and mix figures measured
on different things. These tests make the forgotten bump fail.
"""

import hashlib
import inspect
import io
import os
import tokenize

import numpy as np
import pytest

import make_golden
from latent_jax.data import synthetic_faces as sf
from latent_jax.data import synthetic_identities as si
from latent_jax.evaluate import class_judge as class_judge_lib
from latent_jax.evaluate import judge as judge_lib

RENDER_CHANGED = (
    "synthetic_faces now renders differently from the reference renders of VERSION {v} "
    "(tests/golden): {what}. If the change is deliberate, bump synthetic_faces.VERSION (judge "
    "caches and reports carry it) and run `python tests/make_golden.py`; otherwise it is a "
    "regression.")


# Floating point may differ in the last bit between CPUs (vectorised transcendental functions);
# a real change moves many pixels by more than a couple of levels.
MAX_LEVELS, MAX_SHARE_OFF = 2, 0.002


def share_of_pixels_off(ref: np.ndarray, now: np.ndarray) -> float:
    """Fraction of the values of two uint8 images that differ by more than MAX_LEVELS."""
    return float(np.mean(np.abs(ref.astype(np.int16) - now.astype(np.int16)) > MAX_LEVELS))


def load_golden(path: str, dataset: str, version: str) -> dict:
    if not os.path.exists(path):
        pytest.fail(f"no reference renders for {dataset} VERSION {version}: run "
                    f"`python tests/make_golden.py` after bumping the version")
    with np.load(path) as f:
        return dict(f)


@pytest.fixture(scope="module")
def golden():
    return load_golden(make_golden.golden_path(), "synthetic_faces", sf.VERSION)


@pytest.fixture(scope="module")
def current():
    return make_golden.compute()


def test_attribute_names_and_labels_match_the_version(golden, current):
    assert list(golden["attribute_names"]) == list(sf.ATTRIBUTES), RENDER_CHANGED.format(
        v=sf.VERSION, what="the attribute list")
    for key in sorted(golden):
        if key.startswith("table_") or key.endswith("_attributes"):
            # Labels come from integer hashing and comparisons: they must match exactly.
            assert np.array_equal(golden[key], current[key]), RENDER_CHANGED.format(
                v=sf.VERSION, what=f"labels {key}")


def test_images_match_the_version(golden, current):
    for k in range(len(make_golden.RENDERS)):
        ref, now = golden[f"image{k}"], current[f"image{k}"]
        assert ref.shape == now.shape, RENDER_CHANGED.format(v=sf.VERSION, what=f"shape of "
                                                             f"{make_golden.RENDERS[k]}")
        off = share_of_pixels_off(ref, now)
        assert off <= MAX_SHARE_OFF, RENDER_CHANGED.format(
            v=sf.VERSION, what=f"{off:.2%} of the pixels of {make_golden.RENDERS[k]}")


def test_regions_match_the_version(golden, current):
    for k in range(len(make_golden.REGIONS)):
        mismatch = np.mean(golden[f"regions{k}"] != current[f"regions{k}"])
        assert mismatch <= 0.002, RENDER_CHANGED.format(
            v=sf.VERSION, what=f"{mismatch:.2%} of the region masks of {make_golden.REGIONS[k]}")


def test_the_golden_check_catches_a_changed_rendering(golden):
    """The comparison is sensitive enough: a one-pixel shift of the face fails it."""
    shifted = np.roll(golden["image0"], 1, axis=1)
    assert share_of_pixels_off(golden["image0"], shifted) > MAX_SHARE_OFF


# ------------------------------------------------------------------- synthetic_identities
IDENTITIES_CHANGED = (
    "synthetic_identities now draws differently from the reference of its VERSION {v} "
    "(tests/golden): {what}. If deliberate, bump synthetic_identities.VERSION and run "
    "`python tests/make_golden.py`; otherwise it is a regression (a change of synthetic_faces' "
    "painter shows here too).")


@pytest.fixture(scope="module")
def identities_golden():
    return load_golden(make_golden.identities_golden_path(), "synthetic_identities", si.VERSION)


def test_synthetic_identities_match_their_version(identities_golden):
    golden, now = identities_golden, make_golden.compute_identities()
    assert list(golden["attribute_names"]) == list(si.ATTRIBUTES)
    assert list(golden["nuisance_names"]) == list(si.NUISANCE_FACTORS)
    for key in sorted(set(golden) - {"attribute_names", "nuisance_names"}):
        what = IDENTITIES_CHANGED.format(v=si.VERSION, what=key)
        if key.startswith(("table_", "identities_")) or key.endswith(("_attributes", "_identity")):
            assert np.array_equal(golden[key], now[key]), what
        elif key.startswith("nuisance_"):
            np.testing.assert_allclose(now[key], golden[key], rtol=0, atol=1e-9, err_msg=what)
        elif key.startswith("image") and key[5:].isdigit():
            assert golden[key].shape == now[key].shape, what
            assert share_of_pixels_off(golden[key], now[key]) <= MAX_SHARE_OFF, what
        elif key.startswith("regions"):
            assert np.mean(golden[key] != now[key]) <= 0.002, what


# ------------------------------------------------------------------------ the judge's recipe
# Everything whose change alters a trained judge's weights or its cached test metrics (the
# settings in `JUDGE_DEFAULTS` are not here: they are part of the cache key by value).
JUDGE_RECIPE = ("JudgeNet", "_blur", "_augment", "_TrainBatches", "_balanced_weights", "_fit",
                "train_judge_params", "measure_accuracy", "accuracy_table")

# JUDGE_VERSION -> fingerprint of that version's recipe. A deliberate change of the recipe
# bumps JUDGE_VERSION and adds its fingerprint here (the failure message prints it).
RECIPE_FINGERPRINTS = {
    1: "8d1b28abf7545607",
    2: "0df0998b7b4bc1f2",
}


def recipe_fingerprint(module=judge_lib, recipe=JUDGE_RECIPE) -> str:
    """Hash of the recipe's code tokens: comments and blank lines do not count, and the
    result is the same on every supported Python version."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING,
            tokenize.ENDMARKER}
    h = hashlib.sha256()
    for name in recipe:
        source = inspect.getsource(getattr(module, name))
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        text = "".join("\x00>" if t.type == tokenize.INDENT else
                       "\x00<" if t.type == tokenize.DEDENT else t.string
                       for t in tokens if t.type not in skip)
        h.update(name.encode() + b"\x01" + text.encode() + b"\x02")
    return h.hexdigest()[:16]


# The class judge's recipe: its own training function on top of the judge's (whose changes the
# judge's fingerprint catches); CLASS_JUDGE_VERSION -> fingerprint.
CLASS_JUDGE_RECIPE = ("train_class_judge_params", "_cache_attributes")
CLASS_RECIPE_FINGERPRINTS = {
    1: "ba4829a1940a8991",
}


@pytest.mark.parametrize("module,recipe,version_name,fingerprints,table", [
    (judge_lib, JUDGE_RECIPE, "JUDGE_VERSION", RECIPE_FINGERPRINTS, "RECIPE_FINGERPRINTS"),
    (class_judge_lib, CLASS_JUDGE_RECIPE, "CLASS_JUDGE_VERSION", CLASS_RECIPE_FINGERPRINTS,
     "CLASS_RECIPE_FINGERPRINTS"),
], ids=["judge", "class_judge"])
def test_judge_recipe_matches_its_version(module, recipe, version_name, fingerprints, table):
    fingerprint = recipe_fingerprint(module, recipe)
    version = getattr(module, version_name)
    assert fingerprints.get(version) == fingerprint, (
        f"the training recipe ({', '.join(recipe)} in {module.__name__}) is not the one of "
        f"{version_name} {version}: judges cached under that version would be reused for a "
        f"different recipe. If the change is deliberate, bump {version_name} and add "
        f"{{{version + 1 if version in fingerprints else version}: {fingerprint!r}}} to "
        f"{table} in tests/test_versions.py.")


def test_recipe_fingerprint_ignores_comments_but_not_code(monkeypatch):
    base = recipe_fingerprint()
    original = inspect.getsource

    def edited(obj, replace):
        def fake(o):
            src = original(o)
            return replace(src) if o is obj else src
        return fake

    monkeypatch.setattr(inspect, "getsource", edited(
        judge_lib._blur, lambda s: s.replace("\n", "  # a comment\n\n", 1)))
    assert recipe_fingerprint() == base
    monkeypatch.setattr(inspect, "getsource", edited(
        judge_lib._blur, lambda s: s.replace("[1.0, 2.0, 1.0]", "[1.0, 3.0, 1.0]")))
    assert recipe_fingerprint() != base
