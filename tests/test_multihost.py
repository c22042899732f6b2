"""Multi-host runs for real: `latent_jax.main` as 2 JAX processes x 2 CPU devices
(`jax.distributed` on a localhost coordinator, gloo collectives), compared with one process of
4 devices. Every process has a hard deadline (tests/multihost_job.py)."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from multihost_job import (ENV, Job, assert_runs_equal, assert_trees_close, metrics,
                           players, tiny_flags, whole_runs)


STEPS = 16     # IntroVAC's runs: long enough for a stop in the middle


@pytest.fixture(scope="module")
def introvac_runs(tmp_path_factory):
    """IntroVAC's whole runs (1 x 4 and 2 x 2, its own Adam, end-of-run evaluation), shared:
    the family test below and the stop tests' reference."""
    return whole_runs(tmp_path_factory.mktemp("introvac"), "introvac", num_steps=STEPS,
                      evaluate_at_end=True)


def test_a_whole_introvac_run_on_2_processes_equals_one_process_of_4_devices(introvac_runs):
    """Training, checkpoints and the end-of-run evaluation: both processes exit 0, parameters
    and metrics equal the 1 x 4 run's, process 0 alone writes the report. The other families:
    tests/test_multihost_families.py."""
    assert_runs_equal(introvac_runs)


def _steps_in(log: str, phrase: str) -> list[int]:
    import re

    return [int(m) for m in re.findall(phrase + r" (\d+)", log)]


def _zero_fill_newest(workdir) -> int:
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    files = glob.glob(str(workdir / "checkpoints" / str(steps[-1]) / "state" / "ocdbt.process_*"
                          / "d" / "*"))
    assert files
    for f in files:
        n = os.path.getsize(f)
        with open(f, "wb") as fh:
            fh.write(b"\0" * n)
    return steps[-1]


def _checkpoint_steps(workdir) -> list[int]:
    ckpts = workdir / "checkpoints"
    return sorted(int(s) for s in os.listdir(ckpts) if s.isdigit()) if ckpts.exists() else []


def test_stops_and_resumes_are_agreed_by_every_process(tmp_path, introvac_runs):
    """SIGTERM to process 1 alone: both stop at one step with one checkpoint and exit 0; the
    same while the resumed job starts. Then, resumed and SIGKILLed together, with the newest checkpoint corrupted: both resume from the
    same older step (moved aside once). The run ends bit-identical to the uninterrupted one."""
    workdir = tmp_path / "run"
    flags = tiny_flags("introvac", workdir, num_steps=STEPS, log_every_steps=1,
                       evaluate_at_end=True, **{"checkpoint.every_steps": 3})
    job = Job(flags, log_dir=tmp_path, name="sigterm")
    metrics_file = workdir / "metrics.jsonl"
    job.wait_for(lambda: metrics_file.exists()
                 and len(metrics_file.read_text().splitlines()) >= 2)
    job.signal(1, signal.SIGTERM)
    job.wait_ok()
    stopped = [_steps_in(job.log(i), "stopped at step") for i in range(2)]
    assert stopped[0] and stopped[0] == stopped[1], job.logs_text()
    step = stopped[0][0]
    assert 2 <= step < STEPS - 6, job.logs_text()
    assert step in _checkpoint_steps(workdir)
    assert not (workdir / "eval").exists()

    # A stop notice while the resumed job restores or compiles, before its first step (JAX's
    # sync point alone would never be met by a resumed run): both stop, no step taken.
    job = Job(flags, log_dir=tmp_path, name="early")
    job.wait_for(lambda: "resuming from step" in job.log(1))
    job.signal(1, signal.SIGTERM)
    job.wait_ok()
    early = [_steps_in(job.log(i), "stopped at step") for i in range(2)]
    assert early[0] == early[1] and early[0][0] in (step, step + 1), job.logs_text()
    step = early[0][0]

    job = Job(flags, log_dir=tmp_path, name="sigkill")
    job.wait_for(lambda: _checkpoint_steps(workdir)[-1] > step)
    job.kill()
    assert [_steps_in(job.log(i), "resuming from step") for i in range(2)] == [[step]] * 2
    newest = _zero_fill_newest(workdir)

    job = Job(flags, log_dir=tmp_path, name="resumed")
    job.wait_ok()
    starts = [_steps_in(job.log(i), "resuming from step") for i in range(2)]
    assert starts[0] == starts[1] and len(starts[0]) == 1, job.logs_text()
    assert starts[0][0] < newest
    assert len(os.listdir(workdir / "checkpoints.unreadable")) == 1
    for i in range(2):
        assert f"skipping checkpoint {newest}" in job.log(i)
        assert "Traceback" not in job.log(i)
    final_step, final = players(workdir)
    assert final_step == STEPS
    assert_trees_close(final, players(introvac_runs["2x2"][0])[1], exact=True)


PLAN = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import jax
    from latent_jax import train
    from latent_jax.data import pipeline as data_lib
    import test_method_contract as contract
    cfg = contract.tiny_config("introvac", **json.loads(sys.argv[2]))
    exp = train.Experiment(cfg, sys.argv[3])
    it = data_lib.make_train_iterator(exp.data, global_batch_size=int(cfg.batch_size), seed=0)
    costs = exp.plan(exp.abstract_states(), exp.next_batch(it))
    print("PLAN", json.dumps({"devices": len(jax.devices()), "steps": exp.total_steps,
                              "flops": {str(p): c.flops for p, c in costs.items()}}))
""")


def _plan(tmp_path, devices, overrides):
    res = subprocess.run([sys.executable, "-c", PLAN, os.path.dirname(__file__),
                          json.dumps(overrides), str(tmp_path / "unused")],
                         capture_output=True, text=True, timeout=300,
                         env=dict(ENV, JAX_NUM_CPU_DEVICES=str(devices)))
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("PLAN "))
    out = json.loads(line[5:])
    assert out["devices"] == devices
    return out


def test_a_flop_budget_buys_the_same_steps_on_1x1_1x4_and_2x2_and_post_hoc_modes_need_no_pod(
        tmp_path):
    """A FLOP budget: the same steps and FLOPs on 1 x 1 and 1 x 4 (plans) and on 2 x 2 (a run).
    That 2-process run (its config.json says distributed) is then loaded by a single process,
    twice in one process, and edited by a 2-process job in which process 0 alone writes."""
    one = _plan(tmp_path, 1, {"num_steps": 6})
    f0, f1 = one["flops"]["0"], one["flops"]["1"]
    budget = 4 * f0 + 3.5 * f1          # the 4 pre-training steps, then 3 of phase 1
    overrides = {"num_steps": 0, "budget.flops": budget}
    assert _plan(tmp_path, 1, overrides)["steps"] == 7
    four = _plan(tmp_path, 4, overrides)
    assert four["steps"] == 7
    for p in ("0", "1"):
        assert four["flops"][p] == pytest.approx(one["flops"][p], rel=1e-9)
    workdir = tmp_path / "2x2"
    Job(tiny_flags("introvac", workdir, num_steps=0, **{"budget.flops": budget}),
        log_dir=tmp_path, name="budget").wait_ok()
    rows = metrics(workdir)
    assert max(rows) == 7
    assert rows[7]["compute/flops"] == pytest.approx(4 * f0 + 3 * f1, rel=1e-9)

    saved = json.loads((workdir / "config.json").read_text())
    assert saved["parallel"]["distributed"] is True
    script = textwrap.dedent("""
        import sys
        from latent_jax import train
        config = train.saved_config(sys.argv[1])
        for _ in range(2):   # a second workdir load in the same process
            exp, states, step = train.load_for_inference(config, sys.argv[1])
        print("LOADED", step)
    """)
    res = subprocess.run([sys.executable, "-c", script, str(workdir)], capture_output=True,
                         text=True, env=dict(ENV, JAX_NUM_CPU_DEVICES="2"), timeout=180)
    assert res.returncode == 0 and "LOADED 7" in res.stdout, res.stderr[-3000:]
    from latent_jax import imageio

    image = tmp_path / "face.png"
    imageio.save_png(image, np.full((16, 16, 3), 0.5, np.float32))
    out = tmp_path / "edits"
    job = Job(tiny_flags("introvac", workdir, num_steps=0, **{"budget.flops": budget}) + [
        "--mode=edit", f"--images={image}", "--attributes=+Eyeglasses", f"--output_dir={out}"],
        log_dir=tmp_path, name="edit")
    job.wait_ok(timeout=180)
    assert any(f.endswith("_add_Eyeglasses.png") for f in os.listdir(out))
    assert "edited 1 images" in job.log(0) and "edited" not in job.log(1)


def test_a_second_job_on_a_busy_workdir_ends_every_process_with_the_lock_message(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    fd = os.open(workdir / "LOCK", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # another job holds it
    os.write(fd, json.dumps({"host": "elsewhere", "pid": 1, "started": time.time()}).encode())
    try:
        job = Job(tiny_flags("introvac", workdir), log_dir=tmp_path, name="locked")
        codes = job.wait(timeout=120)
    finally:
        os.close(fd)
    assert codes == [1, 1], job.logs_text()
    assert "is in use by another training job" in job.log(0)
    assert "process 0 failed" in job.log(1) and "in use by another training job" in job.log(1)
    assert time.time() - job.t0 < 90


def test_an_error_on_one_process_ends_every_process_with_the_message_on_process_0(tmp_path):
    job = Job(tiny_flags("introvac", tmp_path / "run"), log_dir=tmp_path, name="error",
              extra={1: ["--config.data.labels=('Nope',)"]})
    codes = job.wait(timeout=120)
    assert codes == [1, 1], job.logs_text()
    assert "process 1 failed: config.data.labels" in job.log(0), job.logs_text()
    assert "Traceback" not in job.log(0)
    assert time.time() - job.t0 < 90
