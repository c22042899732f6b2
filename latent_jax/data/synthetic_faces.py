"""``synthetic_faces``: a procedural, deterministic data set of face-like images.

Nothing is stored on disk: image ``i`` of a split is rendered on demand from
``(seed, split, i)`` with vectorised numpy, at any size from 16 to 256 pixels
(32, 64 and 128 are the sizes the project uses). Each image carries boolean
attributes named as in CelebA, and for every attribute a boolean mask of the
image region it occupies, used to measure how local an attribute edit is.

Randomness
----------
Every random number is a counter-based hash (splitmix64) of
``(seed, split id, index, stream, draw)``. The attributes come from one stream,
all nuisance factors from another, so

* an image depends on ``(seed, split, index)`` and the size only, splits never
  share an image and the attribute table of a whole split is computed without
  rendering (vectorised over indices, milliseconds for 20000 rows);
* rendering the same face with some attributes overridden (``overrides=``)
  keeps every nuisance factor (pose, colours, lighting, noise, hair shape, ...)
  identical, so the pixel difference is the attribute alone.

Attributes and their correlations
---------------------------------
Sampled per image (M = Male, F = not Male):

============== ====================================================== ========
attribute      rule                                                   approx.
============== ====================================================== ========
Male           p = 0.42                                               42 %
Eyeglasses     p = 0.16 (M), 0.09 (F)  (CelebA has 6.5 %; we use ~12 %
               so that small default runs see enough glasses)         12 %
Smiling        p = 0.43 (M), 0.52 (F)                                 48 %
Wearing_Hat    p = 0.075 (M), 0.055 (F)                               6 %
Bald           p = 0.09 (M), 0.003 (F), never under a hat             3.5 %
beard (jaw)    p = 0.22 (M), 0 (F)                                    --
Mustache       p = 0.45 with a beard, 0.08 without (M); 0.004 (F)     7 %
Goatee         p = 0.50 with a beard, 0.12 without (M); 0.004 (F)     9 %
No_Beard       True iff no jaw beard, no mustache and no goatee       84 %
hair colour    one of black / blond / brown / gray / red (red carries
               no label); F: .22/.26/.24/.02/.26, M: .30/.04/.18/.08/.40,
               Bald (side fringe only): .15/.05/.15/.35/.30
Black_Hair,    True iff the hair colour is that colour AND hair is
Blond_Hair,    visible (no hat). So the four are mutually exclusive,
Brown_Hair,    all False under a hat (the hat hides all hair) and
Gray_Hair      for red hair; Gray_Hair is enriched among Bald faces.
Bangs          p = 0.10 (M), 0.22 (F); never with Bald or a hat         15 %
Pale_Skin      p = 0.045 (M), 0.08 (F)                                 6.5 %
Wearing_Lipstick p = 0.75 (F), 0.005 (M)                              44 %
Rosy_Cheeks    p = 0.11 (F), 0.02 (M)                                 7 %
============== ====================================================== ========

Visual cues: Male -> wider, squarer jaw, thicker eyebrows and (88 % of the
time) short hair, against long hair for 85 % of F; Eyeglasses -> two thick
dark frames (round or rectangular) around the eyes with a bridge, temple arms
and slightly tinted lenses; Smiling -> wider upturned open mouth showing
teeth (closed, flat or slightly down-turned lips otherwise); Mustache -> dark
band above the upper lip; Goatee -> dark patch on the chin; beard
(No_Beard=False without mustache/goatee possible) -> dark lower face along the
jaw; Bald -> skin-coloured scalp with a highlight, hair only as a fringe at
the temples; Bangs -> hair down to the eyebrows; Wearing_Hat -> coloured hat
(crown, optional brim) hiding all hair; Pale_Skin -> very light, desaturated
skin (ordinary skin tones stop well before it); hair colours -> hair colour;
Wearing_Lipstick -> saturated red / pink / plum lips; Rosy_Cheeks -> soft pink
discs on the cheeks.

Nuisance factors (independent of the attributes): face position (+-6 % of the
image), scale (21.5..26 % of the image per face unit), rotation (+-10
degrees), face width/height and jaw taper, skin tone (dark to light),
background colour with a linear gradient, lighting direction and brightness
(a global multiplicative gradient), Gaussian pixel noise (sigma 0..0.035),
hair volume, hairline, parting, length, eye/eyebrow/mouth position, size and
shape, iris colour and gaze, eyebrow / facial-hair / frame / hat / lipstick /
clothes colours, glasses shape and tint, hat shape.

Regions (``attribute_regions``), each the set of pixels where the attribute
is or would be drawn on this face, dilated by one pixel:
Eyeglasses -> the glasses (frames, lenses, bridge, arms; covers the eyes);
Smiling and Wearing_Lipstick -> the mouth (smiling and neutral shapes);
Mustache -> the upper lip band; Goatee -> the chin patch; No_Beard -> the jaw
beard zone plus the mustache and goatee areas; Bald, Bangs excepted, and the
hair colours -> the hair (cap, long hair, fringe) plus the scalp; Bangs -> the
forehead between the hairline and the eyebrows; Wearing_Hat -> the hat plus the
hair it hides; Male -> the head (face, ears, neck, hair in either length);
Pale_Skin -> the skin (face, ears, neck); Rosy_Cheeks -> the cheek discs.

Overrides
---------
``render``, ``attribute_regions`` and ``face_attributes`` accept
``overrides={name: bool}`` to draw the same face with some attributes forced.
The rest of the face is kept; the rules are: No_Beard=True removes beard,
mustache and goatee, No_Beard=False adds a jaw beard if there is no facial
hair; a hair colour set True replaces the hair colour, the current colour set
False becomes the unlabelled red; Bald=True, Bangs=True or a hair colour set
True remove a hat; Wearing_Hat=True hides the hair; Bald=True removes Bangs,
Bangs=True removes baldness. Overrides that contradict each other (e.g.
Wearing_Hat=True with Bangs=True) raise ``ValueError``. The returned
attributes always describe the rendered image.
"""

from __future__ import annotations

import colorsys
import functools
import math
import operator
from typing import Mapping

import numpy as np

__all__ = [
    'ATTRIBUTES',
    'SPLITS',
    'DEFAULT_SPLIT_SIZES',
    'MIN_SIZE',
    'MAX_SIZE',
    'sample_attributes',
    'attributes_table',
    'face_attributes',
    'render',
    'attribute_regions',
    'SyntheticFaces',
]

ATTRIBUTES: tuple[str, ...] = (
    'Male',
    'Eyeglasses',
    'Smiling',
    'Mustache',
    'Goatee',
    'No_Beard',
    'Bald',
    'Black_Hair',
    'Blond_Hair',
    'Brown_Hair',
    'Gray_Hair',
    'Bangs',
    'Wearing_Hat',
    'Pale_Skin',
    'Wearing_Lipstick',
    'Rosy_Cheeks',
)
SPLITS = ('train', 'validation', 'test')
DEFAULT_SPLIT_SIZES = {'train': 20000, 'validation': 2000, 'test': 2000}
MIN_SIZE = 16
MAX_SIZE = 256

_SPLIT_IDS = {'train': 1, 'validation': 2, 'test': 3}
_MAX_INDEX = 2**62
_HAIR_COLOUR_NAMES = ('Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Gray_Hair')
_RED_HAIR = 4  # hair colour index without a label
_ATTRIBUTE_STREAM = 0
_NUISANCE_STREAM = 1
_NUM_ATTRIBUTE_DRAWS = 16
_NUM_NUISANCE_DRAWS = 96


# ----------------------------------------------------------------------------
# Argument checks.


def _check_split(split: str) -> int:
  if split not in _SPLIT_IDS:
    raise ValueError(f'synthetic_faces: unknown split {split!r}; expected one of {SPLITS}.')
  return _SPLIT_IDS[split]


def _check_int(value, what: str) -> int:
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f'synthetic_faces: {what} must be an integer, got {value!r}.')
  try:
    return operator.index(value)
  except TypeError:
    raise ValueError(f'synthetic_faces: {what} must be an integer, got {value!r}.') from None


def _check_size(size) -> int:
  size = _check_int(size, 'image size')
  if not MIN_SIZE <= size <= MAX_SIZE:
    raise ValueError(
        f'synthetic_faces: image size must be between {MIN_SIZE} and {MAX_SIZE} pixels, '
        f'got {size}.')
  return size


def _check_index(index, limit: int = _MAX_INDEX) -> int:
  index = _check_int(index, 'index')
  if index < 0 or index >= limit:
    raise ValueError(f'synthetic_faces: index {index} out of range [0, {limit}).')
  return index


def _check_seed(seed) -> int:
  return _check_int(seed, 'seed') & 0xFFFFFFFFFFFFFFFF


# ----------------------------------------------------------------------------
# Counter-based random numbers.

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = _U64(30), _U64(27), _U64(31), _U64(11)


def _mix64(z: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
  z = (z ^ (z >> _S30)) * _MIX1
  z = (z ^ (z >> _S27)) * _MIX2
  return z ^ (z >> _S31)


def _uniforms(seed: int, split_id: int, indices: np.ndarray, stream: int, n: int) -> np.ndarray:
  """float64 [len(indices), n] uniforms in [0, 1), a pure function of its arguments."""
  with np.errstate(over='ignore'):
    key = _mix64(np.array([seed], dtype=np.uint64) + _GOLDEN)
    key = _mix64(key ^ _U64(split_id * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF))
    key = _mix64(key + _U64(stream) * _MIX2)
    keys = _mix64(key ^ (np.asarray(indices, dtype=np.uint64) * _MIX1 + _GOLDEN))
    draws = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)
    bits = _mix64(keys[:, None] + draws[None, :])
  return (bits >> _S11).astype(np.float64) * (1.0 / 2**53)


# ----------------------------------------------------------------------------
# Attributes.

# Hair colour cumulative probabilities (black, blond, brown, gray, red).
_HAIR_CDF_F = np.cumsum([0.22, 0.26, 0.24, 0.02, 0.26])
_HAIR_CDF_M = np.cumsum([0.30, 0.04, 0.18, 0.08, 0.40])
_HAIR_CDF_BALD = np.cumsum([0.15, 0.05, 0.15, 0.35, 0.30])


def _sample_states(seed: int, split_id: int, indices: np.ndarray) -> dict[str, np.ndarray]:
  """Vectorised latent face state: the generative variables behind the labels."""
  u = _uniforms(seed, split_id, indices, _ATTRIBUTE_STREAM, _NUM_ATTRIBUTE_DRAWS)
  male = u[:, 0] < 0.42
  m = lambda pm, pf: np.where(male, pm, pf)  # noqa: E731
  hat = u[:, 3] < m(0.075, 0.055)
  bald = ~hat & (u[:, 4] < m(0.09, 0.003))
  beard = u[:, 5] < m(0.22, 0.0)
  mustache = u[:, 6] < m(np.where(beard, 0.45, 0.08), 0.004)
  goatee = u[:, 7] < m(np.where(beard, 0.50, 0.12), 0.004)
  cdf = np.where(bald[:, None], _HAIR_CDF_BALD, np.where(male[:, None], _HAIR_CDF_M, _HAIR_CDF_F))
  hair = np.minimum((u[:, 8:9] >= cdf).sum(axis=1), _RED_HAIR)
  return {
      'male': male,
      'glasses': u[:, 1] < m(0.16, 0.09),
      'smiling': u[:, 2] < m(0.43, 0.52),
      'hat': hat,
      'bald': bald,
      'beard': beard,
      'mustache': mustache,
      'goatee': goatee,
      'hair': hair.astype(np.int64),
      'bangs': ~hat & ~bald & (u[:, 9] < m(0.10, 0.22)),
      'pale': u[:, 10] < m(0.045, 0.08),
      'lipstick': u[:, 11] < m(0.005, 0.75),
      'rosy': u[:, 12] < m(0.02, 0.11),
  }


def _labels(st: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Attribute labels (what is visible) from latent states; works on arrays and scalars."""
  hat = np.asarray(st['hat'], bool)
  bald = np.asarray(st['bald'], bool) & ~hat
  hair = np.asarray(st['hair'])
  out = {
      'Male': np.asarray(st['male'], bool),
      'Eyeglasses': np.asarray(st['glasses'], bool),
      'Smiling': np.asarray(st['smiling'], bool),
      'Mustache': np.asarray(st['mustache'], bool),
      'Goatee': np.asarray(st['goatee'], bool),
      'No_Beard': ~(np.asarray(st['beard'], bool) | st['mustache'] | st['goatee']),
      'Bald': bald,
  }
  for c, name in enumerate(_HAIR_COLOUR_NAMES):
    out[name] = ~hat & (hair == c)
  out['Bangs'] = np.asarray(st['bangs'], bool) & ~hat & ~bald
  out['Wearing_Hat'] = hat
  out['Pale_Skin'] = np.asarray(st['pale'], bool)
  out['Wearing_Lipstick'] = np.asarray(st['lipstick'], bool)
  out['Rosy_Cheeks'] = np.asarray(st['rosy'], bool)
  return out


def _state(seed: int, split_id: int, index: int) -> dict:
  arrays = _sample_states(seed, split_id, np.array([index], dtype=np.uint64))
  return {k: v[0].item() for k, v in arrays.items()}


def _apply_overrides(st: dict, overrides: Mapping[str, bool] | None) -> dict:
  if not overrides:
    return st
  unknown = sorted(set(overrides) - set(ATTRIBUTES))
  if unknown:
    raise ValueError(f'synthetic_faces: unknown attribute(s) in overrides: {unknown}; '
                     f'known: {ATTRIBUTES}.')
  st = dict(st)
  simple = {'Male': 'male', 'Eyeglasses': 'glasses', 'Smiling': 'smiling', 'Mustache': 'mustache',
            'Goatee': 'goatee', 'Pale_Skin': 'pale', 'Wearing_Lipstick': 'lipstick',
            'Rosy_Cheeks': 'rosy'}
  for name in ATTRIBUTES:  # a fixed order, so the result does not depend on dict order
    if name not in overrides:
      continue
    value = bool(overrides[name])
    if name in simple:
      st[simple[name]] = value
    elif name == 'No_Beard':
      if value:
        st['beard'] = st['mustache'] = st['goatee'] = False
      elif not (st['beard'] or st['mustache'] or st['goatee']):
        st['beard'] = True
    elif name == 'Bald':
      st['bald'] = value
      if value:
        st['hat'] = False
        st['bangs'] = False
    elif name in _HAIR_COLOUR_NAMES:
      c = _HAIR_COLOUR_NAMES.index(name)
      if value:
        st['hair'] = c
        st['hat'] = False
      elif st['hair'] == c:
        st['hair'] = _RED_HAIR
    elif name == 'Bangs':
      st['bangs'] = value
      if value:
        st['bald'] = False
        st['hat'] = False
    elif name == 'Wearing_Hat':
      st['hat'] = value
  labels = _labels(st)
  bad = [n for n in overrides if bool(labels[n]) != bool(overrides[n])]
  if bad:
    raise ValueError(f'synthetic_faces: overrides {dict(overrides)} contradict each other; '
                     f'the face would have {[(n, bool(labels[n])) for n in bad]}.')
  return st


def _labels_dict(st: dict) -> dict[str, bool]:
  return {k: bool(v) for k, v in _labels(st).items()}


def sample_attributes(seed: int, split: str, index: int) -> dict[str, bool]:
  """The attributes of image ``index`` of ``split`` (no rendering)."""
  split_id = _check_split(split)
  return _labels_dict(_state(_check_seed(seed), split_id, _check_index(index)))


def face_attributes(seed: int, split: str, index: int,
                    overrides: Mapping[str, bool] | None = None) -> dict[str, bool]:
  """Like ``sample_attributes`` but after ``overrides`` (what ``render`` would return)."""
  split_id = _check_split(split)
  st = _state(_check_seed(seed), split_id, _check_index(index))
  return _labels_dict(_apply_overrides(st, overrides))


def attributes_table(seed: int, split: str, num_examples: int) -> np.ndarray:
  """bool [num_examples, len(ATTRIBUTES)]: attributes of images 0..num_examples-1, vectorised."""
  split_id = _check_split(split)
  n = _check_int(num_examples, 'num_examples')
  if n < 0:
    raise ValueError(f'synthetic_faces: num_examples must be >= 0, got {n}.')
  labels = _labels(_sample_states(_check_seed(seed), split_id, np.arange(n, dtype=np.uint64)))
  table = np.zeros((n, len(ATTRIBUTES)), dtype=bool)
  for j, name in enumerate(ATTRIBUTES):
    table[:, j] = labels[name]
  return table


# ----------------------------------------------------------------------------
# Nuisance parameters.

_F32 = np.float32


def _rgb(*c) -> np.ndarray:
  return np.array(c, dtype=_F32)


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                  dtype=_F32)


def _lerp(a, b, t):
  return a + (b - a) * t


_SKIN_DARK = np.array([0.33, 0.21, 0.14])
_SKIN_LIGHT = np.array([0.91, 0.71, 0.56])
_SKIN_PALE = np.array([0.985, 0.915, 0.875])
_HAIR_BASE = (
    np.array([0.09, 0.075, 0.07]),  # black
    np.array([0.88, 0.74, 0.45]),  # blond
    np.array([0.44, 0.28, 0.15]),  # brown
    np.array([0.72, 0.72, 0.72]),  # gray
    np.array([0.72, 0.30, 0.12]),  # red / auburn (no label)
)
_IRIS = (_rgb(0.25, 0.15, 0.08), _rgb(0.12, 0.08, 0.05), _rgb(0.2, 0.35, 0.6), _rgb(0.25, 0.4, 0.25))
_LIPSTICK = (_rgb(0.78, 0.08, 0.16), _rgb(0.88, 0.28, 0.45), _rgb(0.52, 0.05, 0.22),
             _rgb(0.85, 0.15, 0.10))


class _Params:
  """Per-image nuisance parameters, drawn in a fixed order (so they never depend on attributes)."""

  def __init__(self, seed: int, split_id: int, index: int):
    u = _uniforms(seed, split_id, np.array([index], dtype=np.uint64), _NUISANCE_STREAM,
                  _NUM_NUISANCE_DRAWS)[0].tolist()
    it = iter(u)
    r = lambda lo=0.0, hi=1.0: lo + (hi - lo) * next(it)  # noqa: E731
    # Pose (image fractions; one face unit = ``scale`` of the image width).
    self.cx = r(0.44, 0.56)
    self.cy = r(0.53, 0.61)
    self.scale = r(0.215, 0.26)
    self.angle = r(-0.17, 0.17)
    # Face shape.
    self.a = r(0.84, 0.95)
    self.b = r(1.17, 1.29)
    t = next(it)
    self.taper_f, self.taper_m = 0.3 + 0.12 * t, 0.05 + 0.1 * t
    # Skin.
    t = next(it) ** 0.6
    self.skin = _lerp(_SKIN_DARK, _SKIN_LIGHT, t) * r(0.96, 1.04)
    self.skin = np.minimum(self.skin, _SKIN_LIGHT * 1.02)
    self.pale = _SKIN_PALE * r(0.985, 1.01)
    # Background: two colours and a gradient direction.
    h, s, v = r(), r(0.05, 0.55), r(0.25, 0.9)
    self.bg0 = _hsv(h, s, v)
    self.bg1 = _hsv(h + r(-0.12, 0.12), s * r(0.6, 1.2), v + r(-0.3, 0.3))
    self.bg_dir = r(0.0, 2 * math.pi)
    # Clothes.
    self.clothes = _hsv(r(), r(0.1, 0.8), r(0.15, 0.85))
    # Lighting and noise.
    self.brightness = r(0.87, 1.1)
    self.light = r(0.0, 0.28)
    self.light_dir = r(0.0, 2 * math.pi)
    self.noise = r(0.0, 0.035)
    self.noise_x, self.noise_y = next(it), next(it)
    # Hair.
    self.hair_jitter = r(0.88, 1.1)
    self.hair_hue = r(-0.04, 0.04)
    self.volume = r(0.06, 0.2)
    self.hairline = r(-0.88, -0.72)
    self.hair_curve = r(0.35, 0.7)
    self.parting = r(-0.25, 0.25)
    self.long_u = next(it)
    self.length = r(0.45, 1.5)
    self.bangs_depth = r(0.05, 0.12)
    self.fringe_top = r(-0.6, -0.45)
    # Eyes and eyebrows.
    self.ex = r(0.33, 0.4)
    self.ey = r(-0.13, -0.03)
    self.ew = r(0.13, 0.17)
    self.eh = r(0.055, 0.09)
    self.iris = _IRIS[min(int(next(it) * 4), 3)]
    self.gaze = r(-0.03, 0.03)
    self.brow_gap = r(0.2, 0.26)
    self.brow_tilt = r(-0.15, 0.15)
    self.brow_arch = r(0.0, 0.05)
    t = next(it)
    self.brow_f, self.brow_m = 0.05 + 0.03 * t, 0.09 + 0.04 * t
    self.brow_colour = _hsv(0.07, r(0.3, 0.6), r(0.08, 0.32))
    # Nose and mouth.
    self.nose_y = r(0.26, 0.34)
    self.mouth_y = r(0.56, 0.64)
    self.mouth_w = r(0.22, 0.29)
    self.frown = r(-0.25, 0.2)
    self.smile = r(0.85, 1.35)
    self.lips = r(0.07, 0.095)
    self.lipstick = _LIPSTICK[min(int(next(it) * 4), 3)] * r(0.9, 1.05)
    # Facial hair.
    t = next(it)
    self.facial_hair = (_hsv(0.07, 0.35, 0.55) if t < 0.1 else
                        _hsv(r(0.03, 0.09), r(0.3, 0.6), 0.06 + 0.3 * t))
    self.beard_line = r(0.38, 0.5)
    # Glasses.
    self.glass_ry = r(0.19, 0.24)
    self.glass_rx = r(0.07, 0.11)
    self.frame_t = r(0.13, 0.17)
    self.frame = _hsv(r(), r(0.0, 0.7), r(0.02, 0.22))
    self.tint = r(0.1, 0.35)
    self.round_frames = next(it) < 0.5
    # Hat.
    self.hat_bottom = r(-0.72, -0.56)
    self.crown = r(0.7, 1.0)
    self.brim = next(it) < 0.6
    self.brim_w = r(0.3, 0.55)
    self.hat = _hsv(r(), r(0.35, 0.9), r(0.3, 0.9))
    # Cheeks.
    self.rosy = _rgb(0.93, 0.42, 0.48) * r(0.92, 1.05)


# ----------------------------------------------------------------------------
# Geometry: signed distances (in face units, negative inside) in the face frame
# (u to the image right, v down, head centre at the origin).


def _ellipse(u, v, cu, cv, a, b):
  return (np.hypot((u - cu) * (1.0 / a), (v - cv) * (1.0 / b)) - 1.0) * min(a, b)


def _face_sdf(u, v, p: _Params, male: bool):
  taper = p.taper_m if male else p.taper_f
  # The half-width shrinks linearly below the eyes: a narrow chin for F, a square jaw for M.
  half = p.a * (1.0 - taper / p.b * np.maximum(v, 0.0))
  return (np.hypot(u / half, v * (1.0 / p.b)) - 1.0) * p.a


def _skin_sdf(u, v, p: _Params, male: bool):
  face = _face_sdf(u, v, p, male)
  au = np.abs(u)
  neck = np.maximum(au - 0.36, 0.55 - v)
  ears = _ellipse(au, v, p.a - 0.03, -0.02, 0.13, 0.21)
  return np.minimum(np.minimum(face, neck), ears), face


def _hair_long(st, p: _Params) -> bool:
  return p.long_u < (0.12 if st['male'] else 0.85)


def _cap_sdf(u, v, p: _Params, st):
  vol = p.volume + (0.0 if st['male'] else 0.08)
  return _ellipse(u, v, 0.0, 0.02, p.a + vol, p.b + 1.2 * vol)


def _hairline(u, p: _Params, bangs: bool):
  if bangs:
    top = p.ey - p.brow_gap - p.bangs_depth
    return top + 0.25 * (u - 0.5 * p.parting) ** 2
  return p.hairline + p.hair_curve * (u - p.parting) ** 2


def _hair_sdf(u, v, p: _Params, st):
  """Hair in front of the face (the cap, cut at the hairline)."""
  return np.maximum(_cap_sdf(u, v, p, st), v - _hairline(u, p, st['bangs']))


def _back_hair_sdf(u, v, p: _Params, st):
  """Long hair hanging behind the head down to ``p.length``."""
  vol = p.volume + 0.08
  side = np.maximum(np.abs(u) - (p.a + vol), np.maximum(v - p.length, -0.2 - v))
  return np.minimum(side, _cap_sdf(u, v, p, st))


def _fringe_sdf(u, v, p: _Params):
  """The hair a bald head keeps: patches at the temples."""
  ring = _ellipse(u, v, 0.0, 0.0, p.a + 0.05, p.b + 0.05)
  return np.maximum(np.maximum(ring, np.abs(v - 0.5 * (p.fringe_top + 0.1)) - 0.5 * (0.1 - p.fringe_top)),
                    (p.a - 0.22) - np.abs(u))


def _scalp_sdf(u, v, p: _Params):
  return np.maximum(_ellipse(u, v, 0.0, 0.0, p.a + 0.02, p.b + 0.02), v - p.hairline - 0.1)


def _hat_sdf(u, v, p: _Params):
  crown = np.maximum(_ellipse(u, v, 0.0, p.hat_bottom, p.a + 0.12, p.crown), v - p.hat_bottom)
  if p.brim:
    brim = _ellipse(u, v, 0.0, p.hat_bottom, p.a + p.brim_w, 0.11)
    crown = np.minimum(crown, brim)
  return crown


def _eye_sdf(u, v, p: _Params, grow=0.0):
  return _ellipse(np.abs(u), v, p.ex, p.ey, p.ew + grow, p.eh + grow)


def _brow_sdf(u, v, p: _Params, male: bool):
  du = np.abs(u) - p.ex
  by = p.ey - p.brow_gap
  dv = v - by - p.brow_tilt * du + p.brow_arch * (1.0 - (du * (1.0 / p.ew)) ** 2)
  half = 0.5 * (p.brow_m if male else p.brow_f)
  return np.maximum(np.abs(du) - (p.ew + 0.03), np.abs(dv) - half)


def _mouth_sdf(u, v, p: _Params, smiling: bool, teeth=False):
  """A lens along the curve v = y0 - curve u^2: upturned corners when smiling."""
  if smiling:
    w, curve, th = p.mouth_w * 1.18, p.smile, 0.105
    if teeth:
      th, y0 = 0.05, p.mouth_y - 0.02
    else:
      y0 = p.mouth_y
  else:
    w, curve, th, y0 = p.mouth_w, p.frown, 0.5 * p.lips, p.mouth_y
  x = u * (1.0 / w)
  return np.maximum(np.abs(v - (y0 - curve * w * w * x * x)) - th * (1.0 - x * x),
                    (np.abs(u) - w) * 0.5)


def _mustache_sdf(u, v, p: _Params):
  w = p.mouth_w + 0.06
  y0 = p.mouth_y - 0.155
  return np.maximum(np.abs(v - y0 - 0.3 * u * u) - 0.075, np.abs(u) - w)


def _goatee_sdf(u, v, p: _Params):
  return _ellipse(u, v, 0.0, p.mouth_y + 0.34, 0.21, 0.19)


def _beard_sdf(u, v, p: _Params, male: bool, face=None):
  if face is None:
    face = _face_sdf(u, v, p, male)
  return np.maximum(face, (p.beard_line - 0.3 * np.abs(u)) - v)


def _glasses_sdf(u, v, p: _Params, lenses=False):
  au = np.abs(u)
  rx, ry = p.ew + p.glass_rx, p.glass_ry
  du, dv = au - p.ex, v - p.ey
  if p.round_frames:
    ring = (np.hypot(du * (1.0 / rx), dv * (1.0 / ry)) - 1.0) * min(rx, ry)
  else:
    ring = np.maximum(np.abs(du) - rx, np.abs(dv) - ry)
  if lenses:
    return ring
  t = 0.5 * p.frame_t
  frame = np.abs(ring) - t
  inner = p.ex - rx  # the bridge spans |u| < inner
  bridge = np.maximum(au - inner - t, np.abs(dv + 0.03) - 0.7 * t)
  arm = np.maximum(np.maximum(au - (p.a + 0.03), (p.ex + rx) - au), np.abs(dv + 0.02) - 0.7 * t)
  return np.minimum(np.minimum(frame, bridge), arm)


def _cheek_sdf(u, v, p: _Params):
  return _ellipse(np.abs(u), v, p.ex + 0.12, p.nose_y - 0.02, 0.16, 0.13)


# ----------------------------------------------------------------------------
# Rendering.


@functools.lru_cache(maxsize=None)
def _grid(size: int):
  """Pixel centres in image fractions and a bank of noise, per size (cached)."""
  xs = ((np.arange(size, dtype=np.float64) + 0.5) / size).astype(_F32)
  noise = np.random.default_rng(size).standard_normal((2 * size, 2 * size, 3), dtype=_F32)
  xs.flags.writeable = False
  noise.flags.writeable = False
  return xs, noise


class _Frame:
  """Face-frame coordinates of every pixel, plus bounding boxes for cheap partial painting."""

  def __init__(self, size: int, p: _Params):
    self.size = size
    xs, _ = _grid(size)
    cs, sn = math.cos(p.angle), math.sin(p.angle)
    inv = 1.0 / p.scale
    dx, dy = xs - _F32(p.cx), xs - _F32(p.cy)
    self.u = (dx * _F32(cs * inv))[None, :] + (dy * _F32(sn * inv))[:, None]
    self.v = (dx * _F32(-sn * inv))[None, :] + (dy * _F32(cs * inv))[:, None]
    self.k = p.scale * size  # pixels per face unit
    self._t = (p.cx, p.cy, p.scale, cs, sn)

  def box(self, u0, u1, v0, v1):
    """Pixel slices covering the face-frame box [u0,u1]x[v0,v1] (+ a margin), or None."""
    cx, cy, s, cs, sn = self._t
    uc, vc, hu, hv = 0.5 * (u0 + u1), 0.5 * (v0 + v1), 0.5 * (u1 - u0), 0.5 * (v1 - v0)
    xc = cx + s * (cs * uc - sn * vc)
    yc = cy + s * (sn * uc + cs * vc)
    hx = s * (abs(cs) * hu + abs(sn) * hv)
    hy = s * (abs(sn) * hu + abs(cs) * hv)
    n = self.size
    x0 = max(int(math.floor((xc - hx) * n - 2.5)), 0)
    x1 = min(int(math.ceil((xc + hx) * n + 2.5)), n)
    y0 = max(int(math.floor((yc - hy) * n - 2.5)), 0)
    y1 = min(int(math.ceil((yc + hy) * n + 2.5)), n)
    if x0 >= x1 or y0 >= y1:
      return None
    return (slice(y0, y1), slice(x0, x1))

  def uv(self, box):
    return self.u[box], self.v[box]


def _paint(img, box, d, colour, k, opacity=1.0):
  """Alpha-blend ``colour`` where the signed distance ``d`` < 0 (anti-aliased over ~1/k)."""
  a = 0.5 - d * _F32(k)
  np.minimum(a, _F32(opacity), out=a)
  np.maximum(a, _F32(0.0), out=a)
  c = img[box]
  c += a[..., None] * (colour - c)


def _hair_colour(st, p: _Params) -> np.ndarray:
  base = _HAIR_BASE[st['hair']]
  if st['hair'] == 3:  # keep gray neutral
    return (base * p.hair_jitter).astype(_F32)
  return (base * p.hair_jitter + np.array([p.hair_hue, 0.0, -p.hair_hue])).clip(0, 1).astype(_F32)


def _render(st: dict, p: _Params, size: int) -> np.ndarray:
  xs, noise = _grid(size)
  fr = _Frame(size, p)
  k = fr.k
  male = st['male']
  hat = st['hat']
  bald = st['bald'] and not hat
  hair_visible = not hat
  bangs = st['bangs'] and not bald and hair_visible

  # Background: a linear gradient between two colours.
  g = ((xs - 0.5) * _F32(math.cos(p.bg_dir)))[None, :] + ((xs - 0.5) * _F32(math.sin(p.bg_dir)))[:, None]
  g += _F32(0.5)
  img = p.bg0 + g[..., None] * (p.bg1 - p.bg0)

  # Shoulders.
  bx = fr.box(-2.2, 2.2, p.b + 0.35, p.b + 1.9)
  if bx is not None:
    u, v = fr.uv(bx)
    _paint(img, bx, _ellipse(u, v, 0.0, p.b + 1.15, 1.9, 0.75), p.clothes, k)

  hair_col = _hair_colour(st, p)
  vol = p.volume + (0.0 if male else 0.08)

  # Long hair behind the head.
  if hair_visible and not bald and _hair_long(st, p):
    bx = fr.box(-p.a - vol, p.a + vol, -p.b - 1.3 * vol, max(p.length, 0.0))
    if bx is not None:
      u, v = fr.uv(bx)
      _paint(img, bx, _back_hair_sdf(u, v, p, st), hair_col * _F32(0.85), k)

  # Skin (face, ears, neck) with soft shading towards the face edge.
  skin = p.pale if st['pale'] else p.skin
  skin = skin.astype(_F32)
  bx = fr.box(-p.a - 0.15, p.a + 0.15, -p.b - 0.05, p.b + 2.0)
  u, v = fr.uv(bx)
  d, face = _skin_sdf(u, v, p, male)
  shade = _F32(1.0) - _F32(0.22) * np.minimum(np.maximum(face * _F32(1.0 / p.a) + _F32(1.0), 0.0), 1.3) ** 2
  _paint(img, bx, d, shade[..., None] * skin, k)

  if bald:
    # A highlight on the scalp and the remaining hair at the temples.
    bx = fr.box(-0.2, 0.6, -p.b, -p.b + 0.5)
    if bx is not None:
      u, v = fr.uv(bx)
      _paint(img, bx, _ellipse(u, v, 0.22, -p.b + 0.25, 0.28, 0.13) * _F32(0.25), _rgb(1, 1, 1), k,
             opacity=0.35)
    bx = fr.box(-p.a - 0.1, p.a + 0.1, p.fringe_top, 0.1)
    u, v = fr.uv(bx)
    _paint(img, bx, _fringe_sdf(u, v, p), hair_col, k)

  # Eyes: dark outline, white, iris.
  bx = fr.box(-p.ex - p.ew - 0.05, p.ex + p.ew + 0.05, p.ey - p.eh - 0.05, p.ey + p.eh + 0.05)
  u, v = fr.uv(bx)
  _paint(img, bx, _eye_sdf(u, v, p, 0.025), skin * _F32(0.35), k)
  _paint(img, bx, _eye_sdf(u, v, p), _rgb(0.94, 0.94, 0.92), k)
  ir = min(p.eh * 1.05, 0.085)
  _paint(img, bx, np.hypot(np.abs(u) - p.ex - p.gaze, v - p.ey) - ir, p.iris, k)

  # Eyebrows, then the hair in front of the face (bangs may touch the brows).
  by = p.ey - p.brow_gap
  bx = fr.box(-p.ex - p.ew - 0.1, p.ex + p.ew + 0.1, by - 0.2, by + 0.2)
  u, v = fr.uv(bx)
  _paint(img, bx, _brow_sdf(u, v, p, male), p.brow_colour, k)
  if hair_visible and not bald:
    bx = fr.box(-p.a - vol, p.a + vol, -p.b - 1.3 * vol, by + 0.2 if bangs else 0.3)
    u, v = fr.uv(bx)
    _paint(img, bx, _hair_sdf(u, v, p, st), hair_col, k)

  # Nose: a soft shadow under the tip.
  bx = fr.box(-0.2, 0.2, p.nose_y - 0.12, p.nose_y + 0.1)
  u, v = fr.uv(bx)
  _paint(img, bx, _ellipse(u, v, 0.0, p.nose_y, 0.12, 0.05), skin * _F32(0.55), k, opacity=0.6)

  if st['rosy']:
    bx = fr.box(-p.ex - 0.3, p.ex + 0.3, p.nose_y - 0.2, p.nose_y + 0.15)
    u, v = fr.uv(bx)
    _paint(img, bx, _cheek_sdf(u, v, p) * _F32(0.2), p.rosy, k, opacity=0.75)

  # Facial hair: one layer for beard, mustache and goatee.
  if st['beard'] or st['mustache'] or st['goatee']:
    bx = fr.box(-p.a, p.a, p.beard_line - 0.35 if st['beard'] else p.mouth_y - 0.3, p.b)
    u, v = fr.uv(bx)
    d = None
    if st['beard']:
      d = _beard_sdf(u, v, p, male)
    if st['mustache']:
      m = _mustache_sdf(u, v, p)
      d = m if d is None else np.minimum(d, m)
    if st['goatee']:
      m = _goatee_sdf(u, v, p)
      d = m if d is None else np.minimum(d, m)
    _paint(img, bx, d, p.facial_hair, k, opacity=0.95)

  # Mouth.
  lips = p.lipstick if st['lipstick'] else (skin * _rgb(0.78, 0.5, 0.5) + _rgb(0.1, 0.0, 0.0))
  w = p.mouth_w * 1.2
  bx = fr.box(-w, w, p.mouth_y - 0.45, p.mouth_y + 0.2)
  u, v = fr.uv(bx)
  smiling = st['smiling']
  _paint(img, bx, _mouth_sdf(u, v, p, smiling), lips, k)
  if smiling:
    _paint(img, bx, _mouth_sdf(u, v, p, True, teeth=True), _rgb(0.97, 0.96, 0.92), k)

  # Glasses: tinted lenses, then frames with bridge and temple arms.
  if st['glasses']:
    bx = fr.box(-p.a - 0.05, p.a + 0.05, p.ey - p.glass_ry - 0.1, p.ey + p.glass_ry + 0.1)
    u, v = fr.uv(bx)
    _paint(img, bx, _glasses_sdf(u, v, p, lenses=True), p.frame * _F32(0.5), k, opacity=p.tint)
    _paint(img, bx, _glasses_sdf(u, v, p), p.frame, k)

  if hat:
    bx = fr.box(-p.a - p.brim_w, p.a + p.brim_w, p.hat_bottom - p.crown, p.hat_bottom + 0.12)
    if bx is not None:
      u, v = fr.uv(bx)
      _paint(img, bx, _hat_sdf(u, v, p), p.hat, k)
      # A darker band just above the bottom of the crown.
      band = np.maximum(_hat_sdf(u, v, p), np.abs(v - (p.hat_bottom - 0.12)) - 0.06)
      _paint(img, bx, band, p.hat * _F32(0.6), k)

  # Lighting: a global brightness gradient; then pixel noise.
  ld = ((xs - 0.5) * _F32(p.light * math.cos(p.light_dir)))[None, :] + (
      (xs - 0.5) * _F32(p.light * math.sin(p.light_dir)))[:, None]
  ld += _F32(p.brightness)
  img *= ld[..., None]
  if p.noise > 0.0:
    oy, ox = int(p.noise_y * size), int(p.noise_x * size)
    img += noise[oy:oy + size, ox:ox + size] * _F32(p.noise)
  img *= _F32(255.0)
  img += _F32(0.5)
  np.clip(img, 0.0, 255.0, out=img)
  return img.astype(np.uint8)


def render(seed: int, split: str, index: int, size: int,
           overrides: Mapping[str, bool] | None = None) -> tuple[np.ndarray, dict[str, bool]]:
  """Renders image ``index`` of ``split``: (uint8 [size, size, 3], attributes).

  ``overrides`` ({attribute: bool}) draws the same face (same pose, colours, lighting,
  noise) with those attributes forced; see the module docstring for the rules. The
  returned attributes describe the rendered image.
  """
  split_id = _check_split(split)
  size = _check_size(size)
  seed = _check_seed(seed)
  index = _check_index(index)
  st = _apply_overrides(_state(seed, split_id, index), overrides)
  p = _Params(seed, split_id, index)
  return _render(st, p, size), _labels_dict(st)


def attribute_regions(seed: int, split: str, index: int, size: int,
                      overrides: Mapping[str, bool] | None = None) -> dict[str, np.ndarray]:
  """For each attribute, bool [size, size]: where it is (or would be) drawn on this face.

  Masks are dilated by one pixel so that they contain the anti-aliased edges. With
  ``overrides`` the regions are those of the overridden face (e.g. the Male region
  follows the overridden hair length).
  """
  split_id = _check_split(split)
  size = _check_size(size)
  seed = _check_seed(seed)
  index = _check_index(index)
  st = _apply_overrides(_state(seed, split_id, index), overrides)
  p = _Params(seed, split_id, index)
  fr = _Frame(size, p)
  u, v = fr.u, fr.v
  margin = 1.0 / fr.k  # one pixel in face units
  inside = lambda d: d < margin  # noqa: E731
  male = st['male']

  skin, face = _skin_sdf(u, v, p, male)
  skin_m = inside(skin)
  # Hair as drawn (long / short, bangs or not), and the hair the other attributes could add.
  st_b = dict(st, bangs=True)
  hair = inside(_hair_sdf(u, v, p, st)) | inside(_hair_sdf(u, v, p, st_b))
  if _hair_long(st, p):
    hair |= inside(_back_hair_sdf(u, v, p, st))
  hair |= inside(_fringe_sdf(u, v, p)) | inside(_scalp_sdf(u, v, p))
  hair_both = hair.copy()
  for male_alt in (True, False):  # the Male region covers both hair styles
    st_m = dict(st, male=male_alt)
    hair_both |= inside(_hair_sdf(u, v, p, st_m)) | inside(_hair_sdf(u, v, p, dict(st_m, bangs=True)))
    if _hair_long(st_m, p):
      hair_both |= inside(_back_hair_sdf(u, v, p, st_m))
  face_any = inside(_face_sdf(u, v, p, True)) | inside(_face_sdf(u, v, p, False))
  brows = inside(_brow_sdf(u, v, p, True)) | inside(_brow_sdf(u, v, p, False))
  mouth = inside(_mouth_sdf(u, v, p, True)) | inside(_mouth_sdf(u, v, p, False))
  mustache = inside(_mustache_sdf(u, v, p))
  goatee = inside(_goatee_sdf(u, v, p))
  beard = inside(_beard_sdf(u, v, p, male))
  by = p.ey - p.brow_gap
  forehead = (inside(_face_sdf(u, v, p, male)) & (v < by + 0.05) & (v > _hairline(u, p, False) - 0.1)) \
      | (inside(_hair_sdf(u, v, p, st_b)) & (v > _hairline(u, p, False) - 0.1))
  regions = {
      'Male': hair_both | face_any | skin_m | brows,
      'Eyeglasses': inside(_glasses_sdf(u, v, p)) | inside(_glasses_sdf(u, v, p, lenses=True)),
      'Smiling': mouth,
      'Mustache': mustache,
      'Goatee': goatee,
      'No_Beard': beard | mustache | goatee,
      'Bald': hair,
      'Bangs': forehead,
      'Wearing_Hat': inside(_hat_sdf(u, v, p)) | hair,
      'Pale_Skin': skin_m,
      'Wearing_Lipstick': mouth,
      'Rosy_Cheeks': inside(_cheek_sdf(u, v, p) - 0.05),
  }
  for name in _HAIR_COLOUR_NAMES:
    regions[name] = hair
  return {name: regions[name] for name in ATTRIBUTES}


# ----------------------------------------------------------------------------
# Data source.


class SyntheticFaces:
  """Random-access source of one split, grain-compatible (picklable, ``len``, ``[i]``).

  ``src[i]`` is ``{'image': uint8 [S, S, 3], 'attributes': {name: bool}}``, the record
  layout of tfds ``celeb_a``'s data source.
  """

  def __init__(self, split: str, image_size: int = 64, seed: int = 0,
               num_examples: int | None = None):
    self._split_id = _check_split(split)
    self.split = split
    self.image_size = _check_size(image_size)
    self.seed = _check_int(seed, 'seed')
    if num_examples is None:
      num_examples = DEFAULT_SPLIT_SIZES[split]
    num_examples = _check_int(num_examples, 'num_examples')
    if not 0 < num_examples <= _MAX_INDEX:
      raise ValueError(f'synthetic_faces: num_examples must be in [1, {_MAX_INDEX}], '
                       f'got {num_examples}.')
    self.num_examples = num_examples

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index) -> dict:
    index = _check_index(index, self.num_examples)
    image, attributes = render(self.seed, self.split, index, self.image_size)
    return {'image': image, 'attributes': attributes}

  def attributes_table(self) -> np.ndarray:
    """bool [len(self), len(ATTRIBUTES)], without rendering (columns in ``ATTRIBUTES`` order)."""
    return attributes_table(self.seed, self.split, self.num_examples)

  def __repr__(self) -> str:
    return (f'SyntheticFaces(split={self.split!r}, image_size={self.image_size}, '
            f'seed={self.seed}, num_examples={self.num_examples})')
