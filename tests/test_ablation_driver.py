"""launch/ablation.py: collecting several runs' evaluation reports into one comparison."""

import functools
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)  # absl flags can be defined once per process
def _driver():
    spec = importlib.util.spec_from_file_location("ablation_driver",
                                                  os.path.join(REPO, "launch", "ablation.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(method, acc, w):
    labels = ["Male", "Smiling", "Hair_MULTI"]
    settings = [dict(label=l, direction=d, success=s, preservation=0.8, locality=0.5,
                     region_share=0.25) for l in labels[:2] for d, s in (("add", 0.2),
                                                                        ("remove", 1.0))]
    latent = None if w is None else {
        "binary": {"Male": {"wasserstein": w}, "Smiling": {"wasserstein": w / 2}},
        "categorical": {"Hair_MULTI": {
            "classes": [0, 1], "counts": {"0": 3, "1": 4}, "class_means": {"0": -1.0, "1": 1.0},
            "class_stds": {"0": 0.5, "1": 0.5}, "nearest_mean_accuracy": 0.9,
            "majority_rate": 0.57, "pairwise_wasserstein_min": 2.0,
            "pairwise_wasserstein_mean": 2.0}}}
    return {"run": {"method": method, "step": 400, "label_names": labels, "seconds": 12.0},
            "headline": {"classify_accuracy": acc, "edit_success": 0.6, "edit_locality": 0.5,
                         "latent_mean_wasserstein": w},
            "results": {"classification": {"accuracy": {"Male": acc, "Smiling": acc},
                                           "categorical_accuracy": {"Hair_MULTI": 0.4}},
                        "edit": {"settings": settings}, "latent": latent}}


def test_collect_writes_tables_and_figures(tmp_path):
    mod = _driver()
    for name, method, acc, w in (("a", "ccvae", 0.9, 3.0), ("b", "m2", 0.8, None)):
        os.makedirs(tmp_path / name / "eval")
        with open(tmp_path / name / "eval" / "latest.json", "w") as f:
            json.dump(_report(method, acc, w), f)
    text = mod.collect([("a", "x"), ("b", "y"), ("missing", "z")], str(tmp_path))
    assert "| a | ccvae | 400 | 0.900 |" in text
    assert "| Male | 0.200 | 0.200 |" in text          # add success per label
    assert "| Male | 1.000 | 1.000 |" in text          # remove success per label
    assert "| Male | 3.000 |" in text                  # W1, only the run with label codes
    assert "categorical label Hair_MULTI" in text and "| 1 | 4 | 1.000 | 0.500 |" in text
    for png in ("wasserstein.png", "locality.png"):
        assert np.asarray(Image.open(tmp_path / png)).std() > 10
    summary = json.load(open(tmp_path / "summary.json"))
    assert set(summary["headline"]) == {"a", "b"}


def test_table4_columns_and_run_names(tmp_path):
    mod = _driver()
    assert mod.run_name("configs/csvae.py:synthetic_glasses") == "csvae_synthetic_glasses"
    assert mod.parse_run("configs/ccvae.py:synthetic,0.2") == ("ccvae_synthetic_f0.2",
                                                               "configs/ccvae.py:synthetic,0.2")
    assert mod.parse_run("a=configs/vae.py") == ("a", "configs/vae.py")
    runs = [mod.parse_run(s) for s in mod.SUITES["table4_glasses"]["runs"][:2]]
    for (name, _), v in zip(runs, (0.9, 0.1)):
        d = tmp_path / name / "eval"
        d.mkdir(parents=True)
        report = {"run": {"method": name.split("_")[0], "step": 7, "label_names": ["Eyeglasses"]},
                  "headline": {"edit_success/Eyeglasses/add": v,
                               "edit_success/Eyeglasses/remove": 1.0,
                               "edit_success/Eyeglasses/pooled": (2 * v + 1) / 3,
                               "recon_mse": 0.25},
                  "results": {"edit": {"settings": []}}}
        (d / "latest.json").write_text(json.dumps(report))
    columns = mod.parse_columns(mod.SUITES["table4_glasses"]["columns"])
    text = mod.collect(runs, str(tmp_path), columns)
    assert "| run | method | steps | target | neutral | final | recon MSE | wall s |" in text
    assert "| csvae_synthetic_glasses | csvae | 7 | 0.900 | 1.000 | 0.933 | 0.250 | - |" in text
    assert "| vae_synthetic_glasses | vae | 7 | 0.100 | 1.000 | 0.400 | 0.250 | - |" in text


def test_collect_flags_runs_on_different_data_versions(tmp_path):
    mod = _driver()
    for name, version in (("old", "1.0.0"), ("new", "2.0.0")):
        report = _report("ccvae", 0.9, 1.0)
        report["run"].update(dataset="synthetic_faces", dataset_version=version)
        os.makedirs(tmp_path / name / "eval")
        (tmp_path / name / "eval" / "latest.json").write_text(json.dumps(report))
    text = mod.collect([("old", "x"), ("new", "y")], str(tmp_path))
    assert "evaluated on different data" in text and "1.0.0" in text and "2.0.0" in text
    text = mod.collect([("new", "y")], str(tmp_path))
    assert "different data" not in text and "`synthetic_faces` version 2.0.0" in text


def test_table1_suite_runs_every_row_at_the_same_data(tmp_path):
    """IFcVAEGAN's Table 1 suites: the naive cVAEGAN and the five rows on one data preset, and
    the table reads the headline's table1/<label>/y1/* metrics."""
    mod = _driver()
    runs = [mod.parse_run(s) for s in mod.SUITES["table1_smiling"]["runs"]]
    assert [n for n, _ in runs] == ["cvaegan_naive_synthetic_smiling"] + [
        f"ifcvaegan_{r}" for r in mod.TABLE1_ROWS]
    assert {c.split(":")[1].split(",")[0] for _, c in runs} == {"synthetic_smiling"}
    name, _ = runs[1]
    d = tmp_path / name / "eval"
    d.mkdir(parents=True)
    head = {f"table1/Smiling/y{s}/{k}": v for s in (0, 1)
            for k, v in (("mse", 0.02), ("class0", 0.8), ("class1", 0.9), ("n", 40))}
    report = {"run": {"method": "ifcvaegan", "step": 400, "label_names": ["Smiling"]},
              "headline": head, "results": {"edit": {"settings": []}}}
    (d / "latest.json").write_text(json.dumps(report))
    columns = mod.parse_columns(mod.SUITES["table1_smiling"]["columns"])
    text = mod.collect([runs[1]], str(tmp_path), columns)
    assert "| MSE | Class0 | Class1 | n |" in text
    assert "| ifcvaegan_best | ifcvaegan | 400 | 0.020 | 0.800 | 0.900 | 40 |" in text


def test_budget_and_seeds_reach_every_runs_command(tmp_path, monkeypatch):
    """--budget_flops gives every run the same FLOP budget (and no step count); --seeds runs
    each config once per seed."""
    mod = _driver()
    commands = []

    class Done:
        returncode, stdout, stderr = 0, "", "trained 5 steps in 1.0 s"

    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: commands.append(cmd) or Done())
    import logging

    # unparse_flags() resets absl's verbosity flag, which sets the 'absl' logger to WARNING and
    # would hide INFO records from later tests' caplog: restore the logger's level.
    level = logging.getLogger("absl").level
    mod.FLAGS(["ablation", f"--out={tmp_path}", "--budget_flops=3e9", "--seeds=2",
               "--run=configs/vac.py:synthetic"])
    try:
        mod.train_one("vac_synthetic_s1", "configs/vac.py:synthetic", str(tmp_path))
    finally:
        mod.FLAGS.unparse_flags()
        logging.getLogger("absl").setLevel(level)
    (cmd,) = commands
    assert "--config.num_steps=0" in cmd and "--config.budget.flops=3000000000.0" in cmd
    assert "--config.seed=1" in cmd
    # A finished run (its record and report are there) is kept when the suite is run again
    # with the same command, and run again when the command changed.
    (tmp_path / "vac_synthetic_s1" / "eval").mkdir(parents=True)
    (tmp_path / "vac_synthetic_s1" / "eval" / "latest.json").write_text("{}")
    mod.FLAGS(["ablation", f"--out={tmp_path}", "--budget_flops=3e9", "--seeds=2",
               "--run=configs/vac.py:synthetic"])
    try:
        kept = mod.train_one("vac_synthetic_s1", "configs/vac.py:synthetic", str(tmp_path))
        assert len(commands) == 1 and kept["command"] == " ".join(cmd[1:])
        mod.train_one("vac_synthetic_s1", "configs/vac.py:synthetic", str(tmp_path),
                      overrides=("loss.kl=1.0",))
        assert len(commands) == 2
    finally:
        mod.FLAGS.unparse_flags()
        logging.getLogger("absl").setLevel(level)


def test_seeds_are_aggregated_and_curves_drawn_against_flops(tmp_path):
    """Three seeds of one config: mean and a 95 % t-interval per metric; every run's reports
    at fractions of its budget give a curve against FLOPs; a config whose metric still rises
    at its last evaluation is named."""
    from scipy import stats

    mod = _driver()
    names = [f"vac_s{k}" for k in range(3)]
    finals = [0.5, 0.6, 0.7]
    for n, final in zip(names, finals):
        d = tmp_path / n / "eval"
        d.mkdir(parents=True)
        for step, (flops, value) in enumerate(((1e9, final - 0.3), (2e9, final - 0.1),
                                               (4e9, final)), start=1):
            report = {"run": {"method": "vac", "step": step, "label_names": ["Eyeglasses"],
                              "compute": {"flops": flops}},
                      "headline": {"edit_success": value, "recon_mse": 0.01},
                      "results": {"edit": {"settings": []}}}
            (d / f"report_{step}.json").write_text(json.dumps(report))
        (d / "latest.json").write_text(json.dumps(report))
    text = mod.collect([(n, "configs/vac.py") for n in names], str(tmp_path),
                       [("success", "edit_success")])
    half = stats.t.ppf(0.975, 2) * np.std(finals, ddof=1) / np.sqrt(3)
    assert f"| vac | vac | 3 | 4e+09 | 0.600 [{0.6 - half:.3f}, {0.6 + half:.3f}] |" in text
    assert "Still rising at the end of the budget" in text and ": vac." in text
    png = tmp_path / "curve_edit_success.png"
    assert np.asarray(Image.open(png)).std() > 10
    assert mod.interval([0.2, 0.4]) == (pytest.approx(0.3), 0.2, 0.4)


def test_the_leaderboard_is_every_method_that_can_edit():
    """Chosen from the registry and the declared capabilities: every registered method with
    `edit` and a LEADERBOARD_PRESET, each on the shared task."""
    from latent_jax import methods
    from latent_jax.methods import base

    mod = _driver()
    runs, skipped = mod.leaderboard_runs()
    editing = {n for n in methods.registered_methods()
               if base.EDIT in methods.method_class(n).capabilities}
    assert {r.split("=")[0] for r in runs} | {s.split()[0] for s in skipped} >= editing
    assert {r.split("=")[0] for r in runs} == editing and not skipped
    assert "data.labels=('Eyeglasses',)" in mod.SUITES["leaderboard"]["overrides"]
    assert mod.SUITES["leaderboard"]["seeds"] == 3


def test_pareto_front_and_figure(tmp_path):
    """The front is the configs no other config beats in both success and preservation (means
    over seeds); a dominated config is left off, ties in one axis are kept."""
    mod = _driver()
    assert mod.pareto_front({"a": (0.9, 0.5), "b": (0.5, 0.9), "c": (0.4, 0.4),
                             "d": (0.9, 0.4), "e": (0.7, 0.7)}) == ["b", "e", "a"]
    reports = {}
    for name, x, y in (("p_s0", 0.2, 0.9), ("p_s1", 0.4, 0.8), ("q_s0", 0.9, 0.6),
                       ("q_s1", 0.7, 0.6), ("r_s0", 0.1, 0.5)):
        reports[name] = {"headline": {"edit_success": x, "edit_preservation_vs_recon": y}}
    path, front, means = mod.pareto(list(reports), reports, str(tmp_path), "edit_success",
                                    "edit_preservation_vs_recon")
    assert front == ["p", "q"] and means["p"] == pytest.approx((0.3, 0.85))
    assert np.asarray(Image.open(path)).std() > 10


def test_collect_writes_everything_to_a_gs_out(gcs_env, tmp_path):
    """`--out=gs://...` (a pod's bucket): the driver reads the runs' reports there and writes
    results.md, summary.json and its figures there, nothing to the current directory."""
    import subprocess
    import sys

    from etils import epath

    out = epath.Path("gs://bucket/ablation")
    for name, method, acc, w in (("a", "ccvae", 0.9, 3.0), ("b", "m2", 0.8, None)):
        report = _report(method, acc, w)
        report["headline"]["edit_preservation_vs_recon"] = acc
        (out / name / "eval").mkdir(parents=True, exist_ok=True)
        (out / name / "eval" / "latest.json").write_text(json.dumps(report))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([sys.executable, os.path.join(REPO, "launch", "ablation.py"),
                          f"--out={out}", "--run=a=x", "--run=b=y", "--collect_only"],
                         cwd=cwd, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert os.listdir(cwd) == []
    for name in ("results.md", "summary.json", "wasserstein.png", "locality.png",
                 "pareto.png"):
        assert (out / name).exists(), name
    assert "| a | ccvae | 400 | 0.900 |" in (out / "results.md").read_text()
    assert "Pareto front" in (out / "results.md").read_text()


def test_runs_share_a_compilation_cache_unless_turned_off(tmp_path, monkeypatch):
    """Every run gets the same persistent compilation cache (under --out by default), so the
    seeds of a config load its compiled programs; --compile_cache=none leaves the runs' own
    environment alone."""
    import logging

    mod = _driver()
    envs = []

    class Done:
        returncode, stdout, stderr = 0, "", "trained 5 steps in 1.0 s"

    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: envs.append(kw["env"]) or Done())
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    level = logging.getLogger("absl").level
    for extra, expected in (([], str(tmp_path / "jax_compile_cache")),
                            ([f"--compile_cache={tmp_path / 'c'}"], str(tmp_path / "c")),
                            (["--compile_cache=none"], None)):
        mod.FLAGS(["ablation", f"--out={tmp_path}", "--run=configs/vac.py:synthetic"] + extra)
        try:
            mod.train_one(f"vac_{len(envs)}", "configs/vac.py:synthetic", str(tmp_path))
        finally:
            mod.FLAGS.unparse_flags()
            logging.getLogger("absl").setLevel(level)
        assert envs[-1].get("JAX_COMPILATION_CACHE_DIR") == expected
