"""The engine where users of shared clusters go: a workdir lock, corrupt checkpoints, non-finite
states, resuming with another config, replayed metric rows, and bad input reported in one line
before anything is compiled or written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

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


def test_an_object_store_lock_has_a_lease_that_a_hard_killed_job_lets_expire(tmp_path):
    """The marker lock of gs:// workdirs (here forced on a local path): renewed while held,
    refused while fresh, taken over once its holder stopped renewing for a lease."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    lease = 0.9
    holder = workdir_lib.WorkdirLock(workdir, lease_seconds=lease, marker=True).acquire()
    first = json.loads(holder.path.read_text())["heartbeat"]
    time.sleep(lease)
    assert json.loads(holder.path.read_text())["heartbeat"] > first   # renewed
    with pytest.raises(errors.WorkdirLockedError, match="renewed .* s ago.*expires"):
        workdir_lib.WorkdirLock(workdir, lease_seconds=lease, marker=True).acquire()
    holder._stop.set()                 # a hard kill: the renewals stop, the marker stays
    holder._renewer.join()
    assert holder.path.exists()
    time.sleep(lease + 0.2)
    newcomer = workdir_lib.WorkdirLock(workdir, lease_seconds=lease, marker=True).acquire()
    assert json.loads(newcomer.path.read_text())["pid"] == os.getpid()
    newcomer.release()
    assert not newcomer.path.exists()
    # A marker written without a heartbeat (an older version) expires from its start time.
    (workdir / workdir_lib.LOCK_NAME).write_text(
        json.dumps({"host": "gone", "pid": 1, "started": time.time() - 2 * lease}))
    workdir_lib.WorkdirLock(workdir, lease_seconds=lease, marker=True).acquire().release()


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
    (["--config.model.channels=('a','b')"], "holds ['str'] where the config holds number"),
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


# --------------------------------------------------------------------------------- disk full
def test_disk_full_mid_save_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path,
                                                                              monkeypatch):
    import errno as errno_lib

    workdir = str(tmp_path / "run")
    real_save = ckpt_lib.Checkpointer.save

    def save(self, step, *args, **kwargs):
        if step >= 4:
            raise OSError(errno_lib.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save)
    with pytest.raises(errors.UserError, match="no space left") as info:
        train.train_and_evaluate(_cfg(), workdir)
    assert "last complete checkpoint (step 2)" in str(info.value)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(ckpt_lib.Checkpointer, "save", real_save)
    step, _, _ = train.Experiment(_cfg(), workdir).restore_newest()
    assert step == 2
    train.train_and_evaluate(_cfg(), workdir)                 # space freed: resumes and ends
    assert train.Experiment(_cfg(), workdir).restore_newest()[0] == 6


# ------------------------------------------------------------------------------ user images
def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (no pixel data): enough for PIL to open it."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_huge_image_header_is_refused_before_decoding(tmp_path):
    from latent_jax import imageio

    path = tmp_path / "bomb.png"
    _png_header_only(path, 40000, 40000)         # PIL itself refuses this one
    with pytest.raises(errors.ConfigError, match="too large to decode safely"):
        imageio.load_image(path, 16)
    path = tmp_path / "large.png"
    _png_header_only(path, 9000, 9000)           # under PIL's limit, over ours
    with pytest.raises(errors.ConfigError, match=r"too large to decode safely \(9000x9000"):
        imageio.load_image(path, 16)


def test_sixteen_bit_grey_png_keeps_its_levels(tmp_path):
    from PIL import Image
    from latent_jax import imageio

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((12, 20), 32000, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    x = imageio.load_image(path, 8)
    assert x.shape == (8, 8, 3)
    np.testing.assert_allclose(x, 32000 / 65535, atol=1e-4)     # not saturated to 1.0


def test_eight_bit_rgb_png_matches_its_pixels(tmp_path):
    from PIL import Image
    from latent_jax import imageio

    path = tmp_path / "rgb.png"
    img = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    x = imageio.load_image(path, 10)                       # crop 14 -> 10 wide, no resize
    np.testing.assert_allclose(x, img[:, 2:12] / 255.0, atol=1e-6)


def test_unwritable_output_dir_is_refused_before_loading(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = tiny.flags(str(tmp_path / "w")) + [
        "--mode=sample", "--attributes=+Eyeglasses", f"--output_dir={blocker}/out"]
    res = subprocess.run([sys.executable, "-m", "latent_jax.main"] + argv, cwd=tiny.REPO,
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "error: --output_dir: cannot write to" in res.stderr


def test_unknown_attribute_is_refused_before_loading(tmp_path):
    argv = tiny.flags(str(tmp_path / "w")) + ["--mode=sample", "--attributes=+Smiling"]
    res = subprocess.run([sys.executable, "-m", "latent_jax.main"] + argv, cwd=tiny.REPO,
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "error: --attributes: 'Smiling' is not a label of this model" in res.stderr


# ------------------------------------------------------------------------- metric averaging
def test_logged_metrics_are_means_over_the_logging_interval(trained, tmp_path):
    """With a row every 3 steps, each row holds the mean of the 3 per-step values that a row
    per step shows (same seed, same data: the same steps), plus steps/s and examples/s."""
    src, _ = trained
    per_step = [json.loads(l) for l in open(os.path.join(src, "metrics.jsonl"))]
    workdir = str(tmp_path / "every3")
    train.train_and_evaluate(_cfg(log_every_steps=3), workdir)
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [3, 6]
    for row in rows:
        window = [r for r in per_step if row["step"] - 3 < r["step"] <= row["step"]]
        for key in ("loss/reconstruction_l1", "loss/kl", "grad_norm/encoder"):
            assert row[key] == pytest.approx(np.mean([r[key] for r in window]), rel=1e-5), key
        assert row["perf/steps_per_sec"] > 0
        assert row["perf/examples_per_sec"] == pytest.approx(8 * row["perf/steps_per_sec"])


def test_when_no_checkpoint_restores_nothing_is_moved_and_the_run_does_not_start_over(trained,
                                                                                       tmp_path):
    src, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(src, workdir)
    for step in ("4", "6"):
        _zero_fill(os.path.join(workdir, "checkpoints", step))
    before = _listing(workdir)
    with pytest.raises(ckpt_lib.NoRestorableCheckpointError,
                       match="none of the 2 checkpoints .* restores .*step 6.*step 4"):
        train.train_and_evaluate(_cfg(), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints.unreadable"))
    assert _listing(workdir) == before


def test_missing_optimizer_block_is_a_config_error_naming_the_key(tmp_path):
    cfg = _cfg()
    del cfg.optim["decoder"]
    with pytest.raises(errors.ConfigError, match=r"config\.optim\.decoder: missing optimizer"):
        train.train_and_evaluate(cfg, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_an_abandoned_orbax_read_coroutine_prints_nothing_but_others_still_do(monkeypatch):
    """A checkpoint that does not restore leaves Orbax's read coroutines behind; when the
    garbage collector closes one with its read error pending, Python would print "Exception
    ignored in: <coroutine ...>" and a traceback (met in the multi-host resume test), after
    the checkpoint was reported in one line. Coroutines of other code are still reported."""
    import types

    from latent_jax import checkpoint

    async def read():
        raise Exception("Encountered error while reading array index")

    passed_on = []
    monkeypatch.setattr(checkpoint, "_previous_unraisablehook", passed_on.append)
    orbax_file = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "_src",
                              "serialization", "serialization.py")
    orbax_read = types.FunctionType(read.__code__.replace(co_filename=orbax_file), {})
    for fn in (orbax_read, read):
        coro = fn()
        unraisable = types.SimpleNamespace(
            exc_type=Exception, exc_value=Exception("read error"), exc_traceback=None,
            err_msg="Exception ignored in", object=coro)
        checkpoint._unraisablehook(unraisable)   # what sys.unraisablehook is outside tests
        coro.close()
    assert [u.object.cr_code.co_filename for u in passed_on] == [read.__code__.co_filename]
