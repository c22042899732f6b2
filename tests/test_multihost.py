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

import jax
import numpy as np
import pytest

from multihost_job import ENV, REPO, Job, tiny_flags

FAMILIES = ("introvac", "csvae", "ccvae", "lrlivae", "ifcvaegan")
RTOL, ATOL = 2e-4, 1e-5     # the device-equality test's tolerance


def _players(workdir):
    """(step, players) of the newest checkpoint, read onto this process's first device."""
    import orbax.checkpoint as ocp

    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    path = workdir / "checkpoints" / str(steps[-1]) / "state"
    ckptr = ocp.StandardCheckpointer()
    meta = ckptr.metadata(path).item_metadata
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          meta, is_leaf=lambda m: hasattr(m, "shape"))
    return steps[-1], jax.device_get(ckptr.restore(path, target)["players"])


def _metrics(workdir) -> dict[int, dict]:
    rows = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            rows[row["step"]] = row
    return rows


def _assert_trees_close(a, b, rtol=RTOL, atol=ATOL, exact=False):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _training_metrics(row: dict) -> dict:
    return {k: v for k, v in row.items()
            if k.split("/")[0] in ("loss", "grad_norm") and isinstance(v, float)}


STEPS = 16     # IntroVAC's runs: long enough for a stop in the middle


def _whole_runs(tmp_path, name, **overrides):
    """The same tiny run (with the end-of-run evaluation) as 1 process x 4 devices and as
    2 processes x 2 devices: {label: (workdir, job)}."""
    runs = {}
    for label, processes, devices in (("1x4", 1, 4), ("2x2", 2, 2)):
        workdir = tmp_path / label
        job = Job(tiny_flags(name, workdir, evaluate_at_end=True, **overrides),
                  processes=processes, devices=devices, log_dir=tmp_path, name=label)
        job.wait_ok()
        runs[label] = (workdir, job)
    return runs


@pytest.fixture(scope="module")
def introvac_runs(tmp_path_factory):
    """IntroVAC's whole runs, shared: the family test below and the stop tests' reference."""
    return _whole_runs(tmp_path_factory.mktemp("introvac"), "introvac", num_steps=STEPS)


def _assert_runs_equal(runs):
    (one, _), (two, job) = runs["1x4"], runs["2x2"]
    step1, p1 = _players(one)
    step2, p2 = _players(two)
    assert step1 == step2
    _assert_trees_close(p2, p1)
    m1, m2 = _metrics(one), _metrics(two)
    assert sorted(m1) == sorted(m2)
    compared = 0
    for step in m1:
        a, b = _training_metrics(m1[step]), _training_metrics(m2[step])
        assert a.keys() == b.keys(), step
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-3, atol=1e-5, err_msg=f"{k} {step}")
            compared += 1
        if "compute/flops" in m1[step]:
            assert m2[step]["compute/flops"] == pytest.approx(m1[step]["compute/flops"],
                                                              rel=1e-6)
    assert compared >= len(m1)
    r1 = json.loads((one / "eval" / "latest.json").read_text())
    r2 = json.loads((two / "eval" / "latest.json").read_text())
    assert r2["run"]["step"] == r1["run"]["step"] == step1
    for k, v in r1["headline"].items():
        if isinstance(v, float) and np.isfinite(v):
            assert r2["headline"][k] == pytest.approx(v, rel=1e-3, abs=1e-4), k
    assert sorted(os.listdir(two / "eval")) == sorted(os.listdir(one / "eval"))
    assert "report written" in job.log(0) and "report written" not in job.log(1)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_whole_run_on_2_processes_equals_one_process_of_4_devices(tmp_path, name,
                                                                     request):
    """Training, checkpoints and the end-of-run evaluation of one method per family: both
    processes exit 0, parameters and metrics equal the 1 x 4 run's, process 0 alone writes
    the report."""
    runs = (request.getfixturevalue("introvac_runs") if name == "introvac"
            else _whole_runs(tmp_path, name, **_sgd(name)))
    _assert_runs_equal(runs)


def _sgd(name) -> dict:
    """SGD for every player, as in the device-equality test: the 1 x 4 and 2 x 2 all-reduces
    add in different orders, and an adaptive optimizer with a small epsilon (IFcVAEGAN's
    RMSprop) turns those last bits into differences of up to 1e-3 within 6 steps. IntroVAC
    keeps its Adam: its run is also the stop tests' reference, and stays within tolerance."""
    import test_method_contract as contract
    from latent_jax import methods
    from latent_jax.data import pipeline as data_lib

    cfg = contract.tiny_config(name)
    players = methods.get_method(cfg, data_lib.get_data_spec(cfg.data), 8).player_names()
    return {f"optim.{p}.name": "sgd" for p in players}


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
    """SIGTERM to process 1 alone: both stop at one step with one checkpoint and exit 0. Then,
    resumed and SIGKILLed together, with the newest checkpoint corrupted: both resume from the
    same older step (moved aside once). The run ends bit-identical to the uninterrupted one."""
    workdir = tmp_path / "run"
    flags = tiny_flags("introvac", workdir, num_steps=STEPS, log_every_steps=1,
                       evaluate_at_end=True, **{"checkpoint.every_steps": 3})
    job = Job(flags, log_dir=tmp_path, name="sigterm")
    metrics = workdir / "metrics.jsonl"
    job.wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2)
    job.signal(1, signal.SIGTERM)
    job.wait_ok()
    stopped = [_steps_in(job.log(i), "stopped at step") for i in range(2)]
    assert stopped[0] and stopped[0] == stopped[1], job.logs_text()
    step = stopped[0][0]
    assert 2 <= step < STEPS - 6, job.logs_text()
    assert step in _checkpoint_steps(workdir)
    assert not (workdir / "eval").exists()

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
    final_step, players = _players(workdir)
    assert final_step == STEPS
    _assert_trees_close(players, _players(introvac_runs["2x2"][0])[1], exact=True)


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
    rows = _metrics(workdir)
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
