"""``synthetic_identities``: the embedded FaceScrub analogue (paper 002, Sec. 4.2-4.5).

Lr-LiVAE splits a face into what its class (an identity) fixes, carried by z_s, and what varies
from one photograph of the same person to the next, carried by z_u. This data set makes that
split known: ``K`` identities (``num_identities``, default 300), each fixing every trait the
renderer of ``synthetic_faces`` draws for a person, and per image only the nuisance a photograph
changes. Nothing is stored: image ``i`` of a split is rendered on demand by the same painter as
``synthetic_faces`` (so its renders, sizes 16..256 and speed are those of that data set), from
two counter-based hashes:

* the identity draws, of ``(seed, identity)``: sex, glasses, beard, mustache, goatee, baldness,
  hair colour, bangs, pale skin, lipstick, rosy cheeks (the ``synthetic_faces`` attribute
  rules, so their correlations hold across identities), and the identity's face shape, skin
  tone, hair style (volume, hairline, parting, length), eye shape and colour, eyebrows, nose and
  mouth geometry, lip colour, facial-hair colour, glasses frames;
* the image draws, of ``(seed, split, index)``: position, scale, rotation, background,
  clothes, lighting, pixel noise, gaze and expression (``Smiling`` and the mouth's curve and
  width). No hats: a hat would hide the identity's hair.

Splits. ``train``, ``validation`` and ``test`` hold disjoint images of the same ``K``
identities: image ``i`` shows identity ``i mod K`` (every identity has the same number of
images, up to one). ``test_unseen`` holds images of ``num_unseen`` further identities
(``K .. K + num_unseen - 1``, default 50) that no other split shows: Lr-LiVAE's Sec. 3.6
(classes outside the label set) and Figure 6 (swaps between people never seen). The data
pipeline serves the first three; ``test_unseen`` is read through this module
(``SyntheticIdentities('test_unseen', ...)``). ``num_outside = O`` (default 0) adds to the
training split images of ``O`` more identities (``K + U .. K + U + O - 1``: neither in the
label set nor in ``test_unseen``) that are never labelled: Sec. 3.6's unlabelled examples of
classes outside the label set (``config.data.synthetic.num_unlabeled_identities``, with
semi-supervision).

Labels and factors. Each record's ``attributes`` holds the binary attributes
(``ATTRIBUTES``: those of ``synthetic_faces`` without ``Wearing_Hat``) and ``Identity``, the
int identity index: the categorical label of ``config.data.labels = ('Identity',)``, whose
class count is ``num_identities`` (``config.data.synthetic.num_identities``).
``nuisance_table(seed, split, n)`` gives the per-image factors (``NUISANCE_FACTORS``: what
z_u should carry, for the disentanglement probes) and ``identity_table`` the identity of each
image, both without rendering.

Versions: ``VERSION`` names what is drawn (the identity/image split of the draws, the hashes,
the painter of ``synthetic_faces`` at its own ``VERSION``); tests/golden holds reference
renders of each version. 1.0.0 is the data set described here.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from latent_jax.data import labels as labels_lib
from latent_jax.data import synthetic_faces as sf

VERSION = '1.0.0'

ATTRIBUTES = tuple(a for a in sf.ATTRIBUTES if a != 'Wearing_Hat')
IDENTITY = labels_lib.IDENTITY   # the categorical label, one class per identity
SPLITS = ('train', 'validation', 'test', 'test_unseen')
DEFAULT_SPLIT_SIZES = {'train': 20000, 'validation': 2000, 'test': 2000, 'test_unseen': 2000}
DEFAULT_NUM_IDENTITIES = 300
DEFAULT_NUM_UNSEEN = 50
MIN_SIZE, MAX_SIZE = sf.MIN_SIZE, sf.MAX_SIZE

# Hash domains (the ``split`` argument of the shared counter-based hash). synthetic_faces uses
# 0 (its noise bank) and 1..3 (its splits); these never meet them.
_IDENTITY_DOMAIN = 20
_SPLIT_IDS = {'train': 21, 'validation': 22, 'test': 23, 'test_unseen': 24}

# Attribute draws that belong to the image rather than the identity (indices into the 16
# attribute draws of synthetic_faces._state_rules): 2 = Smiling. Draw 3 (the hat) is pinned.
_IMAGE_ATTRIBUTE_DRAWS = (2,)
_HAT_DRAW = 3

# synthetic_faces nuisance parameters that vary per image; all others belong to the identity.
IMAGE_PARAMETERS = (
    'cx', 'cy', 'scale', 'angle',                                        # pose
    'bg_h', 'bg_s', 'bg_v', 'bg_dh', 'bg_ds', 'bg_dv', 'bg_dir',         # background
    'clothes_h', 'clothes_s', 'clothes_v',                               # clothes
    'brightness', 'light', 'light_dir',                                  # lighting
    'noise', 'noise_x', 'noise_y',                                       # sensor noise
    'gaze', 'frown', 'smile',                                            # gaze, expression
)
IDENTITY_PARAMETERS = tuple(n for n in sf._NUISANCE_NAMES if n not in IMAGE_PARAMETERS)
_IMAGE_MASK = np.array([n in IMAGE_PARAMETERS for n in sf._NUISANCE_NAMES])
_P = {n: j for j, n in enumerate(sf._NUISANCE_NAMES)}


def _value(u: np.ndarray, name: str) -> np.ndarray:
  """A nuisance parameter's value from its uniform(s), as synthetic_faces._Params maps it."""
  j = _P[name]
  return sf._NUISANCE_LOW[j] + sf._NUISANCE_SPAN[j] * u[..., j]


# The per-image factors that z_u should carry (what the probes regress on), each a function of
# the image's nuisance uniforms [..., P] and its Smiling draw. Circular quantities are given as
# vectors (hue on the colour wheel; the lighting and background gradients).
def _circle(name, scale=1.0):
  return (lambda u, s: np.cos(2 * math.pi * _value(u, name) / scale),
          lambda u, s: np.sin(2 * math.pi * _value(u, name) / scale))


_hue_cos, _hue_sin = _circle('bg_h')
_clothes_cos, _clothes_sin = _circle('clothes_h')
NUISANCE_FACTORS = {
    'x': lambda u, s: _value(u, 'cx'),
    'y': lambda u, s: _value(u, 'cy'),
    'scale': lambda u, s: _value(u, 'scale'),
    'rotation': lambda u, s: _value(u, 'angle'),
    'background_hue_cos': _hue_cos,
    'background_hue_sin': _hue_sin,
    'background_saturation': lambda u, s: _value(u, 'bg_s'),
    'background_value': lambda u, s: _value(u, 'bg_v'),
    'background_gradient_x': lambda u, s: np.cos(_value(u, 'bg_dir')),
    'background_gradient_y': lambda u, s: np.sin(_value(u, 'bg_dir')),
    'clothes_hue_cos': _clothes_cos,
    'clothes_hue_sin': _clothes_sin,
    'clothes_value': lambda u, s: _value(u, 'clothes_v'),
    'brightness': lambda u, s: _value(u, 'brightness'),
    'light_x': lambda u, s: _value(u, 'light') * np.cos(_value(u, 'light_dir')),
    'light_y': lambda u, s: _value(u, 'light') * np.sin(_value(u, 'light_dir')),
    'noise': lambda u, s: _value(u, 'noise'),
    'gaze': lambda u, s: _value(u, 'gaze'),
    'mouth_curve': lambda u, s: _value(u, 'frown'),
    'smile_width': lambda u, s: _value(u, 'smile'),
    'Smiling': lambda u, s: s.astype(np.float64),
}


# ----------------------------------------------------------------------------------- checks
def _check_split(split: str) -> int:
  if split not in _SPLIT_IDS:
    raise ValueError(f'synthetic_identities: unknown split {split!r}; known: {SPLITS}.')
  return _SPLIT_IDS[split]


def _check_count(value, what: str, minimum: int = 1) -> int:
  v = sf._check_int(value, what)
  if v < minimum:
    raise ValueError(f'synthetic_identities: {what} must be >= {minimum}, got {v}.')
  return v


# ------------------------------------------------------------------------------- identities
def image_identities(split: str, indices, num_identities: int = DEFAULT_NUM_IDENTITIES,
                     num_unseen: int = DEFAULT_NUM_UNSEEN, *, num_outside: int = 0) -> np.ndarray:
  """int64 identity of each image index of ``split``: ``i mod K`` (``test_unseen``:
  ``K + i mod U``). With ``num_outside = O > 0`` the training split shows ``K + O`` identities,
  image ``i`` the ``(i mod (K + O))``-th, where those past ``K`` are the identities
  ``K + U .. K + U + O - 1``: outside the label set, never labelled (Sec. 3.6)."""
  _check_split(split)
  k = _check_count(num_identities, 'num_identities')
  u = _check_count(num_unseen, 'num_unseen')
  o = _check_count(num_outside, 'num_outside', 0)
  idx = np.asarray(indices, dtype=np.int64)
  if split == 'test_unseen':
    return k + idx % u
  if split == 'train' and o:
    j = idx % (k + o)
    return np.where(j < k, j, j + u)
  return idx % k


def _identity_draws(seed: int, identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(attribute uniforms [n, 16], parameter uniforms [n, P]) of each identity."""
  u = sf._uniforms(seed, _IDENTITY_DOMAIN, np.asarray(identities, np.uint64),
                   sf._NUM_ATTRIBUTE_DRAWS + len(sf._NUISANCE))
  return u[:, :sf._NUM_ATTRIBUTE_DRAWS], u[:, sf._NUM_ATTRIBUTE_DRAWS:]


def _image_draws(seed: int, split_id: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(attribute uniforms [n, 16], parameter uniforms [n, P]) of each image."""
  u = sf._uniforms(seed, split_id, np.asarray(indices, np.uint64),
                   sf._NUM_ATTRIBUTE_DRAWS + len(sf._NUISANCE))
  return u[:, :sf._NUM_ATTRIBUTE_DRAWS], u[:, sf._NUM_ATTRIBUTE_DRAWS:]


def _combined(seed: int, split: str, indices, num_identities: int, num_unseen: int,
              num_outside: int = 0):
  """(identities [n], attribute uniforms [n, 16], parameter uniforms [n, P]) of images."""
  split_id = _check_split(split)
  seed = sf._check_seed(seed)
  idx = np.asarray(indices, dtype=np.int64)
  ids = image_identities(split, idx, num_identities, num_unseen, num_outside=num_outside)
  id_attr, id_par = _identity_draws(seed, ids)
  im_attr, im_par = _image_draws(seed, split_id, idx)
  attr = id_attr.copy()
  for j in _IMAGE_ATTRIBUTE_DRAWS:
    attr[:, j] = im_attr[:, j]
  attr[:, _HAT_DRAW] = 1.0   # never a hat: it would hide the identity's hair
  par = np.where(_IMAGE_MASK[None, :], im_par, id_par)
  return ids, attr, par


# ------------------------------------------------------------------------------------ tables
def _labels_of(attr: np.ndarray) -> dict:
  return sf._labels(sf._state_rules(list(attr.T)))


def attributes_table(seed: int, split: str, num_examples: int,
                     num_identities: int = DEFAULT_NUM_IDENTITIES,
                     num_unseen: int = DEFAULT_NUM_UNSEEN, *, num_outside: int = 0) -> np.ndarray:
  """bool [n, len(ATTRIBUTES)]: the binary attributes of images 0..n-1, without rendering."""
  n = _check_count(num_examples, 'num_examples', 0)
  _, attr, _ = _combined(seed, split, np.arange(n), num_identities, num_unseen, num_outside)
  labels = _labels_of(attr)
  return np.stack([np.asarray(labels[a], bool).reshape(n) for a in ATTRIBUTES], axis=-1
                  ).reshape(n, len(ATTRIBUTES))


def identity_table(split: str, num_examples: int, num_identities: int = DEFAULT_NUM_IDENTITIES,
                   num_unseen: int = DEFAULT_NUM_UNSEEN, *, num_outside: int = 0) -> np.ndarray:
  """int64 [n]: the identity of images 0..n-1 of ``split``."""
  n = _check_count(num_examples, 'num_examples', 0)
  return image_identities(split, np.arange(n), num_identities, num_unseen,
                          num_outside=num_outside)


def nuisance_table(seed: int, split: str, num_examples: int,
                   num_identities: int = DEFAULT_NUM_IDENTITIES,
                   num_unseen: int = DEFAULT_NUM_UNSEEN, *, num_outside: int = 0) -> np.ndarray:
  """float64 [n, len(NUISANCE_FACTORS)]: the per-image factors of images 0..n-1."""
  n = _check_count(num_examples, 'num_examples', 0)
  _, attr, par = _combined(seed, split, np.arange(n), num_identities, num_unseen, num_outside)
  smiling = np.asarray(_labels_of(attr)['Smiling'], bool).reshape(n)
  return np.stack([np.asarray(f(par, smiling), np.float64).reshape(n)
                   for f in NUISANCE_FACTORS.values()], axis=-1).reshape(n, len(NUISANCE_FACTORS))


# --------------------------------------------------------------------------------- rendering
def _face(seed: int, split: str, index: int, num_identities: int, num_unseen: int,
          num_outside: int = 0):
  ids, attr, par = _combined(seed, split, np.array([sf._check_index(index)]), num_identities,
                             num_unseen, num_outside)
  st = {k: (int(v) if k == 'hair' else bool(v))
        for k, v in sf._state_rules(attr[0].tolist()).items()}
  return int(ids[0]), st, sf._Params(par[0])


def _record_attributes(identity: int, st: dict) -> dict:
  labels = sf._labels_dict(st)
  out = {a: labels[a] for a in ATTRIBUTES}
  out[IDENTITY] = identity
  return out


def render(seed: int, split: str, index: int, size: int,
           num_identities: int = DEFAULT_NUM_IDENTITIES,
           num_unseen: int = DEFAULT_NUM_UNSEEN, *, num_outside: int = 0
           ) -> tuple[np.ndarray, dict]:
  """Image ``index`` of ``split``: (uint8 [size, size, 3], attributes with ``Identity``)."""
  size = sf._check_size(size)
  identity, st, p = _face(seed, split, index, num_identities, num_unseen, num_outside)
  return sf._render(st, p, size), _record_attributes(identity, st)


def attribute_regions(seed: int, split: str, index: int, size: int,
                      num_identities: int = DEFAULT_NUM_IDENTITIES,
                      num_unseen: int = DEFAULT_NUM_UNSEEN, *, num_outside: int = 0
                      ) -> dict[str, np.ndarray]:
  """Per binary attribute, bool [size, size]: where it is (or would be) drawn on this image
  (the ``synthetic_faces`` regions; the inpainting masks of Sec. 4.5 are built from them)."""
  size = sf._check_size(size)
  _, st, p = _face(seed, split, index, num_identities, num_unseen, num_outside)
  regions = sf._regions(st, p, size)
  return {a: regions[a] for a in ATTRIBUTES}


class SyntheticIdentities:
  """Random-access source of one split, grain-compatible (picklable, ``len``, ``[i]``):
  ``src[i] = {'image': uint8 [S, S, 3], 'attributes': {binary name: bool, 'Identity': int}}``."""

  def __init__(self, split: str, image_size: int = 64, seed: int = 0,
               num_examples: int | None = None, num_identities: int = DEFAULT_NUM_IDENTITIES,
               num_unseen: int = DEFAULT_NUM_UNSEEN, num_outside: int = 0):
    _check_split(split)
    self.split = split
    self.image_size = sf._check_size(image_size)
    self.seed = sf._check_seed(seed)
    self.num_identities = _check_count(num_identities, 'num_identities')
    self.num_unseen = _check_count(num_unseen, 'num_unseen')
    self.num_outside = _check_count(num_outside, 'num_outside', 0)
    n = DEFAULT_SPLIT_SIZES[split] if num_examples is None else num_examples
    self.num_examples = _check_count(n, 'num_examples')

  @property
  def num_classes(self) -> int:
    """Identities the label ``Identity`` ranges over (the seen ones)."""
    return self.num_identities

  def __len__(self) -> int:
    return self.num_examples

  def labelable(self) -> np.ndarray:
    """bool [n]: images whose identity is in the label set (all but the outside identities)."""
    return self.identity_table() < self.num_identities

  def __getitem__(self, index) -> dict:
    index = sf._check_index(index, self.num_examples)
    image, attributes = render(self.seed, self.split, index, self.image_size,
                               self.num_identities, self.num_unseen, num_outside=self.num_outside)
    return {'image': image, 'attributes': attributes}

  def attributes_table(self) -> np.ndarray:
    return attributes_table(self.seed, self.split, self.num_examples, self.num_identities,
                            self.num_unseen, num_outside=self.num_outside)

  def identity_table(self) -> np.ndarray:
    return identity_table(self.split, self.num_examples, self.num_identities, self.num_unseen,
                          num_outside=self.num_outside)

  def nuisance_table(self) -> np.ndarray:
    return nuisance_table(self.seed, self.split, self.num_examples, self.num_identities,
                          self.num_unseen, num_outside=self.num_outside)

  def __repr__(self) -> str:
    return (f'SyntheticIdentities(split={self.split!r}, image_size={self.image_size}, '
            f'seed={self.seed}, num_examples={self.num_examples}, '
            f'num_identities={self.num_identities}, num_unseen={self.num_unseen}, '
            f'num_outside={self.num_outside})')


def identity_traits(seed: int, identity: int) -> Mapping[str, bool]:
  """The binary attributes an identity fixes (every one but ``Smiling``)."""
  attr, _ = _identity_draws(sf._check_seed(seed), np.array([sf._check_index(identity)]))
  attr = attr.copy()
  attr[:, _HAT_DRAW] = 1.0
  labels = _labels_of(attr)
  return {a: bool(np.asarray(labels[a]).reshape(-1)[0]) for a in ATTRIBUTES if a != 'Smiling'}


def contact_sheet(seed: int = 0, split: str = 'train', identities=range(5), per_identity: int = 6,
                  size: int = 64, num_identities: int = DEFAULT_NUM_IDENTITIES,
                  num_unseen: int = DEFAULT_NUM_UNSEEN) -> np.ndarray:
  """uint8 [rows * size, per_identity * size, 3]: one row of photographs per identity (of
  ``test_unseen``: identities ``num_identities ..``)."""
  k = _check_count(num_identities, 'num_identities')
  unseen = split == 'test_unseen'
  first, period = (k, _check_count(num_unseen, 'num_unseen')) if unseen else (0, k)
  rows = []
  for identity in identities:
    if not first <= identity < first + period:
      raise ValueError(f'synthetic_identities: {split} has identities {first}..'
                       f'{first + period - 1}, not {identity}')
    rows.append(np.concatenate(
        [render(seed, split, identity - first + j * period, size, k, period if unseen
                else DEFAULT_NUM_UNSEEN)[0] for j in range(per_identity)], axis=1))
  return np.concatenate(rows, axis=0)
