"""Evaluation reports: one protocol for every method.

`run_evaluation(method, states, config, workdir, step, rng)` gets (or trains) the dataset's judge,
scores the method through its capability functions (`latent_jax.evaluate.metrics`) and writes

    workdir/eval/report_<step>.json   every number, plus a summary of the run's config
    workdir/eval/report_<step>.md     the same as readable tables
    workdir/eval/latest.json          a copy of the newest JSON report
    workdir/eval/wasserstein_<step>.png, embeddings_<step>.png
                                      for methods with per-label latent codes (`label_codes`):
                                      the class-conditional Wasserstein distance per binary label
                                      and the 1-D code histograms per label, coloured by class

It returns the flat dict of headline scalars (`metrics.headline`) for the metric writers.

The evaluation config, `config.eval` (`default_eval_config()`; every method config starts from it):

    apply_subset   False  True: take the test images from the subsetted test split
                          (`config.data.subset`, e.g. CSVAE's Table 4 on CelebA-Glasses)
    num_examples   1000   test images used (the first ones of the un-subsetted test split): for
                          reconstruction, the Fréchet distances (as many samples, drawn with these
                          images' label rows) and the edits (every image, once per label)
    num_samples    128    samples per conditional-sampling setting (label x value)
    batch_size     100    batch size of every capability call (last batch zero-padded)
    edit_strength  None   passed to `method.edit`; None = the method's own default
    table1         False  True: also Creswell et al.'s Table 1 protocol (`metrics.table1_metrics`:
                          per binary label and source class, the judge's rates on the images
                          decoded with the label set to 0 and to 1, and the reconstruction MSE)
    judge                 the attribute classifier (`latent_jax.evaluate.judge`):
      steps         2500  Adam steps
      batch_size    64
      learning_rate 2e-3  peak of a warm-up + cosine schedule
      width         32    channels of the first conv (doubled per level, at most 4x)
      feature_dim   128   penultimate features (the Fréchet embedding)
      balanced      True  class-balanced BCE per attribute
      augment       True  random horizontal flip and blur
      test_examples 2000  test images for the judge's accuracy (None: the whole test split)
      memory_mb     1024  later epochs replayed from memory when the training split fits
      attributes    ()    attributes to judge; () = every attribute of the dataset
      cache_dir     None  None: $LATENT_JAX_CACHE/judges, LATENT_JAX_CACHE = ~/.cache/latent_jax
      seed          0     the judge's training seed (not the run's, so that every method on a
                          dataset is scored by the same judge)

Only process 0 writes files; every process computes (the evaluation is meant for one process).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Mapping

from etils import epath
import jax
import ml_collections
from ml_collections import config_dict
import numpy as np

from latent_jax.evaluate import judge as judge_lib
from latent_jax.evaluate import metrics as metrics_lib
from latent_jax.errors import ConfigError

log = logging.getLogger(__name__)

_EVAL_DEFAULTS = dict(num_examples=1000, num_samples=128, batch_size=100)


def default_eval_config() -> ml_collections.ConfigDict:
    """The `config.eval` block documented at the top of this module."""
    c = ml_collections.ConfigDict()
    c.num_examples = _EVAL_DEFAULTS["num_examples"]
    c.num_samples = _EVAL_DEFAULTS["num_samples"]
    c.batch_size = _EVAL_DEFAULTS["batch_size"]
    c.edit_strength = config_dict.placeholder(float)
    c.apply_subset = False
    c.table1 = False           # also Creswell et al.'s Table 1 protocol (binary labels)
    # K-way class judges of the method's categorical labels (class_judge.py), for the judge
    # score and correctness of class-conditional samples; trained once per dataset and cached.
    c.class_judge = True
    j = judge_lib.JUDGE_DEFAULTS
    c.judge = ml_collections.ConfigDict()
    c.judge.steps = j["steps"]
    c.judge.batch_size = j["batch_size"]
    c.judge.learning_rate = j["learning_rate"]
    c.judge.width = j["width"]
    c.judge.feature_dim = j["feature_dim"]
    c.judge.balanced = j["balanced"]
    c.judge.augment = j["augment"]
    c.judge.test_examples = j["test_examples"]
    c.judge.memory_mb = j["memory_mb"]
    c.judge.attributes = ()
    c.judge.cache_dir = config_dict.placeholder(str)
    c.judge.seed = j["seed"]
    return c


def validate_eval_config(eval_cfg) -> None:
    """Raises ValueError naming the offending `config.eval` key."""
    for key in ("num_examples", "num_samples", "batch_size"):
        value = eval_cfg.get(key, _EVAL_DEFAULTS[key])
        if value is None or int(value) <= 0:
            raise ConfigError(f"config.eval.{key} must be a positive integer, got {value!r}")
    strength = eval_cfg.get("edit_strength", None)
    if strength is not None and not math.isfinite(float(strength)):
        raise ConfigError(f"config.eval.edit_strength must be finite or None, got {strength!r}")
    judge_cfg = _judge_cfg_without_attributes(eval_cfg.get("judge", None))
    judge_lib.judge_settings(judge_cfg)


def _judge_cfg_without_attributes(judge_cfg) -> dict:
    d = judge_cfg.to_dict() if isinstance(judge_cfg, ml_collections.ConfigDict) else \
        dict(judge_cfg or {})
    d.pop("attributes", None)
    return d


# --------------------------------------------------------------------------------- data
def load_eval_set(data_cfg, spec, attribute_names, num_examples: int,
                  batch_size: int, apply_subset: bool = False) -> metrics_lib.EvalSet:
    """The first `num_examples` images of the test split (un-subsetted unless `apply_subset`)
    with the judge's attributes and the method's labels."""
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel

    attribute_names = tuple(attribute_names)
    label_names = tuple(spec.label_names)
    names = attribute_names + tuple(n for n in label_names if n not in attribute_names)
    images, labels = [], []
    for batch in data_lib.iterate_eval_batches(data_cfg, "test", batch_size, label_names=names,
                                               apply_subset=bool(apply_subset),
                                               max_examples=num_examples):
        mask = np.asarray(batch["mask"], bool)
        images.append(np.asarray(batch["image"], np.float32)[mask])
        labels.append(np.asarray(batch["label"], np.float32)[mask])
    if not images:
        raise ConfigError("evaluation: the test split is empty")
    images = np.concatenate(images)[:num_examples]
    labels = np.concatenate(labels)[:num_examples]
    cols = [names.index(n) for n in label_names]
    regions = data_lib.attribute_regions(data_cfg, "test", len(images))
    return metrics_lib.EvalSet(images=images, attributes=labels[:, :len(attribute_names)],
                               attribute_names=attribute_names, labels=labels[:, cols],
                               label_names=label_names, regions=regions)


# --------------------------------------------------------------------------------- output
def _clean(value):
    """JSON-safe copy: numpy -> python, NaN/Inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    return repr(value)


def _write_atomic(path, text: str) -> None:
    """Temporary file, then rename (etils.epath: local or gs:// workdirs)."""
    path = epath.Path(path)
    tmp = path.parent / f"{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "-"
    return f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |"
              for row in rows]
    return lines + [""]


def judge_timing_note(run: Mapping[str, Any]) -> str:
    """' (trained)' or ' (loaded from its cache)' after the judge's time, from a report's `run`
    block ('' for a report that predates `judge_loaded_from_cache`)."""
    return {True: " (loaded from its cache)", False: " (trained)"}.get(
        run.get("judge_loaded_from_cache"), "")


def render_markdown(report: Mapping[str, Any]) -> str:
    """Human-readable tables of a report (as returned in `report_<step>.json`)."""
    run, res, head = report["run"], report["results"], report["headline"]
    out = [f"# Evaluation of {run['method']} at step {run['step']}", "",
           f"Dataset `{run['dataset']}`"
           + (f" version {run['dataset_version']}" if run.get("dataset_version") else "")
           + f" ({'x'.join(str(s) for s in run['image_shape'])}), "
           f"labels: {', '.join(run['label_names']) or '-'}; {res['num_examples']} test images, "
           f"{res['num_samples']} samples per conditional setting. Fréchet distances are in the "
           "judge's feature space (not Inception FID).", "", "## Headline", ""]
    main_keys = [k for k in head if "/" not in k]
    out += _table(["metric", "value"], [[k, head[k]] for k in main_keys])

    jd = res["judge"]
    out += ["## Judge (independent attribute classifier, test split)", "",
            f"Mean accuracy {_fmt(jd['mean_test_accuracy'])}, mean balanced accuracy "
            f"{_fmt(jd['mean_test_balanced_accuracy'])}; cache key `{jd['key']}`.", ""]
    out += _table(["attribute", "accuracy", "balanced acc.", "positive rate", "predicted pos."],
                  [[a, jd["test_accuracy"].get(a), jd["test_balanced_accuracy"].get(a),
                    jd["test_positive_rate"].get(a), jd["test_predicted_positive_rate"].get(a)]
                   for a in jd["attribute_names"]])

    ed = res["edit"]
    out += ["## Edits", "",
            "success: the judge assigns the target value; preservation: other attributes keep the "
            "judge's prediction on the original (vs recon: on the reconstruction); recon target: "
            "the target already holds on the reconstruction.", ""]
    if "recon_loses" in res:
        lost = res["recon_loses"]
        out += ["The reconstruction already loses: " + (", ".join(
            f"{a} ({_fmt(v)})" for a, v in lost.items()) or "no attribute") + " (balanced "
            "agreement with the input under 0.75); an edit cannot be expected to keep these.", ""]
    out += ["balanced: the mean over each attribute's two classes of the rate at which it is "
            "kept, so that a rare attribute's \"absent stays absent\" does not dominate "
            "(mean over attributes).", ""]
    rows = [[s["label"], s["direction"], s["n"], s["success"], s["preservation"],
             s.get("balanced_preservation"), s["preservation_vs_recon"],
             s.get("balanced_preservation_vs_recon"), s["recon_target_rate"], s.get("locality"),
             s.get("region_share")] for s in ed["settings"]]
    if ed.get("multi"):
        m = ed["multi"]
        rows.append(["+".join(m["labels"]), "add all", m["n"], m["success"], m["preservation"],
                     m.get("balanced_preservation"), m["preservation_vs_recon"],
                     m.get("balanced_preservation_vs_recon"), m["recon_target_rate"], None, None])
    out += _table(["label", "direction", "n", "success", "preservation", "balanced",
                   "preservation vs recon", "balanced vs recon", "recon target", "locality",
                   "region share"], rows)
    out += ["locality: share of the pixel change (edit vs reconstruction) inside the edited "
            "attribute's region (where the dataset provides regions); region share: the share "
            "of the image that region covers.", ""]
    if ed["settings"]:
        attrs = sorted({a for s in ed["settings"] for a in s["per_attribute_preservation"]},
                       key=lambda a: res["judge"]["attribute_names"].index(a)
                       if a in res["judge"]["attribute_names"] else 0)
        cols = [f"{s['label']} {s['direction']}" for s in ed["settings"]]
        out += ["### Preservation per attribute (plain / balanced)", ""]
        out += _table(["attribute"] + cols,
                      [[a] + [f"{_fmt(s['per_attribute_preservation'].get(a))} / "
                              f"{_fmt(s.get('per_attribute_balanced_preservation', {}).get(a))}"
                              for s in ed["settings"]] for a in attrs])

    cs = res.get("class_samples") or {}
    if "judge_score" in cs:
        out += ["## Class-conditional samples (Lr-LiVAE Tables 1-2)", "",
                f"Judge score (the Inception Score's formula with the judge's posterior over the "
                f"{cs['num_classes']} joint classes of {', '.join(cs['labels'])}; not an "
                f"Inception Score): {_fmt(cs['judge_score'])} (at most {cs['num_classes']}). "
                "Intra-class diversity (Eq. 12: 1 - mean MS-SSIM over all pairs of a class's "
                "samples, self-pairs included; the MS-SSIM scales that fit the image size):", ""]
        out += _table(["class", "n", "intra-class diversity"],
                      [[k, v["n"], v["intra_class_diversity"]] for k, v in cs["classes"].items()])

    for name, r in (res.get("class_samples_categorical") or {}).items():
        cj = r["class_judge"]
        out += [f"## Class-conditional samples of {name} (Lr-LiVAE Tables 1-2)", "",
                f"{r['per_class']} samples of each of the {r['num_classes']} classes, judged by a "
                f"{r['num_classes']}-way class judge trained on real images (test accuracy "
                f"{_fmt(cj['test_accuracy'])} on {cj['test_examples']} images). Judge score (the "
                f"Inception Score's formula with that judge; not an Inception Score): "
                f"{_fmt(r['judge_score'])} (at most {r['num_classes']}); samples judged to show "
                f"their class: {_fmt(r['class_correct'])}; intra-class diversity (Eq. 12, mean "
                f"over the classes): {_fmt(r['intra_class_diversity'])}.", ""]

    if res.get("inpainting"):
        fill = next(iter(res["inpainting"].values())).get("fill", 0.0)
        fill = "each image's mean colour" if fill == "mean" else f"grey level {fill}"
        given = " at its true class" if res.get("reconstruct_given_labels") else ""
        out += ["## Inpainting (Lr-LiVAE Sec. 4.5)", "",
                f"The mask's region filled with {fill}, the image encoded and decoded{given}, "
                "the decode pasted into the region; MSE inside the mask (pixels in [0, 1]).", ""]
        out += _table(["mask", "share of the image", "MSE inside", "n"],
                      [[k, v["mask_share"], v["mse"], v["n"]]
                       for k, v in res["inpainting"].items()])

    if res.get("table1"):
        out += ["## Table 1 protocol (Creswell et al.)", "",
                "The test images of each source class y, decoded with the label set to 0 and to "
                "1: the judge's rate of 0 (class0) and of 1 (class1), and the reconstruction MSE "
                "on the same images. The paper reports y = 1.", ""]
        out += _table(["label", "source y", "n", "class0", "class1", "MSE"],
                      [[s["label"], str(s["source"]), s["n"], s["class0"], s["class1"], s["mse"]]
                       for s in res["table1"]["settings"]])

    sm = res["sampling"]
    out += ["## Conditional sampling", "",
            "accepted: the method's own check; correct: accepted samples the judge classifies as "
            "the requested value (all: over every sample); yield: accepted and correct, over "
            "every sample.", ""]
    out += _table(["label", "value", "n", "accept rate", "correct", "correct (all)", "yield"],
                  [[s["label"], str(s["value"]), s["n"], s["accept_rate"], s["correct"],
                    s["correct_all"], s["yield"]] for s in sm["settings"]])

    cl = res.get("classification")
    out += ["## Method's classifier", ""]
    if cl is None:
        out += ["The method has no classifier.", ""]
    else:
        out += _table(["label", "accuracy", "balanced accuracy"],
                      [[n, cl["accuracy"][n], cl["balanced_accuracy"][n]] for n in cl["accuracy"]]
                      + [[n, v, "-"] for n, v in cl.get("categorical_accuracy", {}).items()])
    lt = res.get("latent")
    if lt is not None:
        out += ["## Per-label latent codes", "",
                "W1: Wasserstein distance between the codes of y = 0 and y = 1 test images.", ""]
        out += _table(["label", "W1", "mean (y=0)", "mean (y=1)", "n (y=0)", "n (y=1)"],
                      [[n, v["wasserstein"], v["mean_0"], v["mean_1"], v["n_0"], v["n_1"]]
                       for n, v in lt["binary"].items()])
        for n, v in lt["categorical"].items():
            out += [f"Categorical {n}: smallest / mean pairwise W1 between classes "
                    f"{_fmt(v['pairwise_wasserstein_min'])} / {_fmt(v['pairwise_wasserstein_mean'])}"
                    f"; nearest-class-mean accuracy of the code {_fmt(v['nearest_mean_accuracy'])}"
                    f" (majority class {_fmt(v['majority_rate'])}).", ""]
            out += _table(["class", "n", "mean", "std"],
                          [[str(k), v["counts"][str(k)], v["class_means"][str(k)], v["class_stds"][str(k)]]
                           for k in v["classes"]])
    notes = list(ed.get("notes", [])) + list(sm.get("notes", []))
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    t = res.get("timing_seconds", {})
    note = judge_timing_note(run)
    out += ["Timing (s): " + ", ".join(f"{k} {v:.1f}" + (note if k == "judge" else "")
                                       for k, v in t.items()), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------- entry point
def run_evaluation(method, states, config: ml_collections.ConfigDict, workdir: str, step: int,
                   rng: jax.Array | None = None, data_options=None,
                   compute: Mapping[str, float] | None = None) -> dict[str, float]:
    """Evaluates `method` at `states`, writes the reports and returns the headline scalars.
    `compute`: the compute spent to reach `states` (FLOPs, images, device-seconds), kept in the
    report's `run` block. `data_options`: the run's validated `config.data` (`data.DataOptions`); validated here if None."""
    from latent_jax import data as data_lib  # pylint: disable=import-outside-toplevel

    t0 = time.time()
    eval_cfg = config.get("eval", None) or default_eval_config()
    validate_eval_config(eval_cfg)
    num_examples = int(eval_cfg.get("num_examples", _EVAL_DEFAULTS["num_examples"]))
    num_samples = int(eval_cfg.get("num_samples", _EVAL_DEFAULTS["num_samples"]))
    batch_size = int(eval_cfg.get("batch_size", _EVAL_DEFAULTS["batch_size"]))
    strength = eval_cfg.get("edit_strength", None)
    judge_cfg = eval_cfg.get("judge", None)
    attributes = tuple(judge_cfg.get("attributes", ()) or ()) if judge_cfg is not None else ()
    if rng is None:
        rng = jax.random.PRNGKey(0)

    data_options = data_lib.options(config.data if data_options is None else data_options)
    spec = data_lib.get_data_spec(data_options)
    t = time.time()
    judge = judge_lib.get_or_train_judge(
        data_options, _judge_cfg_without_attributes(judge_cfg),
        attribute_names=attributes or None, progress=log.info)
    class_judges = []
    if method.has("sample") and bool(eval_cfg.get("class_judge", True)):
        from latent_jax.data import labels as labels_lib  # pylint: disable=import-outside-toplevel
        from latent_jax.evaluate import class_judge as class_judge_lib  # pylint: disable=import-outside-toplevel

        for name in spec.label_names:
            if labels_lib.label_kind(name) == labels_lib.CATEGORICAL:
                class_judges.append(class_judge_lib.get_or_train_class_judge(
                    data_options, name, judge_cfg, progress=log.info))
    t_judge = time.time() - t
    t = time.time()
    data = load_eval_set(data_options, spec, judge.attribute_names, num_examples, batch_size,
                         apply_subset=bool(eval_cfg.get("apply_subset", False)))
    t_data = time.time() - t
    results = metrics_lib.evaluate_method(method, states, judge, data, batch_size=batch_size,
                                          num_samples=num_samples, rng=rng,
                                          edit_strength=strength, log=log.info,
                                          table1=bool(eval_cfg.get("table1", False)),
                                          dataset=spec.name, class_judges=class_judges)
    # The parts before the method's metrics, first in the breakdown: training the judge (on a
    # cold cache, often most of a short run's evaluation) and reading the evaluation set.
    results["timing_seconds"] = {"judge": t_judge, "eval_set": t_data,
                                 **results.get("timing_seconds", {})}
    head = metrics_lib.headline(results)
    codes = results["latent"].pop("codes") if results.get("latent") else None
    method_name = str(config.get("method", "") or getattr(method, "name", "") or
                      type(method).__name__)
    report = {
        "run": {
            "method": method_name,
            "step": int(step),
            "dataset": spec.name,
            "dataset_version": spec.version,
            "image_shape": list(spec.image_shape),
            "label_names": list(spec.label_names),
            "attribute_names": list(judge.attribute_names),
            "seed": config.get("seed", None),
            "judge_loaded_from_cache": bool(judge.loaded_from_cache),
            "compute": dict(compute or {}),
            "eval_config": eval_cfg.to_dict() if hasattr(eval_cfg, "to_dict") else dict(eval_cfg),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": time.time() - t0,
        },
        "headline": head,
        "results": results,
    }
    report = _clean(report)
    if jax.process_index() == 0:
        out_dir = epath.Path(workdir) / "eval"
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=2)
        _write_atomic(out_dir / f"report_{int(step)}.json", text)
        _write_atomic(out_dir / f"report_{int(step)}.md", render_markdown(report))
        _write_atomic(out_dir / "latest.json", text)
        if codes is not None:
            from latent_jax.evaluate import latent as latent_lib  # pylint: disable=import-outside-toplevel

            lt = report["results"]["latent"]
            latent_lib.bar_chart_png(
                {n: (v["wasserstein"] if v["wasserstein"] is not None else float("nan"))
                 for n, v in lt["binary"].items()},
                out_dir / f"wasserstein_{int(step)}.png",
                title=f"{method_name}: W1 between class-conditional z_c (step {int(step)})")
            latent_lib.histograms_png(codes, data.labels, data.label_names,
                                      out_dir / f"embeddings_{int(step)}.png")
        log.info("eval: report written to %s (%.0f s)", out_dir, time.time() - t0)
    return head
