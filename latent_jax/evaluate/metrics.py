"""Evaluation metrics shared by every method.

Everything here reaches a method only through its capability functions (`reconstruct`, `edit`,
`sample`, `classify`; see docs/contracts.md), each jitted once and fed fixed-size, zero-padded
batches, and scores the outputs with the independent judge (`latent_jax.evaluate.judge`). It
never looks at a method's name.

Metrics (the names used in reports and metric files):
- `recon_l1`, `recon_mse`: mean absolute / squared pixel error of reconstructions of test images.
- `frechet_judge_recon`, `frechet_judge_sample`: Fréchet distance between Gaussians fitted to the
  *judge's* penultimate features of real test images and of (a) their reconstructions, (b) samples
  drawn with the test images' label rows. This is NOT the Inception FID: the embedding is the
  judge trained on this dataset, so values are comparable between methods on one dataset and judge,
  not with published FIDs.
- edits, for every binary method label l and direction (add: test images whose true l is 0,
  changes[:, l] = +1; remove: images with l = 1, changes[:, l] = -1):
  `edit_success` = fraction of edited images that the judge assigns the target value of l;
  `edit_preservation` = fraction of (image, other attribute) pairs whose judge prediction on the
  edited image equals the prediction on the original image, over the judge attributes other than
  l, its constituents and attributes derived from it (`latent_jax.data.labels.constituents`);
  `edit_preservation_vs_recon` = the same against the prediction on the reconstruction (isolates
  the edit from reconstruction loss); plus per-attribute preservation.
  `edit_success_pooled` = success over every edited image of both directions of a label
  (weighted by the number of images; mean over labels). With the evaluation on a label's subset
  (`config.eval.apply_subset`), add success, remove success and pooled success are the target,
  neutral and final accuracies of CSVAE's Table 4 (paper 001). With two or more labels,
  one multi-attribute edit adds every label to the images lacking at least one of them
  (`multi_edit_success`: the judge assigns all labels).
- conditional sampling, for every binary label l and value v: y = label rows of random test images
  with column l set to v; `sample_accept_rate` = fraction accepted by the method's own check;
  `sample_correct` = fraction of *accepted* samples the judge classifies as v for l (undefined,
  and left out of the mean, for a setting with no accepted sample: see
  `settings_without_accepted_samples`); `sample_yield` = fraction of all samples both accepted
  and judged correct (penalises rejection).
- `edit_locality` (datasets with attribute regions, e.g. the synthetic faces): for single-label
  edits, the share of the pixel change against the reconstruction (|edit - recon| summed over
  channels) inside the edited attribute's region, averaged over images; `region_share` is the
  share of the image that region covers (the locality of a change spread evenly). See
  `latent_jax.evaluate.latent.edit_locality`.
- `classify_accuracy`, `classify_balanced_accuracy`: the method's own classifier on test images
  (skipped when `classify` returns None); `categorical_accuracy` for categorical labels, whose
  `classify` column is the predicted class index.
- `latent`: for methods with `label_codes` (one latent coordinate per label), the Wasserstein
  distance between each binary label's two class-conditional code distributions (`mean_wasserstein`)
  and, for categorical labels, whether the classes separate (`latent.latent_code_metrics`).
- `judge_accuracy`, `judge_balanced_accuracy`: the judge's test accuracy, so every report says how
  far its verdicts can be trusted.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from latent_jax import interrupt
from latent_jax.evaluate import latent as latent_lib
from latent_jax.evaluate.judge import Judge, accuracy_table
from latent_jax.errors import ConfigError
from latent_jax.methods.base import jit_once


# --------------------------------------------------------------------------------- Fréchet
def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features [N, D], in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need at least two feature rows [N, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), with
    tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))) (eigenvalues clipped at 0), computed with
    numpy's symmetric eigensolver only.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    tr_covmean = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (judge features, not
    Inception features: see the module docstring)."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


# --------------------------------------------------------------------------------- data
@dataclasses.dataclass
class EvalSet:
    """The test images an evaluation uses, with the judge's and the method's labels."""

    images: np.ndarray                 # float32 [N, H, W, C] in [0, 1]
    attributes: np.ndarray             # [N, n_attributes] 0/1, columns = attribute_names
    attribute_names: tuple[str, ...]
    labels: np.ndarray                 # [N, n_labels], columns = label_names (method labels)
    label_names: tuple[str, ...]
    regions: Mapping[str, np.ndarray] | None = None  # attribute -> bool [N, H, W], if known

    def __post_init__(self):
        n = len(self.images)
        if len(self.attributes) != n or len(self.labels) != n:
            raise ValueError("EvalSet: images, attributes and labels differ in length")
        self.attribute_names = tuple(self.attribute_names)
        self.label_names = tuple(self.label_names)

    def __len__(self):
        return len(self.images)


def _is_binary(column: np.ndarray) -> bool:
    return bool(np.all((column == 0) | (column == 1)))


def related_attributes(name: str, names: Sequence[str],
                       constituents: Callable[[str], Sequence[str]] | None = None) -> set[str]:
    """`name`, its constituents, and every attribute defined from it or from a shared constituent
    (e.g. FacialHair -> Mustache, Goatee, No_Beard; Mustache -> FacialHair). Excluded from edit
    preservation because an edit of `name` is supposed to change them."""
    if constituents is None:
        constituents = _default_constituents
    own = set(constituents(name)) | {name}
    return own | {other for other in names if (set(constituents(other)) | {other}) & own}


def _default_constituents(name: str) -> tuple[str, ...]:
    from latent_jax.data import labels as labels_lib  # pylint: disable=import-outside-toplevel

    return tuple(labels_lib.constituents(name))


# --------------------------------------------------------------------------------- capabilities
def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad])


def _seed_from_key(key: jax.Array) -> int:
    return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))


class Capabilities:
    """A method's capability functions, each jitted once per method (`base.jit_once`), applied in
    fixed-size batches.

    Inputs and outputs are host numpy arrays; the last batch is zero-padded to `batch_size`
    (one compilation per function) and the padding rows are dropped from the outputs.
    """

    def __init__(self, method, states, batch_size: int, edit_strength: float | None = None):
        self.method = method
        self.states = states
        self.batch_size = int(batch_size)
        if self.batch_size <= 0:
            raise ConfigError(f"config.eval.batch_size must be positive, got {batch_size}")
        strength = None if edit_strength is None else float(edit_strength)
        self._reconstruct = jit_once(method, "reconstruct", lambda: jax.jit(method.reconstruct))
        self._reconstruct_labelled = (
            jit_once(method, "reconstruct_given_labels",
                     lambda: jax.jit(method.reconstruct_given_labels))
            if getattr(method, "reconstructs_given_labels", False) else None)
        self._edit = jit_once(method, ("edit", strength), lambda: jax.jit(
            lambda s, x, c: method.edit(s, x, c, strength)))
        self._sample = jit_once(method, "sample", lambda: jax.jit(method.sample))
        self._classify = (jit_once(method, "classify", lambda: jax.jit(method.classify))
                          if method.has("classify") else None)
        self._label_codes = (jit_once(method, "label_codes", lambda: jax.jit(method.label_codes))
                             if method.has("label_codes") else None)

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            interrupt.check()
            yield start, min(start + self.batch_size, n)

    def _map_batches(self, fn, x: np.ndarray, *rows: np.ndarray) -> list[np.ndarray]:
        """`fn(states, batch, *row_batches)` over x (and arrays `rows` of x's length, batched
        alongside) in padded batches of `batch_size`; float32, padding cut."""
        out = []
        for a, b in self._batches(len(x)):
            r = fn(self.states, *(_pad_to(v[a:b], self.batch_size) for v in (x,) + rows))
            out.append(np.asarray(r, np.float32)[:b - a])
        return out

    def reconstruct(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Reconstructions of x; given x's true `labels`, at those labels for a method that
        conditions on them (`reconstructs_given_labels`)."""
        if labels is None or self._reconstruct_labelled is None:
            out = self._map_batches(self._reconstruct, x)
        else:
            out = self._map_batches(self._reconstruct_labelled, x,
                                    np.asarray(labels, np.float32))
        return np.concatenate(out) if out else np.zeros_like(x)

    def edit(self, x: np.ndarray, changes: np.ndarray) -> np.ndarray:
        out = self._map_batches(self._edit, x, np.asarray(changes, np.float32))
        return np.concatenate(out) if out else np.zeros_like(x)

    def sample(self, rng: jax.Array, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, accs = [], []
        y = np.asarray(y, np.float32)
        for i, (a, b) in enumerate(self._batches(len(y))):
            x, acc = self._sample(self.states, jax.random.fold_in(rng, i),
                                  _pad_to(y[a:b], self.batch_size))
            xs.append(np.asarray(x, np.float32)[:b - a])
            accs.append(np.asarray(acc, bool).reshape(-1)[:b - a])
        return np.concatenate(xs), np.concatenate(accs)

    def classify(self, x: np.ndarray) -> np.ndarray | None:
        """The method's label logits, or None when it does not declare `classify`."""
        if self._classify is None or len(x) == 0:
            return None
        return np.concatenate(self._map_batches(self._classify, x))


    def label_codes(self, x: np.ndarray) -> np.ndarray | None:
        """The method's per-label latent coordinates [N, n_labels], or None without them."""
        if self._label_codes is None or len(x) == 0:
            return None
        return np.concatenate(self._map_batches(self._label_codes, x))


# --------------------------------------------------------------------------------- metrics
def _nanmean(values) -> float:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _frac(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if np.size(mask) else float("nan")


def reconstruction_metrics(images: np.ndarray, recons: np.ndarray) -> dict:
    diff = np.asarray(recons, np.float64) - np.asarray(images, np.float64)
    return {"recon_l1": float(np.mean(np.abs(diff))), "recon_mse": float(np.mean(diff ** 2))}


def _preservation(pred_edit: np.ndarray, reference: np.ndarray, cols: list[int],
                  names: Sequence[str]) -> tuple[float, dict[str, float]]:
    if not cols or len(pred_edit) == 0:
        return float("nan"), {}
    same = pred_edit[:, cols] == reference[:, cols]
    return float(np.mean(same)), {names[c]: float(np.mean(same[:, k])) for k, c in enumerate(cols)}


def balanced_preservation(pred_edit: np.ndarray, reference: np.ndarray, cols: list[int],
                          names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Per attribute, the mean over its two reference classes of the rate at which the edit
    keeps it (present stays present, absent stays absent), so that a rare attribute's
    "absent stays absent" cannot dominate; a class with no example is left out of its
    attribute's mean. Returns (mean over attributes, {attribute: balanced rate})."""
    if not cols or len(pred_edit) == 0:
        return float("nan"), {}
    per = {}
    for c in cols:
        ref, kept = reference[:, c], pred_edit[:, c] == reference[:, c]
        rates = [float(np.mean(kept[ref == v])) for v in (False, True) if np.any(ref == v)]
        per[names[c]] = float(np.mean(rates))
    return float(np.mean(list(per.values()))), per


def _edit_setting(caps: Capabilities, judge: Judge, data: EvalSet, rows: np.ndarray,
                  changes: np.ndarray, targets: Mapping[str, int], pred_orig: np.ndarray,
                  pred_recon: np.ndarray, constituents, recons: np.ndarray | None = None) -> dict:
    """Edits `data.images[rows]` with `changes` and scores them against `targets` (label -> value);
    with one target that has a region in `data.regions`, also the edit's locality."""
    excluded = set()
    for name in targets:
        excluded |= related_attributes(name, judge.attribute_names, constituents)
    cols = [j for j, a in enumerate(judge.attribute_names) if a not in excluded]
    n = int(len(rows))
    result: dict[str, Any] = {"n": n, "preserved_attributes": [judge.attribute_names[c] for c in cols]}
    if n == 0:
        result.update(success=float("nan"), preservation=float("nan"),
                      preservation_vs_recon=float("nan"), recon_target_rate=float("nan"),
                      balanced_preservation=float("nan"),
                      balanced_preservation_vs_recon=float("nan"),
                      per_label_success={}, per_attribute_preservation={},
                      per_attribute_preservation_vs_recon={})
        return result
    edited = caps.edit(data.images[rows], changes)
    pred_edit = judge.predict(edited)
    judged = {name: v for name, v in targets.items() if name in judge.attribute_names}
    per_label = {name: _frac(pred_edit[:, judge.index(name)] == bool(v))
                 for name, v in judged.items()}
    if judged:
        hit = np.all([pred_edit[:, judge.index(name)] == bool(v) for name, v in judged.items()],
                     axis=0)
        base = np.all([pred_recon[rows, judge.index(name)] == bool(v)
                       for name, v in judged.items()], axis=0)
        success, recon_rate = _frac(hit), _frac(base)
    else:  # the judge does not know this label: success cannot be measured
        success, recon_rate = float("nan"), float("nan")
    pres, per_attr = _preservation(pred_edit, pred_orig[rows], cols, judge.attribute_names)
    pres_r, per_attr_r = _preservation(pred_edit, pred_recon[rows], cols, judge.attribute_names)
    bal, per_bal = balanced_preservation(pred_edit, pred_orig[rows], cols, judge.attribute_names)
    bal_r, per_bal_r = balanced_preservation(pred_edit, pred_recon[rows], cols,
                                             judge.attribute_names)
    (target,) = targets if len(targets) == 1 else (None,)
    if recons is not None and data.regions is not None and target in data.regions:
        result.update(latent_lib.edit_locality(edited, recons[rows], data.regions[target][rows]))
    result.update(success=success, preservation=pres, preservation_vs_recon=pres_r,
                  recon_target_rate=recon_rate, per_label_success=per_label,
                  per_attribute_preservation=per_attr,
                  per_attribute_preservation_vs_recon=per_attr_r,
                  balanced_preservation=bal, balanced_preservation_vs_recon=bal_r,
                  per_attribute_balanced_preservation=per_bal,
                  per_attribute_balanced_preservation_vs_recon=per_bal_r,
                  judged=bool(judged))
    return result


def edit_metrics(caps: Capabilities, judge: Judge, data: EvalSet, pred_orig: np.ndarray,
                 pred_recon: np.ndarray, constituents=None,
                 recons: np.ndarray | None = None) -> dict:
    """Single-label add/remove edits for every binary method label, plus one multi-label edit."""
    settings = []
    notes = []
    binary = []
    n_labels = len(data.label_names)
    for l, name in enumerate(data.label_names):
        column = data.labels[:, l]
        if not _is_binary(column):
            notes.append(f"edit: label {name} is not binary; skipped")
            continue
        binary.append(l)
        if name not in judge.attribute_names:
            notes.append(f"edit: the judge has no attribute {name}; success not measured")
        for direction, (source, change, target) in (("add", (0, 1.0, 1)),
                                                     ("remove", (1, -1.0, 0))):
            rows = np.flatnonzero(column == source)
            changes = np.zeros((len(rows), n_labels), np.float32)
            changes[:, l] = change
            res = _edit_setting(caps, judge, data, rows, changes, {name: target}, pred_orig,
                                pred_recon, constituents, recons)
            settings.append(dict(label=name, direction=direction, **res))
    multi = None
    if len(binary) >= 2:
        names = [data.label_names[l] for l in binary]
        rows = np.flatnonzero(np.any(data.labels[:, binary] == 0, axis=1))
        changes = np.zeros((len(rows), n_labels), np.float32)
        changes[:, binary] = 1.0
        multi = dict(labels=names, direction="add",
                     **_edit_setting(caps, judge, data, rows, changes, {n: 1 for n in names},
                                     pred_orig, pred_recon, constituents))
    pooled = {}
    for name in {s["label"] for s in settings}:
        judged = [s for s in settings if s["label"] == name and s["n"] and np.isfinite(s["success"])]
        n = sum(s["n"] for s in judged)
        pooled[name] = (sum(s["n"] * s["success"] for s in judged) / n) if n else float("nan")
    return {
        "settings": settings,
        "multi": multi,
        "pooled_success": pooled,
        "edit_success_pooled": _nanmean(pooled.values()),
        "edit_success": _nanmean(s["success"] for s in settings),
        "edit_preservation": _nanmean(s["preservation"] for s in settings),
        "edit_preservation_vs_recon": _nanmean(s["preservation_vs_recon"] for s in settings),
        "edit_balanced_preservation": _nanmean(s["balanced_preservation"] for s in settings),
        "edit_balanced_preservation_vs_recon": _nanmean(s["balanced_preservation_vs_recon"]
                                                        for s in settings),
        "edit_locality": _nanmean(s.get("locality") for s in settings),
        "edit_locality_region_share": _nanmean(s.get("region_share") for s in settings),
        "notes": notes,
    }


def table1_metrics(caps: Capabilities, judge: Judge, data: EvalSet,
                   recons: np.ndarray) -> dict:
    """Creswell et al.'s Table 1 protocol (paper 003, Sec. 4.2), for every binary label the judge
    knows: the test images of each source class y (the paper uses y = 1 only; y = 0 is
    reported separately) are decoded with the label set to 0 and to 1 (`edit` with -1 / +1);
    class0 / class1 are the judge's rates of 0 / 1 on the two sets, mse the mean squared error
    of the reconstructions in [0, 1] on the same images, n their number (the whole evaluation
    set's images of that class, not the reference's first batch)."""
    settings, notes = [], []
    for l, name in enumerate(data.label_names):
        column = data.labels[:, l]
        if not _is_binary(column):
            continue
        if name not in judge.attribute_names:
            notes.append(f"table1: the judge has no attribute {name}; skipped")
            continue
        j = judge.index(name)
        for source in (1, 0):
            rows = np.flatnonzero(column == source)
            entry = {"label": name, "source": source, "n": int(len(rows))}
            if len(rows) == 0:
                entry.update(class0=float("nan"), class1=float("nan"), mse=float("nan"))
                settings.append(entry)
                continue
            for target, change in ((0, -1.0), (1, 1.0)):
                changes = np.zeros((len(rows), len(data.label_names)), np.float32)
                changes[:, l] = change
                pred = judge.predict(caps.edit(data.images[rows], changes))[:, j]
                entry[f"class{target}"] = _frac(pred == bool(target))
            entry["mse"] = float(np.mean(np.square(recons[rows] - data.images[rows])))
            settings.append(entry)
    return {"settings": settings, "notes": notes}


# Joint classes of binary labels that `class_sample_metrics` samples at most: 4 labels. Their
# number doubles with every label (CCVAE's 16 labels would be 65536 classes of num_samples).
MAX_JOINT_CLASSES = 16


def class_sample_metrics(caps: Capabilities, judge: Judge, data: EvalSet, num_samples: int,
                         rng: jax.Array) -> dict:
    """Lr-LiVAE's Tables 1-2 for every method that samples: `num_samples` samples of each joint
    class of the binary labels the judge knows (other labels from random test rows), the judge
    score over all of them (`diversity.judge_score`, the Inception Score's formula with the
    judge's posterior) and the intra-class diversity of each class (Eq. 12). Skipped, with a
    note, when the labels have more than `MAX_JOINT_CLASSES` joint classes."""
    from latent_jax.evaluate import diversity  # pylint: disable=import-outside-toplevel

    cols = [l for l, n in enumerate(data.label_names)
            if _is_binary(data.labels[:, l]) and n in judge.attribute_names]
    if not cols:
        return {"notes": ["class samples: no binary label the judge knows; skipped"]}
    if 2 ** len(cols) > MAX_JOINT_CLASSES:
        return {"notes": [f"class samples: {len(cols)} binary labels have {2 ** len(cols)} joint "
                          f"classes, more than {MAX_JOINT_CLASSES}; skipped"]}
    names = [data.label_names[l] for l in cols]
    np_rng = np.random.default_rng(_seed_from_key(jax.random.fold_in(rng, 0)))
    per_class, probs = {}, []
    for c in range(2 ** len(cols)):
        bits = [(c >> (len(cols) - 1 - i)) & 1 for i in range(len(cols))]
        y = np.asarray(data.labels[np_rng.integers(0, len(data), int(num_samples))],
                       np.float32).copy()
        y[:, cols] = bits
        x, _ = caps.sample(jax.random.fold_in(rng, 1 + c), y)
        p = 1.0 / (1.0 + np.exp(-np.asarray(judge.logits(x))[:, [judge.index(n) for n in names]]))
        probs.append(diversity.joint_class_probs(p))
        key = ",".join(f"{n}={b}" for n, b in zip(names, bits))
        per_class[key] = {"intra_class_diversity": diversity.intra_class_diversity(x),
                          "n": int(len(x))}
    return {"labels": names, "classes": per_class,
            "judge_score": diversity.judge_score(np.concatenate(probs)),
            "num_classes": 2 ** len(cols),
            "intra_class_diversity": _nanmean(v["intra_class_diversity"]
                                              for v in per_class.values()),
            "notes": []}


def categorical_class_sample_metrics(caps: Capabilities, class_judge, data: EvalSet,
                                    num_samples: int, rng: jax.Array) -> dict:
    """Lr-LiVAE's Tables 1-2 for a categorical label (e.g. synthetic_identities' Identity):
    samples of every class c of `class_judge.label` (the other labels from random test rows),
    `per_class = max(2, min(num_samples, ceil(1000 / K)))` each, so that a hundred classes cost
    a thousand samples. The judge score uses the class judge's softmax posterior over the K
    classes; `class_correct` is the share of samples whose most probable class is the one they
    were drawn for; the intra-class diversity (Eq. 12) is averaged over the classes."""
    from latent_jax.evaluate import diversity  # pylint: disable=import-outside-toplevel

    name, k = class_judge.label, int(class_judge.num_classes)
    l = data.label_names.index(name)
    per_class = max(2, min(int(num_samples), -(-1000 // k)))
    np_rng = np.random.default_rng(_seed_from_key(jax.random.fold_in(rng, 0)))
    y = np.asarray(data.labels[np_rng.integers(0, len(data), k * per_class)], np.float32).copy()
    target = np.repeat(np.arange(k), per_class)
    y[:, l] = target
    x, _ = caps.sample(jax.random.fold_in(rng, 1), y)
    log_probs = class_judge.log_probs(x)
    hit = np.argmax(log_probs, axis=1) == target
    diversity_per_class = [diversity.intra_class_diversity(x[target == c]) for c in range(k)]
    return {"label": name, "num_classes": k, "per_class": per_class, "n": int(len(x)),
            "judge_score": diversity.judge_score(np.exp(log_probs)),
            "class_correct": _frac(hit),
            "class_correct_per_class": [float(np.mean(hit[target == c])) for c in range(k)],
            "intra_class_diversity": _nanmean(diversity_per_class),
            "intra_class_diversity_per_class": diversity_per_class,
            "class_judge": class_judge.summary()}


def conditional_sampling_metrics(caps: Capabilities, judge: Judge, data: EvalSet,
                                 num_samples: int, rng: jax.Array) -> dict:
    """Class-conditional samples for every binary label and value, judged."""
    settings, notes = [], []
    np_rng = np.random.default_rng(_seed_from_key(jax.random.fold_in(rng, 0)))
    for l, name in enumerate(data.label_names):
        if not _is_binary(data.labels[:, l]):
            notes.append(f"sample: label {name} is not binary; skipped")
            continue
        judged = name in judge.attribute_names
        if not judged:
            notes.append(f"sample: the judge has no attribute {name}; correctness not measured")
        for v in (0, 1):
            rows = np_rng.integers(0, len(data), size=int(num_samples))
            y = np.asarray(data.labels[rows], np.float32).copy()
            y[:, l] = v
            x, accepted = caps.sample(jax.random.fold_in(rng, 1 + 2 * l + v), y)
            entry = {"label": name, "value": v, "n": int(len(y)),
                     "accept_rate": _frac(accepted), "n_accepted": int(accepted.sum())}
            if judged:
                hit = judge.predict(x)[:, judge.index(name)] == bool(v)
                entry["correct"] = _frac(hit[accepted])
                entry["correct_all"] = _frac(hit)
                entry["yield"] = _frac(hit & accepted)
            else:
                entry["correct"] = entry["correct_all"] = entry["yield"] = float("nan")
            settings.append(entry)
    return {
        "settings": settings,
        "sample_accept_rate": _nanmean(s["accept_rate"] for s in settings),
        "sample_correct": _nanmean(s["correct"] for s in settings),
        "sample_correct_all": _nanmean(s["correct_all"] for s in settings),
        "sample_yield": _nanmean(s["yield"] for s in settings),
        "settings_without_accepted_samples": sum(s["n_accepted"] == 0 for s in settings),
        "notes": notes,
    }


def classification_metrics(caps: Capabilities, data: EvalSet) -> dict | None:
    """Accuracy of the method's own classifier on the binary labels, or None without one."""
    logits = caps.classify(data.images)
    if logits is None:
        return None
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] < len(data.label_names):
        raise ValueError(f"classify returned shape {logits.shape}; expected "
                         f"[B, {len(data.label_names)}] label logits")
    cat = set(_categorical_columns(data.label_names))
    cols = [l for l in range(len(data.label_names))
            if l not in cat and _is_binary(data.labels[:, l])]
    names = [data.label_names[l] for l in cols]
    table = accuracy_table(logits[:, cols] > 0, data.labels[:, cols], names)
    categorical = {data.label_names[l]: float(np.mean(np.round(logits[:, l]) ==
                                                      np.round(data.labels[:, l])))
                   for l in sorted(cat)}
    return {
        "accuracy": table["accuracy"],
        "balanced_accuracy": table["balanced_accuracy"],
        "classify_accuracy": _nanmean(table["accuracy"].values()),
        "classify_balanced_accuracy": _nanmean(table["balanced_accuracy"].values()),
        "categorical_accuracy": categorical,
    }


def _categorical_columns(label_names: Sequence[str]) -> list[int]:
    from latent_jax.data import labels as labels_lib  # pylint: disable=import-outside-toplevel

    return [l for l, n in enumerate(label_names)
            if labels_lib.label_kind(n) == labels_lib.CATEGORICAL]


def latent_metrics(caps: Capabilities, data: EvalSet) -> dict | None:
    """Class-conditional statistics of the method's per-label codes, or None without them."""
    codes = caps.label_codes(data.images)
    if codes is None:
        return None
    cat = set(_categorical_columns(data.label_names))
    out = latent_lib.latent_code_metrics(codes, data.labels, data.label_names,
                                         [l in cat for l in range(len(data.label_names))])
    out["codes"] = codes
    return out


def evaluate_method(method, states, judge: Judge, data: EvalSet, *, batch_size: int,
                    num_samples: int, rng: jax.Array, edit_strength: float | None = None,
                    constituents=None, log: Callable[[str], None] | None = None,
                    table1: bool = False, dataset: str = "synthetic_faces",
                    class_judges: Sequence = ()) -> dict:
    """Every metric of the module docstring for one method; a nested dict (see `headline`).
    `table1`: also Creswell et al.'s Table 1 protocol (`table1_metrics`). `class_judges`:
    K-way judges (`class_judge.ClassJudge`) of categorical labels of the method, each giving
    `categorical_class_sample_metrics`."""
    say = log or (lambda msg: None)
    if len(data) < 2:
        raise ValueError(f"evaluation needs at least 2 test images, got {len(data)}")
    caps = Capabilities(method, states, batch_size, edit_strength)
    timing = {}
    results: dict[str, Any] = {"num_examples": len(data), "num_samples": int(num_samples)}

    t = time.time()
    # Reconstruction and inpainting at the true labels where the method conditions on them
    # (cVAE-GAN's protocol in paper 002, Sec. 4.5); recorded with the results.
    results["reconstruct_given_labels"] = bool(getattr(method, "reconstructs_given_labels",
                                                       False))
    recons = caps.reconstruct(data.images, data.labels)
    results["reconstruction"] = reconstruction_metrics(data.images, recons)
    logits_orig, feats_orig = judge.logits_and_features(data.images)
    logits_recon, feats_recon = judge.logits_and_features(recons)
    pred_orig, pred_recon = logits_orig > 0, logits_recon > 0
    results["recon_attribute_agreement"] = float(np.mean(pred_orig == pred_recon))
    all_cols = list(range(len(judge.attribute_names)))
    bal, per_bal = balanced_preservation(pred_recon, pred_orig, all_cols, judge.attribute_names)
    results["recon_balanced_agreement"] = bal
    results["recon_balanced_agreement_per_attribute"] = per_bal
    # Attributes the reconstruction already loses (balanced agreement under 0.75): an edit
    # cannot be expected to keep them.
    lost = {a: v for a, v in sorted(per_bal.items(), key=lambda kv: kv[1]) if v < 0.75}
    results["recon_loses"] = lost
    timing["reconstruction"] = time.time() - t
    say(f"eval: reconstruction l1 {results['reconstruction']['recon_l1']:.4f}")
    say("eval: the reconstruction already loses " + (", ".join(
        f"{a} ({v:.2f})" for a, v in lost.items()) or "no attribute") + " (balanced agreement "
        "with the input under 0.75)")

    t = time.time()
    from latent_jax.evaluate import inpaint as inpaint_lib   # pylint: disable=import-outside-toplevel

    results["inpainting"] = inpaint_lib.inpainting_metrics(
        lambda im: caps.reconstruct(im, data.labels), data.images, dataset)
    timing["inpainting"] = time.time() - t

    t = time.time()
    x_samp, acc_samp = caps.sample(jax.random.fold_in(rng, 1), data.labels)
    feats_samp = judge.features(x_samp)
    results["frechet"] = {
        "frechet_judge_recon": frechet_distance_from_features(feats_orig, feats_recon),
        "frechet_judge_sample": frechet_distance_from_features(feats_orig, feats_samp),
        "sample_accept_rate_test_labels": _frac(acc_samp),
        "n": len(data),
        "feature_dim": int(feats_orig.shape[1]),
    }
    timing["frechet"] = time.time() - t
    say(f"eval: Fréchet (judge features) recon {results['frechet']['frechet_judge_recon']:.3f}, "
        f"sample {results['frechet']['frechet_judge_sample']:.3f}")

    t = time.time()
    # Edits start from what the method infers from the image (no label is given to an edit):
    # compare them with the reconstruction made the same way.
    edit_recons, edit_pred_recon = recons, pred_recon
    if results["reconstruct_given_labels"]:
        edit_recons = caps.reconstruct(data.images)
        edit_pred_recon = judge.logits_and_features(edit_recons)[0] > 0
    results["edit"] = edit_metrics(caps, judge, data, pred_orig, edit_pred_recon, constituents,
                                   edit_recons)
    timing["edit"] = time.time() - t
    say(f"eval: edit success {results['edit']['edit_success']:.3f}, preservation "
        f"{results['edit']['edit_preservation']:.3f}")

    if table1:
        t = time.time()
        results["table1"] = table1_metrics(caps, judge, data, recons)
        timing["table1"] = time.time() - t

    t = time.time()
    results["sampling"] = conditional_sampling_metrics(caps, judge, data, num_samples,
                                                       jax.random.fold_in(rng, 2))
    timing["sampling"] = time.time() - t
    say(f"eval: sample accept {results['sampling']['sample_accept_rate']:.3f}, correct "
        f"{results['sampling']['sample_correct']:.3f}")

    t = time.time()
    results["class_samples"] = class_sample_metrics(caps, judge, data, num_samples,
                                                    jax.random.fold_in(rng, 3))
    timing["class_samples"] = time.time() - t

    if class_judges:
        t = time.time()
        results["class_samples_categorical"] = {
            cj.label: categorical_class_sample_metrics(caps, cj, data, num_samples,
                                                       jax.random.fold_in(rng, 4 + i))
            for i, cj in enumerate(class_judges)}
        timing["class_samples_categorical"] = time.time() - t
        for name, r in results["class_samples_categorical"].items():
            say(f"eval: {name} samples: judge score {r['judge_score']:.2f} (of {r['num_classes']}"
                f"), judged correct {r['class_correct']:.3f}, intra-class diversity "
                f"{r['intra_class_diversity']:.3f}")

    t = time.time()
    results["classification"] = classification_metrics(caps, data)
    timing["classification"] = time.time() - t

    t = time.time()
    results["latent"] = latent_metrics(caps, data)
    timing["latent"] = time.time() - t

    results["judge"] = judge.summary()
    results["timing_seconds"] = timing
    return results


def headline(results: Mapping[str, Any]) -> dict[str, float]:
    """The flat dict of scalars for metric writers (per-label edit and sampling scores included,
    named `edit_success/<label>/<add|remove>` and `sample_correct/<label>/<0|1>`)."""
    out: dict[str, float] = {}
    out.update(results["reconstruction"])
    fr = results["frechet"]
    out["frechet_judge_recon"] = fr["frechet_judge_recon"]
    out["frechet_judge_sample"] = fr["frechet_judge_sample"]
    out["recon_attribute_agreement"] = results["recon_attribute_agreement"]
    if "recon_balanced_agreement" in results:
        out["recon_balanced_agreement"] = results["recon_balanced_agreement"]
    ed = results["edit"]
    for key in ("edit_success", "edit_preservation", "edit_preservation_vs_recon",
                "edit_balanced_preservation", "edit_balanced_preservation_vs_recon"):
        out[key] = ed[key]
    if np.isfinite(ed.get("edit_locality", float("nan"))):
        out["edit_locality"] = ed["edit_locality"]
        out["edit_locality_region_share"] = ed["edit_locality_region_share"]
    if "edit_success_pooled" in ed:
        out["edit_success_pooled"] = ed["edit_success_pooled"]
        for name, v in ed["pooled_success"].items():
            out[f"edit_success/{name}/pooled"] = v
    for s in ed["settings"]:
        tag = f"{s['label']}/{s['direction']}"
        out[f"edit_success/{tag}"] = s["success"]
        out[f"edit_preservation/{tag}"] = s["preservation"]
        if "locality" in s:
            out[f"edit_locality/{tag}"] = s["locality"]
    if ed["multi"] is not None:
        out["multi_edit_success"] = ed["multi"]["success"]
        out["multi_edit_preservation"] = ed["multi"]["preservation"]
    cs = results.get("class_samples") or {}
    if "judge_score" in cs:
        out["judge_score"] = cs["judge_score"]
        out["intra_class_diversity"] = cs["intra_class_diversity"]
    for name, r in (results.get("class_samples_categorical") or {}).items():
        out[f"judge_score/{name}"] = r["judge_score"]
        out[f"class_sample_correct/{name}"] = r["class_correct"]
        out[f"intra_class_diversity/{name}"] = r["intra_class_diversity"]
    for name, v in results.get("inpainting", {}).items():
        out[f"inpaint_mse/{name}"] = v["mse"]
    for s in results.get("table1", {}).get("settings", ()):
        for key in ("class0", "class1", "mse"):
            out[f"table1/{s['label']}/y{s['source']}/{key}"] = float(s[key])
        out[f"table1/{s['label']}/y{s['source']}/n"] = int(s["n"])
    sm = results["sampling"]
    out["sample_accept_rate"] = sm["sample_accept_rate"]
    out["sample_correct"] = sm["sample_correct"]
    out["sample_yield"] = sm["sample_yield"]
    for s in sm["settings"]:
        out[f"sample_correct/{s['label']}/{s['value']}"] = s["correct"]
    cl = results.get("classification")
    if cl is not None:
        out["classify_accuracy"] = cl["classify_accuracy"]
        out["classify_balanced_accuracy"] = cl["classify_balanced_accuracy"]
        for n, v in cl.get("categorical_accuracy", {}).items():
            out[f"classify_accuracy/{n}"] = v
    lt = results.get("latent")
    if lt is not None:
        out["latent_mean_wasserstein"] = lt["mean_wasserstein"]
        for n, v in lt["binary"].items():
            out[f"latent_wasserstein/{n}"] = v["wasserstein"]
    jd = results["judge"]
    out["judge_accuracy"] = jd["mean_test_accuracy"]
    out["judge_balanced_accuracy"] = jd["mean_test_balanced_accuracy"]
    return {k: float(v) for k, v in out.items()}
