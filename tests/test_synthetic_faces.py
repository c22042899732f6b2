"""Tests of the procedural ``synthetic_faces`` data set."""

import hashlib
import pickle

import grain
import numpy as np
import pytest

from latent_jax.data import synthetic_faces as sf

REQUIRED = ('Male', 'Eyeglasses', 'Smiling', 'Mustache', 'Goatee', 'No_Beard', 'Bald',
            'Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Gray_Hair', 'Bangs', 'Wearing_Hat',
            'Pale_Skin')
HAIR = ('Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Gray_Hair')


def col(name):
  return sf.ATTRIBUTES.index(name)


@pytest.fixture(scope='module')
def table():
  return sf.attributes_table(0, 'train', 5000)


def test_attribute_names():
  assert set(REQUIRED) <= set(sf.ATTRIBUTES)
  assert len(set(sf.ATTRIBUTES)) == len(sf.ATTRIBUTES)
  assert sf.SPLITS == ('train', 'validation', 'test')
  assert sf.DEFAULT_SPLIT_SIZES == {'train': 20000, 'validation': 2000, 'test': 2000}


def test_render_is_deterministic():
  a, attrs_a = sf.render(3, 'train', 17, 32)
  b, attrs_b = sf.render(3, 'train', 17, 32)
  assert a.tobytes() == b.tobytes()
  assert attrs_a == attrs_b
  # A fresh unpickled source gives the same bytes too (grain workers do that).
  src = pickle.loads(pickle.dumps(sf.SyntheticFaces('train', image_size=32, seed=3)))
  assert src[17]['image'].tobytes() == a.tobytes()


def test_seed_split_and_index_change_the_image():
  ref = sf.render(0, 'train', 5, 32)[0]
  for other in (sf.render(1, 'train', 5, 32)[0], sf.render(0, 'validation', 5, 32)[0],
                sf.render(0, 'test', 5, 32)[0], sf.render(0, 'train', 6, 32)[0]):
    assert np.abs(other.astype(int) - ref.astype(int)).mean() > 5


@pytest.mark.parametrize('size', [16, 32, 45, 64, 128, 256])
def test_shapes_and_dtypes(size):
  image, attrs = sf.render(0, 'test', 1, size)
  assert image.shape == (size, size, 3) and image.dtype == np.uint8
  assert image.flags['C_CONTIGUOUS']
  assert image.std() > 10  # not blank
  assert set(attrs) == set(sf.ATTRIBUTES) and all(type(v) is bool for v in attrs.values())
  regions = sf.attribute_regions(0, 'test', 1, size)
  assert set(regions) == set(sf.ATTRIBUTES)
  for mask in regions.values():
    assert mask.shape == (size, size) and mask.dtype == bool


def test_data_source_record_layout():
  src = sf.SyntheticFaces('validation', image_size=32, seed=2, num_examples=10)
  assert len(src) == 10
  assert len(sf.SyntheticFaces('train')) == 20000
  assert len(sf.SyntheticFaces('test')) == 2000
  rec = src[9]
  assert set(rec) == {'image', 'attributes'}
  assert rec['image'].shape == (32, 32, 3) and rec['image'].dtype == np.uint8
  assert rec['attributes'] == sf.sample_attributes(2, 'validation', 9)
  assert src[np.int64(3)]['image'].tobytes() == sf.render(2, 'validation', 3, 32)[0].tobytes()
  # Usable as a grain source.
  ds = grain.MapDataset.source(src).map(lambda r: r['image'].mean())
  assert len(ds) == 10 and np.isclose(ds[4], src[4]['image'].mean())


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='split'):
    sf.render(0, 'dev', 0, 32)
  with pytest.raises(ValueError, match='split'):
    sf.SyntheticFaces('training')
  for size in (8, 15, 257, 64.0, '64'):
    with pytest.raises(ValueError, match='size'):
      sf.render(0, 'train', 0, size)
    with pytest.raises(ValueError, match='size'):
      sf.SyntheticFaces('train', image_size=size)
  for index in (-1, 1.5, True):
    with pytest.raises(ValueError, match='index'):
      sf.render(0, 'train', index, 32)
  with pytest.raises(ValueError, match='index'):
    sf.sample_attributes(0, 'train', -3)
  with pytest.raises(ValueError, match='index'):
    sf.attribute_regions(0, 'train', -3, 32)
  src = sf.SyntheticFaces('test', image_size=32, num_examples=5)
  for index in (-1, 5, 100):
    with pytest.raises(ValueError, match='index'):
      src[index]
  with pytest.raises(ValueError, match='num_examples'):
    sf.SyntheticFaces('test', num_examples=0)


def _digests(split, n):
  return {hashlib.sha1(sf.render(0, split, i, 32)[0].tobytes()).hexdigest() for i in range(n)}


def test_splits_are_disjoint():
  train, val, test = _digests('train', 150), _digests('validation', 150), _digests('test', 150)
  assert len(train) == len(val) == len(test) == 150  # no duplicates within a split either
  assert not (train & val) and not (train & test) and not (val & test)


def test_attributes_table_matches_items(table):
  assert table.shape == (5000, len(sf.ATTRIBUTES)) and table.dtype == bool
  src = sf.SyntheticFaces('train', image_size=16, num_examples=5000)
  np.testing.assert_array_equal(src.attributes_table(), table)
  for i in list(range(40)) + [4999]:
    attrs = sf.sample_attributes(0, 'train', i)
    assert [attrs[n] for n in sf.ATTRIBUTES] == table[i].tolist()
  for i in range(0, 40, 8):
    assert src[i]['attributes'] == sf.sample_attributes(0, 'train', i)
  # Another seed gives another table.
  assert (sf.attributes_table(1, 'train', 5000) != table).any()


def test_attribute_rules(table):
  t = {n: table[:, col(n)] for n in sf.ATTRIBUTES}
  male = t['Male']
  hair = np.stack([t[n] for n in HAIR], axis=1)
  assert hair.sum(axis=1).max() <= 1  # at most one hair colour
  assert not (hair.any(axis=1) & t['Wearing_Hat']).any()  # a hat hides the hair
  assert not (t['Bangs'] & (t['Bald'] | t['Wearing_Hat'])).any()
  assert not (t['Bald'] & t['Wearing_Hat']).any()
  facial = t['Mustache'] | t['Goatee']
  assert not (facial & t['No_Beard']).any()
  beard_only = ~t['No_Beard'] & ~facial  # jaw beard without mustache / goatee exists
  assert beard_only.sum() > 50
  assert male[~t['No_Beard']].mean() > 0.95  # facial hair almost only on men
  assert male[t['Bald']].mean() > 0.9
  # Gray hair is commoner among the bald than overall.
  assert t['Gray_Hair'][t['Bald']].mean() > 2 * t['Gray_Hair'].mean()
  assert t['Wearing_Lipstick'][~male].mean() > 0.6 and t['Wearing_Lipstick'][male].mean() < 0.02


def test_prevalences(table):
  bounds = {
      'Male': (0.38, 0.46), 'Eyeglasses': (0.09, 0.16), 'Smiling': (0.44, 0.52),
      'Wearing_Hat': (0.045, 0.085), 'Pale_Skin': (0.045, 0.085), 'Bald': (0.02, 0.06),
      'No_Beard': (0.78, 0.9), 'Mustache': (0.04, 0.1), 'Goatee': (0.05, 0.12),
      'Bangs': (0.1, 0.2), 'Black_Hair': (0.18, 0.32), 'Blond_Hair': (0.12, 0.22),
      'Brown_Hair': (0.16, 0.28), 'Gray_Hair': (0.03, 0.09),
  }
  for name, (lo, hi) in bounds.items():
    assert lo <= table[:, col(name)].mean() <= hi, name


def test_regions_nonempty_local_and_cover_features():
  for size in (32, 64):
    for i in range(12):
      regions = sf.attribute_regions(0, 'validation', i, size)
      for name, mask in regions.items():
        assert mask.any(), (name, i, size)
        # A part of the image, not all of it (long hair can cover much of it).
        big = name in HAIR + ('Male', 'Bald', 'Wearing_Hat', 'Pale_Skin')
        assert mask.mean() < (0.8 if big else 0.25), (name, i, size)
      # The glasses region covers the eyes; the beard zone the chin's goatee patch.
      st, p = sf._face(0, sf._SPLIT_IDS['validation'], i)
      fr = sf._Frame(size, p)
      eyes = sf._eye_sdf(fr.u, fr.v, p) < 0
      assert eyes.any() and regions['Eyeglasses'][eyes].all()
      assert (regions['Goatee'] <= regions['No_Beard']).all()
      assert (regions['Smiling'] == regions['Wearing_Lipstick']).all()
      assert (regions['Pale_Skin'] <= regions['Male']).all()
      # Bangs sit between the eyebrows and the top of the head, the mouth below the eyes.
      rows = np.arange(size)[:, None] * np.ones((1, size))
      eye_row = rows[eyes].mean()
      assert rows[regions['Bangs']].mean() < eye_row < rows[regions['Smiling']].mean()


def _toggle_diff(i, name, size=32):
  """|difference| between face i and the same face with ``name`` toggled, or None when the
  toggle changes a label drawn elsewhere too (e.g. adding bangs removes a hat)."""
  base = sf.face_attributes(0, 'train', i)
  overrides = {name: not base[name]}
  edited, attrs = sf.render(0, 'train', i, size, overrides=overrides)
  allowed = {name, 'No_Beard'}
  if name in HAIR:
    allowed |= set(HAIR)  # the previous colour goes
  if name == 'Wearing_Hat':
    allowed |= set(HAIR) | {'Bald', 'Bangs'}  # the hat hides the hair, inside its region
  changed = {n for n in sf.ATTRIBUTES if attrs[n] != base[n]} - allowed
  if changed:
    return None
  image, _ = sf.render(0, 'train', i, size)
  diff = np.abs(edited.astype(np.int32) - image.astype(np.int32)).sum(axis=-1)
  region = (sf.attribute_regions(0, 'train', i, size)[name]
            | sf.attribute_regions(0, 'train', i, size, overrides=overrides)[name])
  return diff, region


def test_glasses_are_visible_and_local():
  checked = 0
  for i in range(20):
    diff, region = _toggle_diff(i, 'Eyeglasses')
    assert diff.sum() > 0
    assert diff[region].sum() == diff.sum()  # nothing changes outside the glasses region
    # Clearly visible: a large mean change over the region (sum over RGB channels).
    assert diff[region].mean() > 40, i
    checked += 1
  assert checked == 20


@pytest.mark.parametrize('name', [n for n in sf.ATTRIBUTES if n != 'Eyeglasses'])
def test_every_attribute_edit_is_visible_and_local(name):
  checked = 0
  for i in range(24):
    size = 64 if i % 3 == 0 else 32
    res = _toggle_diff(i, name, size)
    if res is None:
      continue
    diff, region = res
    assert diff.sum() > 0, (name, i)
    assert diff[~region].sum() == 0, (name, i)  # the edit stays inside the region
    checked += 1
  assert checked >= 8


def test_overrides():
  base = sf.face_attributes(0, 'train', 0)
  # Nuisance factors are kept: the same face with nothing overridden is identical.
  assert (sf.render(0, 'train', 0, 32, overrides={})[0] == sf.render(0, 'train', 0, 32)[0]).all()
  _, attrs = sf.render(0, 'train', 0, 32, overrides={'No_Beard': False})
  assert not attrs['No_Beard']
  _, attrs = sf.render(0, 'train', 0, 32, overrides={'Mustache': True, 'Goatee': True})
  assert attrs['Mustache'] and attrs['Goatee'] and not attrs['No_Beard']
  _, attrs = sf.render(0, 'train', 0, 32, overrides={'Mustache': True, 'No_Beard': False})
  assert attrs['Mustache']
  _, attrs = sf.render(0, 'train', 0, 32, overrides={'Gray_Hair': True})
  assert attrs['Gray_Hair'] and sum(attrs[n] for n in HAIR) == 1 and not attrs['Wearing_Hat']
  _, attrs = sf.render(0, 'train', 0, 32, overrides={'Wearing_Hat': True})
  assert attrs['Wearing_Hat'] and not any(attrs[n] for n in HAIR + ('Bangs', 'Bald'))
  _, attrs = sf.render(0, 'train', 0, 32, overrides={'Bald': True})
  assert attrs['Bald'] and not attrs['Bangs']
  assert sf.face_attributes(0, 'train', 0, {'Smiling': not base['Smiling']})['Smiling'] != \
      base['Smiling']
  with pytest.raises(ValueError, match='unknown attribute'):
    sf.render(0, 'train', 0, 32, overrides={'Sunglasses': True})
  with pytest.raises(ValueError, match='contradict'):
    sf.render(0, 'train', 0, 32, overrides={'Wearing_Hat': True, 'Bangs': True})
  with pytest.raises(ValueError, match='contradict'):
    sf.render(0, 'train', 0, 32, overrides={'No_Beard': True, 'Goatee': True})


def test_hair_colour_is_visible_in_hair_region():
  """The mean hair colour separates the four labelled colours."""
  means = {n: [] for n in HAIR}
  for i in range(60):
    attrs = sf.face_attributes(0, 'test', i)
    if attrs['Wearing_Hat'] or attrs['Bald']:
      continue
    for name in HAIR:
      image, _ = sf.render(0, 'test', i, 32, overrides={name: True})
      st, p = sf._face(0, sf._SPLIT_IDS['test'], i)
      fr = sf._Frame(32, p)
      mask = sf._hair_sdf(fr.u, fr.v, p, st) < -1.0 / fr.k  # well inside the hair cap
      means[name].append(image[mask].mean(axis=0))
  m = {n: np.mean(v, axis=0) for n, v in means.items()}
  assert m['Black_Hair'].sum() < m['Brown_Hair'].sum() < m['Blond_Hair'].sum()
  assert m['Blond_Hair'][2] < 0.8 * m['Blond_Hair'][0]  # yellowish
  gray = m['Gray_Hair']
  assert gray.max() - gray.min() < 0.12 * gray.mean()  # neutral
