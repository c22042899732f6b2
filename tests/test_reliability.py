"""The engine where users of shared clusters go: a workdir lock, corrupt checkpoints, non-finite
states, resuming with another config, replayed metric rows, and bad input reported in one line
before anything is compiled or written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import tiny
from latent_jax import checkpoint as ckpt_lib
from latent_jax import errors
from latent_jax import train
from latent_jax import workdir as workdir_lib

ENV = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def _cfg(**extra):
    base = {"num_steps": 6, "checkpoint.asynchronous": "False", "grid_size": 0}
    base.update(extra)
    return tiny.config(**base)


def _listing(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _, files in os.walk(path) for f in files)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run of 6 steps with checkpoints at 4 and 6, and its final players."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    train.train_and_evaluate(_cfg(), workdir)
    exp = train.Experiment(_cfg(), workdir)
    step, players, _ = exp.restore_newest()
    assert step == 6
    return workdir, jax.device_get(players)


# ------------------------------------------------------------------------------- workdir lock
def test_second_job_on_a_locked_workdir_is_refused_before_writing(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with workdir_lib.WorkdirLock(workdir):            # another job holds the workdir
        before = _listing(workdir)
        with pytest.raises(errors.WorkdirLockedError, match="in use by another training job"):
            train.train_and_evaluate(_cfg(), str(workdir))
        assert _listing(workdir) == before           # no config.json, metrics or checkpoints
    assert "pid" not in (workdir / workdir_lib.LOCK_NAME).read_text()   # released and cleared


def test_lock_left_by_a_killed_job_is_taken_over(tmp_path):
    """flock dies with its holder: a LOCK file without a live holder does not block."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / workdir_lib.LOCK_NAME).write_text(
        json.dumps({"host": "gone", "pid": 1, "started": 0}))
    with workdir_lib.WorkdirLock(workdir) as lock:
        assert str(os.getpid()) in lock.path.read_text()


def test_cli_refuses_a_locked_workdir_in_one_line(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with workdir_lib.WorkdirLock(workdir):
        res = subprocess.run([sys.executable, "-m", "latent_jax.main"] + tiny.flags(str(workdir)),
                             capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1
    assert "in use by another training job" in res.stderr and "Traceback" not in res.stderr
    assert sorted(os.listdir(workdir)) == [workdir_lib.LOCK_NAME]


# ------------------------------------------------------------------------- corrupt checkpoints
def _first_file(root, pattern_dir):
    d = os.path.join(root, pattern_dir)
    files = sorted(os.path.join(d, f) for f in os.listdir(d))
    return max(files, key=os.path.getsize)


def _truncate(step_dir):
    f = _first_file(step_dir, "state/ocdbt.process_0/d")
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 3)


def _zero_fill(step_dir):
    f = _first_file(step_dir, "state/ocdbt.process_0/d")
    n = os.path.getsize(f)
    with open(f, "wb") as fh:
        fh.write(b"\0" * n)


def _delete_manifest(step_dir):
    os.remove(os.path.join(step_dir, "state", "ocdbt.process_0", "manifest.ocdbt"))
    os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _delete_item(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def _garbage_data_json(step_dir):
    with open(os.path.join(step_dir, "data", "metadata"), "w") as fh:
        fh.write("{not json")


def _wrong_data_state(step_dir):
    with open(os.path.join(step_dir, "data", "metadata"), "w") as fh:
        fh.write('{"something": "else"}')


def _empty_step_folder(step_dir):
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


CORRUPTIONS = [_truncate, _zero_fill, _delete_manifest, _delete_item, _garbage_data_json,
               _wrong_data_state, _empty_step_folder]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path, corrupt,
                                                                  caplog):
    src, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(src, workdir)
    corrupt(os.path.join(workdir, "checkpoints", "6"))
    exp = train.Experiment(_cfg(), workdir)
    it = train.data_lib.make_train_iterator(exp.config.data, global_batch_size=8, seed=0)
    with caplog.at_level("WARNING"):
        step, players, _ = exp.restore_newest(data_iterator=it)
    assert step == 4
    assert any("skipping checkpoint 6" in r.getMessage() for r in caplog.records)
    aside = os.path.join(workdir, "checkpoints.unreadable")
    assert [d.split("-")[0] for d in os.listdir(aside)] == ["6"]    # kept, not deleted
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "6"))
    assert it.get_state() == {"next_index": 4}


def test_run_resumes_past_a_corrupt_checkpoint_and_matches_a_clean_run(trained, tmp_path):
    src, players_clean = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(src, workdir)
    _zero_fill(os.path.join(workdir, "checkpoints", "6"))
    train.train_and_evaluate(_cfg(), workdir)              # resumes at 4, saves 6 again
    step, players, _ = train.Experiment(_cfg(), workdir).restore_newest()
    assert step == 6
    for a, b in zip(jax.tree.leaves(players_clean), jax.tree.leaves(jax.device_get(players))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    rows = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert rows == sorted(set(rows)) == list(range(1, 7))    # steps 5, 6 once each


# ---------------------------------------------------------------------------- non-finite state
def test_no_saved_checkpoint_holds_a_non_finite_leaf(tmp_path):
    workdir = str(tmp_path / "nan")
    cfg = _cfg(num_steps=8, **{"checkpoint.every_steps": 1, "checkpoint.max_to_keep": 10,
                               "log_every_steps": 4})
    for player in ("encoder", "classifier", "decoder"):
        cfg.optim[player].learning_rate = 1e39
    with pytest.raises(train.NonFiniteLossError, match="non-finite"):
        train.train_and_evaluate(cfg, workdir)
    mngr = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
    try:
        steps = mngr.all_steps()
        exp = train.Experiment(cfg, workdir)
        target = {"players": exp.abstract_states(),
                  "step": jax.ShapeDtypeStruct((), np.int32), "rng": exp.base_key}
        for step in steps:
            _, state, _ = mngr.restore(target, step)
            assert not train.non_finite_leaves(state), step
    finally:
        mngr.close()


# ----------------------------------------------------------------------- resume with a config
def test_resume_with_an_incompatible_config_is_refused_naming_the_keys(trained, tmp_path):
    src, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(src, workdir)
    saved = open(os.path.join(workdir, "config.json")).read()
    for override, key in (({"model.latent_dim": 16}, "model.latent_dim: 8 -> 16"),
                          ({"seed": 3}, "seed: 0 -> 3"),
                          ({"batch_size": 16}, "batch_size: 8 -> 16")):
        with pytest.raises(errors.IncompatibleCheckpointError, match=key.replace(".", r"\.")):
            train.train_and_evaluate(_cfg(**override), workdir)
        assert open(os.path.join(workdir, "config.json")).read() == saved
    with pytest.raises(errors.IncompatibleCheckpointError, match="model.latent_dim"):
        train.load_for_inference(_cfg(**{"model.latent_dim": 16}), workdir)


def test_resume_with_a_longer_run_is_allowed_and_logged(trained, tmp_path, caplog):
    src, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(src, workdir)
    with caplog.at_level("INFO"):
        train.train_and_evaluate(_cfg(num_steps=8), workdir)
    assert any("num_steps: 6 -> 8" in r.getMessage() for r in caplog.records)
    assert json.load(open(os.path.join(workdir, "config.json")))["num_steps"] == 8


def test_config_differences_reports_missing_keys_and_safe_blocks():
    from latent_jax import configlib

    unsafe, safe = configlib.config_differences(
        {"a": 1, "eval": {"n": 1}, "m": {"x": [1, 2]}},
        {"a": 1, "eval": {"n": 2}, "m": {"x": [1, 3], "y": 0}})
    assert unsafe == ["m.x: [1, 2] -> [1, 3]", 'm.y: "(absent)" -> 0']
    assert safe == ["eval.n: 1 -> 2"]


# ------------------------------------------------------------------------ bad input, one line
@pytest.mark.parametrize("args, expected", [
    (["--config=configs/nope.py"], "--config: cannot load the config file"),
    (["--config=configs/introvac.py:bogus"], "--config: unknown preset 'bogus'"),
    (["--config.nokey=3"], "--config.nokey: no such key"),
    (["--config.model.latent_dim=0"], "config.model.latent_dim: must be >= 1"),
    (["--config.model.channels=abc"], "--config.model.channels: 'abc' is not a tuple"),
    # The last of two tuple overrides wins (absl alone would concatenate them: (8, 16, 4, ...)).
    (["--config.model.channels=(4,8,16,32,64)"], "model.channels=(4, 8, 16, 32, 64)"),
    (["--config.optim.encoder.learning_rate=-1"], "config.optim.encoder.learning_rate"),
    (["--config.optim.decoder.learning_rate=nan"], "config.optim.decoder.learning_rate"),
    (["--mode=edit", "--images=nothing*.png", "--attributes=+Eyeglasses"],
     "--images: no file matches"),
    (["--mode=edit", "--images=docs/figures/swiss_roll_latents.png", "--attributes=+Eyeglasses"],
     "no checkpoint under"),
    (["--mode=evaluate"], "no checkpoint under"),
])
def test_bad_input_gets_one_line_and_leaves_nothing_behind(tmp_path, args, expected):
    workdir = tmp_path / "w"
    base = tiny.flags(str(workdir))
    if any(a.startswith("--config=") for a in args):   # another config file: no overrides
        base = [a for a in base if not a.startswith("--config")]
    argv = base + args
    res = subprocess.run([sys.executable, "-m", "latent_jax.main"] + argv, cwd=tiny.REPO,
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode in (1, 2), res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors_ = [l for l in res.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors_) == 1 and expected in errors_[0], res.stderr[-2000:]
    assert not workdir.exists()
