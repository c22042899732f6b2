"""Runs several configs at identical training length and collects one comparison.

    python launch/ablation.py --out=runs/ccvae_synthetic --num_steps=1200 \\
        --run=ccvae_f0.2=configs/ccvae.py:synthetic,0.2 \\
        --run=configs/m2.py:synthetic,0.2  [--run=[NAME=]CONFIG ...] \\
        [--override=key=value ...] [--columns=Header=metric,...] [--collect_only]
        [--budget_flops=F] [--seeds=N]
    python launch/ablation.py --suite=table4_glasses --out=runs/table4_glasses

`--budget_flops=F` gives every run the same FLOP budget (`config.budget.flops`; each trains
as many steps as it buys) instead of the same steps; `--seeds=N` runs each config N times
(`config.seed` 0..N-1, names NAME_s<k>), one table row each.
Each run trains and evaluates with `python -m latent_jax.main --config=CONFIG
--workdir=OUT/NAME [--config.num_steps=N] [--config.KEY=VALUE ...]` (one after the other, so
the timings are comparable). A run that finished with the same command (its
`ablation_timing.json` and report are there) is kept, so an interrupted suite continues where
it stopped; a run whose workdir holds a checkpoint but no finished record resumes from it.
NAME defaults to the config's file name and preset (`csvae_synthetic_glasses`).
Then every run's `eval/latest.json` is read and OUT/results.md gets:
the overview (method's classifier, judge-scored edits, locality, Wasserstein, reconstruction,
wall time), per-label classifier accuracy, per-label edit success / preservation / locality,
per-label class-conditional Wasserstein distances, categorical-label separation, and, with
`--columns` (or a suite that names columns), a table of chosen headline metrics (`{label}` in a
metric name stands for the run's first label); OUT/wasserstein.png a grouped bar chart of the
Wasserstein distances; OUT/locality.png one of the edit locality per label next to each region's
share of the image; OUT/summary.json every number. Suites (`--suite`): `ccvae_synthetic` is the
six runs of docs/results.md (ccvae, m2, diva at f = 0.2 and 1.0 on the synthetic faces);
`table4_glasses` / `table4_facialhair` are CSVAE's Table 4 protocol (csvae, vae, condvae,
condvae_info on a synthetic subset) with its target / neutral / final columns;
`leaderboard` is every registered method that declares `edit`, each from its config's
`LEADERBOARD_PRESET`, on one shared task (`SHARED_TASK`: synthetic faces, 32 px, Eyeglasses):
give it `--budget_flops` and `--seeds` for a comparison at identical compute;
`identities` is Lr-LiVAE's Tables 1-2 on synthetic_identities (cvae, cvaegan, lrlivae with the
log and the hinge loss, and lrlivae with 40 unlabelled outside identities; 3e12 FLOPs each by
default) with judge score, judged-correct rate,
intra-class diversity, reconstruction and inpainting columns;
`table1_smiling` / `table1_eyeglasses` are IFcVAEGAN's Table 1 (the naive cVAEGAN and the five
IFcVAEGAN rows on the synthetic faces at 64x64) with its MSE / Class0 / Class1 columns.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

from absl import app
from absl import flags
from etils import epath

REPO = epath.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# CSVAE's Table 4 (paper 001): target accuracy (the judge sees the added attribute), neutral
# accuracy (the judge no longer sees the removed one), final accuracy (both directions pooled).
TABLE4_COLUMNS = ("target=edit_success/{label}/add,neutral=edit_success/{label}/remove,"
                  "final=edit_success/{label}/pooled,recon MSE=recon_mse")
# Creswell et al.'s Table 1 (paper 003): MSE of reconstructions, the judge's rates on the
# images of class y = 1 decoded with the label set to 0 (Class0) and to 1 (Class1), and the same
# for the y = 0 images (not in the paper).
TABLE1_COLUMNS = ("MSE=table1/{label}/y1/mse,Class0=table1/{label}/y1/class0,"
                  "Class1=table1/{label}/y1/class1,n=table1/{label}/y1/n,"
                  "Class0 from y0=table1/{label}/y0/class0,Class1 from y0=table1/{label}/y0/class1,"
                  "n y0=table1/{label}/y0/n")
# Lr-LiVAE's Tables 1-2 (paper 002) with the class judge, plus reconstruction and inpainting.
IDENTITY_COLUMNS = ("judge score=judge_score/{label},judged correct=class_sample_correct/{label},"
                    "intra-class diversity=intra_class_diversity/{label},recon MSE=recon_mse,"
                    "inpaint right half=inpaint_mse/right_half,inpaint eyes=inpaint_mse/eyes,"
                    "inpaint nose+mouth=inpaint_mse/nose_mouth,"
                    "inpaint bottom half=inpaint_mse/bottom_half")
TABLE1_ROWS = ("best", "alpha05", "class_hat", "no_aux", "no_aux_class_hat")
# The cross-family leaderboard's shared task, applied on top of each config's
# LEADERBOARD_PRESET: the synthetic faces at 32 px, the label Eyeglasses, its subset (every
# positive and twice as many negatives).
SHARED_TASK = ("data.name=synthetic_faces", "data.image_size=32", "data.preprocess=resize",
               "data.labels=('Eyeglasses',)", "data.subset.positives=('Eyeglasses',)",
               "data.subset.ratio=2.0", "eval.apply_subset=False")
LEADERBOARD_COLUMNS = ("success=edit_success,preservation=edit_preservation,"
                       "balanced pres.=edit_balanced_preservation,"
                       "pres. vs recon=edit_preservation_vs_recon,locality=edit_locality,"
                       "recon MSE=recon_mse,Fréchet (samples)=frechet_judge_sample,"
                       "samples correct=sample_correct")
# The Pareto figure's axes: edit success against the preservation of the other attributes
# measured against the reconstruction (the quantity that isolates the edit from what the
# reconstruction already loses).
PARETO_AXES = ("edit_success", "edit_preservation_vs_recon")


def leaderboard_runs() -> tuple[list[str], list[str]]:
    """Every registered method that declares `edit`, from its config's LEADERBOARD_PRESET:
    (runs, skipped with the reason). Methods added later join by declaring the capability and
    the preset; nothing here names them."""
    from latent_jax import configlib, methods
    from latent_jax.methods import base

    runs, skipped = [], []
    for name in methods.registered_methods():
        if base.EDIT not in methods.method_class(name).capabilities:
            skipped.append(f"{name} (no edit)")
            continue
        path = REPO / "configs" / f"{name}.py"
        preset = None
        if path.exists():
            preset = getattr(configlib.sibling_config(str(path), f"{name}.py"), "LEADERBOARD_PRESET",
                             None)
        if preset is None:
            skipped.append(f"{name} (no LEADERBOARD_PRESET in configs/{name}.py)")
            continue
        runs.append(f"{name}=configs/{name}.py:{preset}")
    return runs, skipped
SUITES = {
    "ccvae_synthetic": dict(runs=[f"{m}_f{f}=configs/{m}.py:synthetic,{f}"
                                  for f in ("0.2", "1.0") for m in ("ccvae", "m2", "diva")]),
    "ccvae_synthetic_multi": dict(runs=[f"{m}_multi_f{f}=configs/{m}.py:synthetic_multi,{f}"
                                        for f in ("1.0",) for m in ("ccvae", "diva")]),
    **{f"table4_{subset}": dict(runs=[f"configs/{m}.py:synthetic_{subset}" for m in
                                      ("csvae", "vae", "condvae", "condvae_info")],
                                columns=TABLE4_COLUMNS)
       for subset in ("glasses", "facialhair")},
    **{f"table1_{attr}": dict(runs=[f"configs/cvaegan_naive.py:synthetic_{attr}"]
                              + [f"ifcvaegan_{row}=configs/ifcvaegan.py:synthetic_{attr},{row}"
                                 for row in TABLE1_ROWS],
                              columns=TABLE1_COLUMNS)
       for attr in ("smiling", "eyeglasses")},
    # Filled in by leaderboard_runs() from the registry. The defaults are sized for a 2-core
    # CPU (docs/results.md gives the measured wall time): 5e11 FLOPs a run, 3 seeds, and 500
    # test images per evaluation (each run evaluates four times: at 1/8, 1/4, 1/2 and all of
    # its budget; at 1000 images the evaluations alone cost more than the training). At 1e12
    # the suite took 100-120 minutes. On accelerators give a larger --budget_flops and
    # --override=eval.num_examples=1000.
    # Lr-LiVAE's Tables 1-2 on the identities (paper 002): cVAE, cVAE-GAN and Lr-LiVAE with
    # both adversarial losses at identical FLOPs, sized for a 2-core CPU. 200 evaluation
    # images: cVAE infers an image's class from the ELBO of each of the 100 identities, so its
    # reconstructions cost 100 passes.
    "identities": dict(runs=("cvae=configs/cvae.py:identities",
                             "cvaegan=configs/cvaegan.py:identities",
                             "lrlivae=configs/lrlivae.py:identities",
                             "lrlivae_hinge=configs/lrlivae.py:identities_hinge",
                             "lrlivae_semi=configs/lrlivae.py:identities_semi"),
                       overrides=("eval.num_examples=200",), columns=IDENTITY_COLUMNS,
                       budget_flops=3e12, seeds=1),
    "leaderboard": dict(runs=(), overrides=SHARED_TASK + ("eval.num_examples=500",),
                        columns=LEADERBOARD_COLUMNS, budget_flops=5e11, seeds=3),
}

flags.DEFINE_string("out", None, "Output directory (one workdir per run inside).")
flags.DEFINE_multi_string("run", [], "[NAME=]CONFIG (config path with its preset argument; "
                          "NAME defaults to run_name(CONFIG)).")
flags.DEFINE_enum("suite", None, list(SUITES), "A predefined list of runs.")
flags.DEFINE_integer("num_steps", 0, "Training steps of every run (0: each config's own).")
flags.DEFINE_float("budget_flops", None, "A FLOP budget for every run (config.budget.flops, "
                   "instead of steps): identical compute.")
flags.DEFINE_integer("seeds", 1, "Runs per config, with config.seed = 0..N-1 (NAME_s<k>).")
flags.DEFINE_list("fractions", ["0.125", "0.25", "0.5"], "With --budget_flops: also evaluate "
                  "at these fractions of each run (a quality-against-compute curve).")
flags.DEFINE_string("curve_metric", "edit_success", "Headline metric of the curve figure.")
flags.DEFINE_multi_string("override", [], "KEY=VALUE config overrides for every run.")
flags.DEFINE_bool("collect_only", False, "Only collect the tables from existing runs.")
flags.DEFINE_string("compile_cache", "", "JAX's persistent compilation cache for the runs "
                    "(JAX_COMPILATION_CACHE_DIR): the seeds of a config, and a re-run, load the "
                    "compiled steps and evaluation functions instead of compiling them again. "
                    "Default OUT/jax_compile_cache (or the environment's "
                    "JAX_COMPILATION_CACHE_DIR); 'none' turns it off.")
flags.DEFINE_string("columns", None, "Header=metric,... headline metrics for an extra table "
                    "('{label}' = the run's first label); default: the suite's, if any.")
FLAGS = flags.FLAGS


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "-" if not math.isfinite(f) else f"{f:.{digits}f}"


def run_name(config: str) -> str:
    """`configs/csvae.py:synthetic_glasses` -> `csvae_synthetic_glasses`; `,f` -> `_ff`."""
    path, _, preset = config.partition(":")
    base = epath.Path(path).stem
    preset = preset.replace(",", "_f")
    return f"{base}_{preset}" if preset else base


def parse_run(spec: str) -> tuple[str, str]:
    """`NAME=CONFIG` or `CONFIG` -> (name, config)."""
    name, sep, config = spec.partition("=")
    if not sep:
        name, config = run_name(spec), spec
    if not name or not config:
        raise app.UsageError(f"--run: expected [NAME=]CONFIG, got {spec!r}")
    return name, config


def parse_columns(text: str) -> list[tuple[str, str]]:
    cols = []
    for item in text.split(","):
        header, sep, key = item.rpartition("=")   # a metric name has no '=', a header may
        if not sep or not header.strip() or not key.strip():
            raise app.UsageError(f"--columns: {item!r} is not Header=metric")
        cols.append((header.strip(), key.strip()))
    return cols


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return out + [""]


def compile_cache_dir(out: str) -> str | None:
    """The compilation cache the runs share (`--compile_cache`), or None. A cache hit is the
    very executable a compilation would give (same program, options and XLA version), so the
    runs' results and FLOP counts do not depend on it; only their wall time does."""
    if FLAGS.compile_cache.lower() == "none":
        return None
    if FLAGS.compile_cache:
        return FLAGS.compile_cache
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(epath.Path(out) / "jax_compile_cache")


def train_one(name: str, config: str, out: str, overrides=()) -> dict:
    workdir = epath.Path(out) / name
    cmd = [sys.executable, "-m", "latent_jax.main", f"--config={config}", f"--workdir={workdir}"]
    if FLAGS.num_steps:
        cmd.append(f"--config.num_steps={FLAGS.num_steps}")
    if FLAGS.budget_flops:
        cmd += ["--config.num_steps=0", f"--config.budget.flops={FLAGS.budget_flops}"]
        if FLAGS.fractions:
            cmd.append("--config.eval_at_fractions=(" + ",".join(FLAGS.fractions) + ",)")
    seed = re.search(r"_s(\d+)$", name) if FLAGS.seeds > 1 else None
    if seed:
        cmd.append(f"--config.seed={int(seed.group(1))}")
    cmd += [f"--config.{kv}" for kv in list(overrides) + list(FLAGS.override)]
    done = workdir / "ablation_timing.json"
    if done.exists() and (workdir / "eval" / "latest.json").exists():
        timing = json.loads(done.read_text())
        if timing.get("command") == " ".join(cmd[1:]):   # finished with this very command
            print(f"  {name}: finished earlier ({timing.get('wall_seconds', 0):.0f} s); kept",
                  flush=True)
            return timing
    env = dict(os.environ,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cache = compile_cache_dir(out)
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ablation_log.txt").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"run {name} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    m = re.search(r"trained (\d+) steps in ([0-9.]+) s", res.stderr)
    timing = {"wall_seconds": wall, "command": " ".join(cmd[1:])}
    if m:
        timing.update(trained_steps=int(m.group(1)), train_seconds=float(m.group(2)))
    (workdir / "ablation_timing.json").write_text(json.dumps(timing, indent=2))
    print(f"  {name}: {wall:.0f} s", flush=True)
    return timing


def columns_table(names, reports, timings, columns: list[tuple[str, str]]) -> list[str]:
    """One row per run: the chosen headline metrics (`{label}` = the run's first label)."""
    rows = []
    for n in names:
        run, h = reports[n]["run"], reports[n]["headline"]
        label = (run.get("label_names") or [""])[0]
        rows.append([n, run["method"], run["step"]]
                    + [h.get(key.format(label=label)) for _, key in columns]
                    + [timings[n].get("wall_seconds")])
    return _table(["run", "method", "steps"] + [c for c, _ in columns] + ["wall s"], rows)


def seed_group(name: str) -> str:
    """`ccvae_f1.0_s2` -> `ccvae_f1.0`: the config a seed's run belongs to."""
    return re.sub(r"_s\d+$", "", name)


def interval(values) -> tuple[float, float, float]:
    """(mean, low, high): a 95 % t-interval of the mean for 3 or more values, the min and max
    for 2, the value itself for 1."""
    import numpy as np
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 3:
        return mean, float(v.min()), float(v.max())
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def seeds_table(names, reports, columns: list[tuple[str, str]]) -> list[str]:
    """One row per config over its seeds: mean [interval] of each chosen metric, the seeds,
    the FLOPs spent."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(seed_group(n), []).append(n)
    rows = []
    for g, members in groups.items():
        label = (reports[members[0]]["run"].get("label_names") or [""])[0]
        row = [g, reports[members[0]]["run"]["method"], str(len(members))]
        flops = [reports[m]["run"].get("compute", {}).get("flops") for m in members]
        row.append(f"{interval(flops)[0]:.3g}")
        for _, key in columns:
            mean, lo, hi = interval([reports[m]["headline"].get(key.format(label=label))
                                     for m in members])
            row.append(f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}]")
        rows.append(row)
    return _table(["config", "method", "seeds", "FLOPs"] + [c for c, _ in columns], rows)


def _pyplot(what: str):
    """matplotlib's pyplot on the Agg backend, or None (and a line saying `what` is not drawn)
    when the `plots` extra is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"  matplotlib is not installed (pip install -e '.[plots]'); no {what}")
        return None
    return plt


def _save_figure(plt, fig, path):
    """Writes `fig` as a PNG through etils.epath (local or gs://) and closes it."""
    fig.tight_layout()
    with path.open("wb") as f:   # matplotlib writes to a file object
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def curves(names, out: str, metric: str) -> tuple[str | None, list[str]]:
    """The metric against the compute spent, from every report each run wrote (evaluations at
    fractions of its budget and the final one): a PNG (log FLOPs, one line per config, a band
    over its seeds) and the configs still rising at their last evaluation."""
    import numpy as np

    series: dict[str, list[list[tuple[float, float]]]] = {}
    for n in names:
        points = []
        for path in (epath.Path(out) / n / "eval").glob("report_*.json"):
            r = json.loads(path.read_text())
            flops = r["run"].get("compute", {}).get("flops")
            value = r["headline"].get(metric)
            if flops and value is not None and math.isfinite(value):
                points.append((float(flops), float(value)))
        if len(points) >= 2:
            series.setdefault(seed_group(n), []).append(sorted(points))
    if not series:
        return None, []
    rising = []
    plt = _pyplot("curve figure")
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (g, runs) in enumerate(series.items()):
        k = min(len(r) for r in runs)
        x = np.asarray([np.mean([r[i][0] for r in runs]) for i in range(k)])
        ys = np.asarray([[r[i][1] for r in runs] for i in range(k)])
        mean = ys.mean(1)
        if k >= 2 and mean[-1] > mean[-2] + 0.01:
            rising.append(g)
        if plt is not None:
            # Colour and marker change every ten configs, as in the Pareto figure, so no two
            # of up to 40 configs share both.
            colour = f"C{index % 10}"
            ax.plot(x, mean, marker="os^D"[index // 10 % 4], color=colour,
                    linestyle=("-", "--", ":", "-.")[index // 10 % 4], label=g)
            if ys.shape[1] > 1:
                ax.fill_between(x, ys.min(1), ys.max(1), alpha=0.15, color=colour)
    if plt is None:
        return None, rising
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save_figure(plt, fig, epath.Path(out) / f"curve_{metric.replace('/', '_')}.png"), \
        rising


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names whose (x, y) no other point beats in both (>= in both, > in one), by x."""
    front = [n for n, (x, y) in points.items()
             if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y)
                        for m, (x2, y2) in points.items() if m != n)]
    return sorted(front, key=lambda n: points[n][0])


def pareto(names, reports, out: str, x_key: str, y_key: str):
    """Edit success against preservation, one point per config (the mean over its seeds, bars
    from the lowest to the highest seed), the non-dominated configs joined: (PNG path or None,
    the front's configs, {config: (x, y)})."""
    import numpy as np

    groups: dict[str, list[tuple[float, float]]] = {}
    for n in names:
        h = reports[n]["headline"]
        x, y = h.get(x_key), h.get(y_key)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            groups.setdefault(seed_group(n), []).append((float(x), float(y)))
    if len(groups) < 2:
        return None, [], {}
    means = {g: tuple(np.mean(v, axis=0)) for g, v in groups.items()}
    front = pareto_front(means)
    plt = _pyplot("Pareto figure")
    if plt is None:
        return None, front, means
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, (g, v) in enumerate(groups.items()):
        v = np.asarray(v)
        mx, my = means[g]
        ax.errorbar(mx, my, xerr=[[mx - v[:, 0].min()], [v[:, 0].max() - mx]],
                    yerr=[[my - v[:, 1].min()], [v[:, 1].max() - my]],
                    fmt="os^D"[k // 10 % 4], color=f"C{k % 10}", capsize=2, label=g)
    ax.plot([means[g][0] for g in front], [means[g][1] for g in front], "k--", lw=1,
            label="Pareto front")
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.legend(fontsize=6, loc="best")
    ax.grid(alpha=0.3)
    return _save_figure(plt, fig, epath.Path(out) / "pareto.png"), front, means


def collect(runs: list[tuple[str, str]], out: str, columns=()) -> str:
    from latent_jax.evaluate import latent as latent_lib

    reports, timings = {}, {}
    for name, _ in runs:
        path = epath.Path(out) / name / "eval" / "latest.json"
        if not path.exists():
            print(f"  {name}: no evaluation report at {path}; left out")
            continue
        reports[name] = json.loads(path.read_text())
        tpath = epath.Path(out) / name / "ablation_timing.json"
        timings[name] = json.loads(tpath.read_text()) if tpath.exists() else {}
    if not reports:
        raise SystemExit("no reports to collect")
    names = list(reports)
    lines = [f"# Ablation: {', '.join(names)}", ""]
    data = {n: (reports[n]["run"].get("dataset", "?"),
                reports[n]["run"].get("dataset_version", "")) for n in names}
    if len(set(data.values())) > 1:   # e.g. runs made before and after a renderer change
        listing = "; ".join(f"{n}: {d} {v or '(no version)'}" for n, (d, v) in data.items())
        print(f"  warning: the runs were evaluated on different data: {listing}")
        lines += [f"**Warning: the runs were evaluated on different data** ({listing}); "
                  "their figures are not comparable.", ""]
    else:
        d, v = next(iter(data.values()))
        lines += [f"Data: `{d}`" + (f" version {v}" if v else "") + ".", ""]
    rows = []
    for n in names:
        r = reports[n]
        h, run = r["headline"], r["run"]
        rows.append([n, run["method"], run["step"], h.get("classify_accuracy"),
                     h.get("classify_balanced_accuracy"), h.get("edit_success"),
                     h.get("edit_preservation"), h.get("edit_preservation_vs_recon"),
                     h.get("edit_locality"), h.get("edit_locality_region_share"),
                     h.get("latent_mean_wasserstein"), h.get("recon_l1"),
                     h.get("sample_correct"), timings[n].get("train_seconds"),
                     r["run"].get("seconds"), timings[n].get("wall_seconds")])
    if columns:
        lines += ["## Selected metrics", ""]
        lines += columns_table(names, reports, timings, list(columns))
    if any(seed_group(n) != n for n in names):
        shown = list(columns) or [("edit success", "edit_success"),
                                  ("preservation", "edit_preservation"),
                                  ("recon MSE", "recon_mse")]
        lines += ["## Over seeds", "", "mean [95 % t-interval of the mean; min, max for two "
                  "seeds]", ""]
        lines += seeds_table(names, reports, shown)
    curve_metric = FLAGS.curve_metric if FLAGS.is_parsed() else "edit_success"
    curve, rising = curves(names, out, curve_metric)
    if curve:
        lines += [f"Figure: {curve.name} ({curve_metric} against training FLOPs).", ""]
    if rising:
        lines += ["Still rising at the end of the budget (a ranking that includes them is a "
                  "statement about this budget only): " + ", ".join(rising) + ".", ""]
    x_key, y_key = PARETO_AXES
    figure, front, means = pareto(names, reports, out, x_key, y_key)
    if front:
        lines += [f"Pareto front of {x_key} against {y_key} (means over seeds; no other "
                  "config is better in both): " + ", ".join(
                      f"{g} ({_fmt(means[g][0])}, {_fmt(means[g][1])})" for g in front) + "."
                  + (f" Figure: {figure.name}." if figure else ""), ""]
    lines += ["## Overview", ""]
    lines += _table(["run", "method", "steps", "classifier acc.", "balanced acc.",
                     "edit success", "preservation", "pres. vs recon", "locality",
                     "region share", "mean W1", "recon L1", "sample correct", "train s",
                     "eval s", "wall s"], rows)

    labels = reports[names[0]]["run"]["label_names"]
    cl = {n: (reports[n]["results"].get("classification") or {}) for n in names}
    lines += ["## Classifier accuracy per label (test split)", ""]
    lines += _table(["label"] + names,
                    [[l] + [cl[n].get("accuracy", {}).get(l,
                            cl[n].get("categorical_accuracy", {}).get(l)) for n in names]
                     for l in labels])

    def per_setting(key, direction=None):
        out_rows = []
        for l in labels:
            row = [l]
            for n in names:
                vals = [s.get(key) for s in reports[n]["results"]["edit"]["settings"]
                        if s["label"] == l and s.get(key) is not None
                        and direction in (None, s["direction"])]
                row.append(sum(vals) / len(vals) if vals else None)
            out_rows.append(row)
        return out_rows

    lines += ["## Edits per label", "",
              "Success (judge), adding the attribute to test images without it:", ""]
    lines += _table(["label"] + names, per_setting("success", "add"))
    lines += ["Success (judge), removing it from test images with it:", ""]
    lines += _table(["label"] + names, per_setting("success", "remove"))
    lines += ["The rest of this section averages the add and remove edits.", ""]
    lines += ["Preservation of the other attributes (judge, against the original):", ""]
    lines += _table(["label"] + names, per_setting("preservation"))
    lines += ["Locality (share of the pixel change inside the attribute's region; the last "
              "column is the region's share of the image):", ""]
    loc_rows = per_setting("locality")
    share = per_setting("region_share")
    lines += _table(["label"] + names + ["region share"],
                    [r + [s[1]] for r, s in zip(loc_rows, share)])
    if any(v is not None for r in loc_rows for v in r[1:]):
        series = {n: {r[0]: (r[1 + k] if r[1 + k] is not None else float("nan"))
                      for r in loc_rows} for k, n in enumerate(names)}
        series["region share"] = {r[0]: (r[1] if r[1] is not None else float("nan"))
                                  for r in share}
        latent_lib.bar_chart_png(None, epath.Path(out) / "locality.png",
                                 title="share of the edit's pixel change inside the attribute's "
                                       "region (mean of add / remove)", series=series)
        lines += ["Figure: locality.png", ""]

    w = {n: {l: v["wasserstein"] for l, v in
             ((reports[n]["results"].get("latent") or {}).get("binary") or {}).items()}
         for n in names}
    w = {n: v for n, v in w.items() if v}
    if w:
        lines += ["## Wasserstein distance between the two class-conditional code distributions",
                  ""]
        lines += _table(["label"] + list(w), [[l] + [w[n].get(l) for n in w] for l in labels
                                              if any(l in w[n] for n in w)])
        latent_lib.bar_chart_png(None, epath.Path(out) / "wasserstein.png",
                                 title="W1 between p(z_c | y=0) and p(z_c | y=1) on test images",
                                 series={n: {l: (w[n].get(l) if w[n].get(l) is not None
                                                 else float("nan")) for l in labels
                                             if any(l in w[m] for m in w)} for n in w})
        lines += ["Figure: wasserstein.png", ""]
    for n in names:
        cat = ((reports[n]["results"].get("latent") or {}).get("categorical") or {})
        for l, v in cat.items():
            lines += [f"## {n}: categorical label {l}", "",
                      f"nearest-class-mean accuracy of the 1-D code "
                      f"{_fmt(v['nearest_mean_accuracy'])} (majority class "
                      f"{_fmt(v['majority_rate'])}); pairwise W1 min / mean "
                      f"{_fmt(v['pairwise_wasserstein_min'])} / "
                      f"{_fmt(v['pairwise_wasserstein_mean'])}; classifier accuracy "
                      f"{_fmt(cl[n].get('categorical_accuracy', {}).get(l))}", ""]
            lines += _table(["class", "n", "mean", "std"],
                            [[k, v["counts"][str(k)], v["class_means"][str(k)],
                              v["class_stds"][str(k)]] for k in v["classes"]])
    text = "\n".join(lines)
    (epath.Path(out) / "results.md").write_text(text)
    (epath.Path(out) / "summary.json").write_text(json.dumps(
        {"headline": {n: reports[n]["headline"] for n in names}, "timing": timings}, indent=2))
    return text


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    suite = SUITES.get(FLAGS.suite, {})
    specs = list(FLAGS.run) + list(suite.get("runs", ()))
    if FLAGS.suite == "leaderboard":
        found, skipped = leaderboard_runs()
        specs += found
        for s in skipped:
            print(f"  leaderboard: {s} left out")
    if not specs:
        raise app.UsageError("give --run=[NAME=]CONFIG (repeatable) or --suite")
    if FLAGS.budget_flops is None and "budget_flops" in suite and not FLAGS.num_steps:
        FLAGS.budget_flops = suite["budget_flops"]
    if not FLAGS["seeds"].present and "seeds" in suite:
        FLAGS.seeds = suite["seeds"]
    if FLAGS.num_steps and FLAGS.budget_flops:
        raise app.UsageError("give --num_steps or --budget_flops, not both")
    runs = [parse_run(s) for s in specs]
    if FLAGS.seeds > 1:
        runs = [(f"{name}_s{k}", config) for name, config in runs for k in range(FLAGS.seeds)]
    column_text = FLAGS.columns or suite.get("columns")
    columns = parse_columns(column_text) if column_text else []
    epath.Path(FLAGS.out).mkdir(parents=True, exist_ok=True)
    if not FLAGS.collect_only:
        for name, config in runs:
            train_one(name, config, FLAGS.out, suite.get("overrides", ()))
    print(collect(runs, FLAGS.out, columns))


if __name__ == "__main__":
    app.run(main)
