"""Trainer, parallelism, checkpoint/resume, preemption, NaN handling and config validation."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import tiny

ENV = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def _main(workdir, **extra):
    return [sys.executable, "-m", "latent_jax.main"] + tiny.flags(workdir, **extra)


def _metric_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    steps = []
    with open(path) as f:
        for line in f:
            try:
                steps.append(json.loads(line)["step"])
            except (ValueError, KeyError):
                pass
    return steps


def _final_players(workdir):
    from latent_jax import checkpoint

    mngr = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        step = mngr.latest_step()
        import orbax.checkpoint as ocp
        restored = mngr._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))
        return step, restored["state"]["players"]
    finally:
        mngr.close()


def _wait_for_step(proc, workdir, step, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training exited early ({proc.returncode}):\n{out[-3000:]}")
        if any(s >= step for s in _metric_steps(workdir)):
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"step {step} not reached in {timeout} s")


def _tiny_preset(config_file):
    """The command line of a config file's `tiny` preset with overrides."""
    def command(workdir, **extra):
        return [sys.executable, "-m", "latent_jax.main",
                f"--config={os.path.join(tiny.REPO, 'configs', config_file)}:tiny",
                f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in extra.items()]
    return command


# IntroVAC (one batch per step, two phases), Lr-LiVAE (n_gm + 1 batches per step, five or
# six players, spectral-norm state with the hinge loss) and IFcVAEGAN (four players with
# RMSprop, the discriminator's with its own momentum, BatchNorm statistics in the decoder).
@pytest.mark.parametrize("command,total", [
    (_main, 40), (_tiny_preset("lrlivae.py"), 14), (_tiny_preset("ifcvaegan.py"), 14)],
    ids=["introvac", "lrlivae", "ifcvaegan"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, command, total):
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    flags = {"checkpoint.every_steps": 3, "num_steps": total}
    uninterrupted = subprocess.run(command(ref, **flags),
                                   capture_output=True, text=True, env=ENV, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-4000:]

    proc = subprocess.Popen(command(killed, **flags),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    _wait_for_step(proc, killed, 7)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    steps_before = _metric_steps(killed)
    assert max(steps_before) < total, "the run finished before it was killed"

    resumed = subprocess.run(command(killed, **flags),
                             capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from step" in resumed.stderr
    steps_after = _metric_steps(killed)
    assert steps_after == sorted(set(steps_after)), "replayed steps logged twice"
    assert steps_after[-1] == total

    step_a, players_a = _final_players(ref)
    step_b, players_b = _final_players(killed)
    assert step_a == step_b == total
    la, lb = jax.tree.leaves(players_a), jax.tree.leaves(players_b)
    assert len(la) == len(lb) > 10
    for a, b in zip(la, lb):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    """SIGTERM (preemption) and SIGINT (Ctrl-C): a checkpoint, one line, exit 0."""
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(_main(workdir, num_steps=400, **{"checkpoint.every_steps": 1000}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    _wait_for_step(proc, workdir, 5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert f"on {signal.Signals(sig).name}; checkpoint saved" in out
    assert "Traceback" not in out
    step, _ = _final_players(workdir)
    assert 5 <= step < 400
    assert step == max(_metric_steps(workdir))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from latent_jax import train

    workdir = str(tmp_path / "nan")
    cfg = tiny.config(num_steps=12)
    # A learning rate this large sends the parameters to inf within a few steps.
    for player in ("encoder", "classifier", "decoder"):
        cfg.optim[player].learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match="non-finite"):
        train.train_and_evaluate(cfg, workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
        _, players = _final_players(workdir)
        for leaf in jax.tree.leaves(players):
            assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.parametrize("override, key", [
    ({"method": "introvak"}, "config.method"),
    ({"data.labels": ("Eyeglases",)}, "config.data.labels"),
    ({"batch_size": 0}, "config.batch_size"),
    ({"num_steps": 0, "num_epochs": 0.0}, "config.num_epochs"),
    ({"optim.encoder.name": "adamw2"}, "config.optim.encoder.name"),
    ({"model.channels": (8, 16, 32, 64, 128)}, "channels"),
])
def test_bad_config_fails_before_compiling_and_names_the_key(tmp_path, monkeypatch, override, key):
    from latent_jax import train

    cfg = tiny.config()
    cfg.update_from_flattened_dict(override)

    def no_compile(*a, **k):
        raise AssertionError("compiled before validating the config")

    monkeypatch.setattr(jax, "jit", no_compile)
    workdir = tmp_path / "w"
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        train.train_and_evaluate(cfg, str(workdir))
    assert not workdir.exists()


def test_unwritable_workdir_is_reported(tmp_path):
    from latent_jax import train

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="--workdir"):
        train.train_and_evaluate(tiny.config(), str(blocker / "run"))


def test_cli_reports_config_errors_without_traceback(tmp_path):
    res = subprocess.run(_main(str(tmp_path / "w"), **{"data.labels": "('Nope',)"}),
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1
    assert "config.data.labels" in res.stderr and "Traceback" not in res.stderr


def test_sigterm_during_the_final_evaluation_stops_promptly(tmp_path):
    """The end-of-run evaluation (here it trains a judge from scratch) is cut short by SIGTERM
    with one line; the final checkpoint is already saved."""
    workdir = tmp_path / "run"
    env = dict(ENV, LATENT_JAX_CACHE=str(tmp_path / "cache"))
    # The judge is given far more steps than it could finish in the second the test waits, so
    # the signal lands during the evaluation however warm the compilation cache is.
    proc = subprocess.Popen(_main(str(workdir), num_steps=6, evaluate_at_end="True",
                                  **{"eval.judge.steps": 1_000_000}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    final = workdir / "checkpoints" / "6" / "commit_success.txt"
    t0 = time.time()
    while not final.exists():
        if proc.poll() is not None or time.time() - t0 > 240:
            proc.kill()
            pytest.fail("the run did not reach its final checkpoint")
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    t_signal = time.time()
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail("the evaluation went on after SIGTERM:\n" + out[-3000:])
    assert time.time() - t_signal < 30, "the evaluation went on after SIGTERM"
    assert proc.returncode == 0, out[-3000:]
    assert "stopped during the final evaluation on SIGTERM" in out
    assert "Traceback" not in out
    assert not (workdir / "eval").exists() or not list((workdir / "eval").glob("report_*.json"))


def test_schedules_count_each_players_own_updates(monkeypatch):
    """A player stepped k times per iteration gets k * steps_per_epoch updates per epoch, so a
    schedule boundary at epoch 1 is reached after steps_per_epoch iterations, not after
    steps_per_epoch / k."""
    import jax.numpy as jnp
    from latent_jax import data as data_lib
    from latent_jax.methods import introvac

    cfg = tiny.config()
    for p in ("encoder", "classifier", "decoder"):
        cfg.optim[p].name = "sgd"
        cfg.optim[p].learning_rate = 1.0
        cfg.optim[p].weight_decay = 0.0
        cfg.optim[p].schedule.kind = "piecewise"
        cfg.optim[p].schedule.boundaries_epochs = (1,)
        cfg.optim[p].schedule.factor = 0.1
    monkeypatch.setattr(introvac.IntroVAC, "updates_per_step",
                        lambda self, player: 4 if player == "encoder" else 1)
    spec = data_lib.get_data_spec(cfg.data)
    method = introvac.IntroVAC(cfg, spec, steps_per_epoch=5)

    def lr_after(player, n_updates):
        tx = method.tx(player)
        params = {"w": jnp.zeros(())}
        state = tx.init(params)
        for _ in range(n_updates):
            _, state = tx.update({"w": jnp.ones(())}, state, params)
        updates, _ = tx.update({"w": jnp.ones(())}, state, params)
        return -float(updates["w"])

    # encoder: 4 updates per iteration, boundary after 5 iterations = 20 updates
    assert lr_after("encoder", 19) == pytest.approx(1.0)
    assert lr_after("encoder", 20) == pytest.approx(0.1)
    # decoder: 1 update per iteration, boundary after 5 updates
    assert lr_after("decoder", 4) == pytest.approx(1.0)
    assert lr_after("decoder", 5) == pytest.approx(0.1)


def test_a_signal_during_an_evaluation_is_not_swallowed_by_library_error_handling():
    """Inside `immediate()` a signal can arrive anywhere, e.g. inside JAX's persistent-cache
    read, which catches `Exception` and recompiles: the interruption must survive such
    handlers (it once did not, and a SIGTERM-ed evaluation ran on). It is recorded, and the
    evaluation's next batch (`interrupt.check()`) raises it as a BaseException."""
    from latent_jax import interrupt
    from latent_jax import train

    flag = train._SignalFlag(signals=(signal.SIGUSR1,))
    try:
        with pytest.raises(train._Interrupted):
            with flag.immediate():
                try:   # what a library's broad error handling looks like
                    os.kill(os.getpid(), signal.SIGUSR1)
                    time.sleep(1.0)
                except Exception:  # noqa: BLE001
                    pass
                interrupt.check()   # the next evaluation batch
        assert flag.triggered and flag.signal_name == "SIGUSR1"
    finally:
        flag.restore()


def test_a_signal_during_a_gc_callback_stops_the_evaluation_without_a_traceback(monkeypatch):
    """A handler's exception raised while a `__del__`, a weakref finaliser or a gc callback
    runs is printed as "Exception ignored ... Traceback" and dropped (CI met it inside JAX's
    `_xla_gc_callback` and inside `WeakValueDictionary`'s `remove`). So during an evaluation the
    handler only records the signal; the next progress-bar update raises it, and nothing is
    left for Python to print."""
    from latent_jax import logging as lj_logging
    from latent_jax import train

    reached, unraisable = [], []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    class SignalsDuringDel:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.5)

    flag = train._SignalFlag(signals=(signal.SIGUSR1,))
    try:
        with pytest.raises(train._Interrupted):
            with flag.immediate():
                obj = SignalsDuringDel()
                del obj                  # the handler runs inside __del__
                reached.append(True)
                bar = lj_logging.ProgressBar(10, enabled=False)
                for step in range(1, 11):
                    bar.update(step)
                    reached.append(step)
        assert reached == [True], "the signal was acted on inside __del__, or not at the bar"
        assert not unraisable, [u.exc_value for u in unraisable]
    finally:
        flag.restore()


def _metric_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith(("loss/", "grad_norm/"))}
            for r in rows}


def test_several_steps_per_call_train_as_one_step_per_call_and_resume(tmp_path):
    """config.steps_per_call=3 (a lax.scan over stacked batches) against one step per call:
    calls of 3, 1 (to IntroVAC's phase change at step 4), 2 (to the checkpoint at 6) and 2
    (to the end). The same parameters and the same logged means, up to float rounding (XLA
    compiles the loop's body on its own, so its fusions may sum in another order). Resumed
    from the checkpoint at step 6, the run ends exactly where it did: the iterator runs a
    call ahead of the steps, and the checkpoint must hold its position at the step."""
    import shutil

    from latent_jax import train

    common = {"num_steps": 8, "log_every_steps": 3, "checkpoint.every_steps": 6}
    one, three = str(tmp_path / "one"), str(tmp_path / "three")
    train.train_and_evaluate(tiny.config(**common), one)
    train.train_and_evaluate(tiny.config(**dict(common, steps_per_call=3)), three)
    rows_one, rows_three = _metric_rows(one), _metric_rows(three)
    assert sorted(rows_one) == sorted(rows_three) == [3, 6, 8]
    for step, row in rows_one.items():
        assert row.keys() == rows_three[step].keys()
        for key, value in row.items():
            assert rows_three[step][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (step, key)
    (s1, p1), (s3, p3) = _final_players(one), _final_players(three)
    assert s1 == s3 == 8
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p3)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)

    shutil.rmtree(os.path.join(three, "checkpoints", "8"))
    train.train_and_evaluate(tiny.config(**dict(common, steps_per_call=3)), three)
    assert _metric_rows(three) == rows_three
    step, resumed = _final_players(three)
    assert step == 8
    for a, b in zip(jax.tree.leaves(p3), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_steps_per_call_needs_intervals_that_are_multiples_of_it(tmp_path):
    from latent_jax import train
    from latent_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=r"steps_per_call: 4 .*checkpoint\.every_steps=2"):
        train.train_and_evaluate(tiny.config(steps_per_call=4, log_every_steps=4),
                                 str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="steps_per_call: must be an int >= 1"):
        train.train_and_evaluate(tiny.config(steps_per_call=0), str(tmp_path / "w"))


def test_an_implicit_host_transfer_in_the_training_loop_is_an_error(tmp_path, monkeypatch):
    """The loop's calls run under `jax.transfer_guard("disallow")`: every other test that
    trains passes through it, and a batch left on the host (an implicit transfer at each
    call, which would stall an accelerator) fails at the first step instead."""
    from latent_jax import train

    placed = train.Experiment.next_batches
    monkeypatch.setattr(train.Experiment, "next_batches",
                        lambda self, it, n, first=None: jax.device_get(placed(self, it, n, first)))
    with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        train.train_and_evaluate(tiny.config(num_steps=2), str(tmp_path / "w"))
