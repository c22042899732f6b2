"""Labels: raw dataset attributes and a small registry of derived labels.

A *label* is what a method is trained on (`config.data.labels`). It is either a raw attribute
of the dataset (CelebA's 40 binary attributes, the synthetic faces' subset of them) or a
*derived* label computed from raw attributes, registered here by name:

- `Beard` = not `No_Beard`;
- `FacialHair` = `Beard` or `Goatee` or `Mustache` (IntroVAC's facial-hair attribute);
- `Hair_MULTI` (categorical, 6 classes; the CCVAE reproduction report's multi-class hair label):
  0 Bald, 1 Black_Hair, 2 Blond_Hair, 3 Brown_Hair, 4 Gray_Hair, 5 none of them. The report
  has the five classes only and does not say what it did with faces that have none or several of
  the attributes; here an example with several takes the first in that order (so Bald wins over
  a fringe colour, which is how the synthetic faces draw a bald head with gray temples) and an
  example with none (CelebA's unlabelled hair colours, the synthetic faces' red hair, hats)
  gets class 5 rather than being dropped, so that every example keeps a label.
- `Identity` (categorical): the record's identity class, with as many classes as the dataset
  has identities (`num_classes=None`: the count comes from the dataset, through
  `DataSpec.num_classes`); datasets with identities (synthetic_identities, celeb_a_identities)
  put it in each record's attributes and list it among their categorical labels.

A derived label is a function of the attribute dict. The function is vectorised: it gets a
mapping from attribute name to a numpy bool scalar or array (one entry per example) and
returns an array of the same shape, so the same definition labels one example or a whole
attribute table. A binary label returns bools; a categorical label (`kind='categorical'`)
returns int class indices in `[0, num_classes)`, which land as floats in the batch's `label`
vector (see docs/contracts.md).

Register new derived labels at import time of a module (worker processes of the input
pipeline re-import modules; a label registered at run time in the main process only is not
visible there).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

BINARY = "binary"
CATEGORICAL = "categorical"


@dataclasses.dataclass(frozen=True)
class DerivedLabel:
    """A label computed from raw attributes.

    Attributes:
      name: the label's name, as used in `config.data.labels`.
      constituents: the raw attributes the label is computed from.
      fn: attribute mapping (name -> bool scalar or array) -> label values (bool for binary
        labels, int class index for categorical ones), vectorised over examples.
      kind: `BINARY` or `CATEGORICAL`.
      num_classes: 2 for binary labels; the number of classes of a categorical label; None
        for a categorical label whose class count the dataset sets (a data set's identities:
        `num_classes(name, classes)` reads it from `DataSpec.num_classes`).
      description: one line for docs and error messages.
    """

    name: str
    constituents: tuple[str, ...]
    fn: Callable[[Mapping[str, Any]], Any]
    kind: str = BINARY
    num_classes: int | None = 2
    description: str = ""


DERIVED_LABELS: dict[str, DerivedLabel] = {}


def register_derived_label(
    name: str,
    constituents: Sequence[str],
    fn: Callable[[Mapping[str, Any]], Any],
    *,
    kind: str = BINARY,
    num_classes: int | None = 2,
    description: str = "",
) -> DerivedLabel:
    """Adds a derived label to the registry and returns it."""
    if name in DERIVED_LABELS:
        raise ValueError(f"derived label {name!r} is already registered")
    if kind not in (BINARY, CATEGORICAL):
        raise ValueError(f"derived label {name!r}: kind must be {BINARY!r} or {CATEGORICAL!r}")
    if kind == BINARY and num_classes != 2:
        raise ValueError(f"derived label {name!r}: a binary label has num_classes=2")
    if kind == CATEGORICAL and num_classes is not None and num_classes < 2:
        raise ValueError(f"derived label {name!r}: a categorical label needs num_classes >= 2 "
                         f"(or None: set by the dataset)")
    label = DerivedLabel(name, tuple(constituents), fn, kind,
                         None if num_classes is None else int(num_classes), description)
    DERIVED_LABELS[name] = label
    return label


def _beard(a: Mapping[str, Any]) -> np.ndarray:
    return np.logical_not(a["No_Beard"])


def _facial_hair(a: Mapping[str, Any]) -> np.ndarray:
    return np.logical_not(a["No_Beard"]) | np.asarray(a["Goatee"], bool) | np.asarray(
        a["Mustache"], bool)


register_derived_label("Beard", ("No_Beard",), _beard, description="not No_Beard")
register_derived_label(
    "FacialHair", ("No_Beard", "Goatee", "Mustache"), _facial_hair,
    description="Beard (= not No_Beard) or Goatee or Mustache (IntroVAC)")


HAIR_MULTI_CLASSES = ("Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


def _hair_multi(a: Mapping[str, Any]) -> np.ndarray:
    out = np.full(np.shape(np.asarray(a[HAIR_MULTI_CLASSES[0]])), len(HAIR_MULTI_CLASSES),
                  np.int64)
    for k in reversed(range(len(HAIR_MULTI_CLASSES))):  # the first true attribute wins
        out = np.where(np.asarray(a[HAIR_MULTI_CLASSES[k]], bool), k, out)
    return out


register_derived_label(
    "Hair_MULTI", HAIR_MULTI_CLASSES, _hair_multi, kind=CATEGORICAL,
    num_classes=len(HAIR_MULTI_CLASSES) + 1,
    description="0 Bald, 1 Black, 2 Blond, 3 Brown, 4 Gray, 5 none (first true attribute wins; "
                "CCVAE report's multi-class hair label)")


IDENTITY = "Identity"
register_derived_label(
    IDENTITY, (IDENTITY,), lambda a: np.asarray(a[IDENTITY], np.int64), kind=CATEGORICAL,
    num_classes=None,
    description="the identity class of a dataset with identities (its number of identities)")


def is_derived(label: str) -> bool:
    return label in DERIVED_LABELS


def constituents(label: str) -> tuple[str, ...]:
    """The raw attributes a label is computed from: `(label,)` for a raw attribute."""
    if label in DERIVED_LABELS:
        return DERIVED_LABELS[label].constituents
    return (label,)


def label_kind(label: str) -> str:
    """`'binary'` or `'categorical'`; raw attributes are binary."""
    return DERIVED_LABELS[label].kind if label in DERIVED_LABELS else BINARY


def num_classes(label: str, classes: Mapping[str, int] | None = None) -> int:
    """A label's class count: `classes[label]` where given (a `DataSpec.num_classes`, which
    holds the dataset-set counts), else the registry's; 2 for raw attributes."""
    if classes and label in classes:
        return int(classes[label])
    if label not in DERIVED_LABELS:
        return 2
    n = DERIVED_LABELS[label].num_classes
    if n is None:
        raise ValueError(f"label {label!r}: its number of classes is set by the dataset; pass "
                         f"the data spec's num_classes")
    return n


def available_labels(attribute_names: Iterable[str]) -> tuple[str, ...]:
    """The raw attributes followed by every derived label computable from them."""
    raw = tuple(attribute_names)
    have = set(raw)
    derived = tuple(name for name, d in DERIVED_LABELS.items()
                    if set(d.constituents) <= have and name not in have)
    return raw + derived


def required_attributes(label_names: Iterable[str]) -> tuple[str, ...]:
    """The raw attributes needed for `label_names`, without repeats, in first-use order."""
    out: list[str] = []
    for label in label_names:
        for attr in constituents(label):
            if attr not in out:
                out.append(attr)
    return tuple(out)


def label_values(label: str, attributes: Mapping[str, Any]) -> np.ndarray:
    """One label's values: bool for binary labels, int for categorical ones."""
    if label in DERIVED_LABELS:
        return np.asarray(DERIVED_LABELS[label].fn(attributes))
    return np.asarray(attributes[label], dtype=bool)


def compute_labels(label_names: Sequence[str], attributes: Mapping[str, Any]) -> np.ndarray:
    """float32 label vector(s) `[..., len(label_names)]` in the order of `label_names`.

    `attributes` maps raw attribute names to bool scalars (one example: the result has shape
    `[n]`) or bool arrays `[N]` (a table: the result has shape `[N, n]`). Binary labels are 0/1,
    categorical labels their class index.
    """
    if not label_names:
        first = next(iter(attributes.values()), False) if attributes else False
        return np.zeros(np.shape(first) + (0,), np.float32)
    cols = [label_values(label, attributes).astype(np.float32) for label in label_names]
    return np.stack(cols, axis=-1)


def table_as_mapping(table: np.ndarray, attribute_names: Sequence[str]) -> dict[str, np.ndarray]:
    """A bool table `[N, A]` as a mapping attribute name -> column `[N]`."""
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != len(attribute_names):
        raise ValueError(f"attribute table of shape {table.shape} does not match "
                         f"{len(attribute_names)} attribute names")
    return {name: table[:, k] for k, name in enumerate(attribute_names)}
