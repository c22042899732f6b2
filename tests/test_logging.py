"""Tests for latent_jax.logging (JSONL, TensorBoard event files, progress bar) and the image
grids of latent_jax.imageio."""

import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from latent_jax import imageio
from latent_jax import logging as lj_logging


def _event_files(logdir):
    return sorted(os.path.join(logdir, f) for f in os.listdir(logdir) if "tfevents" in f)


def _read_back(logdir):
    """TensorBoard's own reader (as the TensorBoard UI reads a log directory)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    return acc


# ---------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------


def test_jsonl_round_trip_and_types(tmp_path):
    path = tmp_path / "sub" / "metrics.jsonl"
    with lj_logging.JsonlWriter(path) as w:
        w.write(np.int64(10), {"loss": np.float32(0.25), "acc": 0.5, "n": np.int32(3)})
        w.write(20, {"loss": np.array(0.125, dtype=np.float64), "kl": np.array([1.5])})
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["step"] == 10 and isinstance(first["step"], int)
    assert isinstance(first["time"], float)
    assert first["loss"] == 0.25 and first["acc"] == 0.5 and first["n"] == 3.0
    assert second == {"step": 20, "time": second["time"], "loss": 0.125, "kl": 1.5}


def test_jsonl_accepts_jax_scalars(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    path = tmp_path / "m.jsonl"
    with lj_logging.JsonlWriter(path) as w:
        w.write(jnp.asarray(3), {"loss": jnp.float32(1.5), "b": jnp.bfloat16(2.0)})
    rec = json.loads(path.read_text())
    assert rec["step"] == 3 and rec["loss"] == 1.5 and rec["b"] == 2.0
    assert list(rec) == ["step", "time", "loss", "b"]  # caller's order, not sorted


def test_jsonl_nonfinite_values_stay_strict_json(tmp_path):
    path = tmp_path / "m.jsonl"
    with lj_logging.JsonlWriter(path) as w:
        w.write(1, {"a": float("nan"), "b": np.float32("inf"), "c": -np.inf, "d": 1.0})
    line = path.read_text().strip()
    # A strict parser (no NaN/Infinity literals) must accept the line.
    def reject(token):
        raise ValueError(token)
    rec = json.loads(line, parse_constant=reject)
    assert rec["a"] == "NaN" and rec["b"] == "Infinity" and rec["c"] == "-Infinity"
    back = lj_logging.read_jsonl(path)[0]
    assert math.isnan(back["a"]) and back["b"] == math.inf and back["c"] == -math.inf
    assert back["d"] == 1.0


def test_jsonl_appends_on_resume_and_repairs_partial_line(tmp_path):
    path = tmp_path / "m.jsonl"
    with lj_logging.JsonlWriter(path) as w:
        w.write(1, {"x": 1.0})
    with open(path, "a") as f:
        f.write('{"step": 2, "x"')  # crash mid-line
    with lj_logging.JsonlWriter(path) as w:
        w.write(3, {"x": 3.0})
    records = lj_logging.read_jsonl(path)
    assert [r["step"] for r in records] == [1, 3]
    assert [r["x"] for r in records] == [1.0, 3.0]


def test_jsonl_flushes_every_write(tmp_path):
    path = tmp_path / "m.jsonl"
    w = lj_logging.JsonlWriter(path)
    w.write(5, {"x": 2.0})
    # Readable by another handle before close.
    assert json.loads(path.read_text())["x"] == 2.0
    w.close()


def test_jsonl_rejects_bad_metrics(tmp_path):
    with lj_logging.JsonlWriter(tmp_path / "m.jsonl") as w:
        with pytest.raises(ValueError, match="reserved"):
            w.write(1, {"step": 1.0})
        with pytest.raises(ValueError, match="'v'"):
            w.write(1, {"v": np.zeros(3)})


# ---------------------------------------------------------------------------------------------
# TensorBoard (tensorboardX writes, tensorboard reads)
# ---------------------------------------------------------------------------------------------


def _tb_writer(logdir, **kw):
    return lj_logging.MetricWriter(logdir, jsonl=False, save_pngs=False, process_index=0, **kw)


def test_tensorboard_scalars_and_images_read_back(tmp_path):
    logdir = tmp_path / "tb"
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    gray = np.full((3, 2, 1), 200, np.uint8)
    with _tb_writer(logdir) as w:
        w.write_scalars(7, {"loss": 0.5, "lr": np.float32(1e-3), "nan": float("nan")})
        w.write_scalars(2**40, {"loss": 0.25})
        w.write_images(9, {"grid": image, "gray": gray})
    (path,) = _event_files(logdir)
    assert os.path.basename(path).startswith("events.out.tfevents.")
    acc = _read_back(logdir)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(7, 0.5), (2**40, 0.25)]
    assert acc.Scalars("lr")[0].value == pytest.approx(1e-3)
    assert math.isnan(acc.Scalars("nan")[0].value)
    (rgb,) = acc.Images("grid")
    assert (rgb.step, rgb.height, rgb.width) == (9, 4, 5)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(rgb.encoded_image_string))),
                                  image)
    (g,) = acc.Images("gray")
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(g.encoded_image_string)).convert("L")), gray[..., 0])


def test_tensorboard_events_reach_disk_within_flush_secs(tmp_path):
    """tensorboardX writes from a background thread: events reach the file within flush_secs
    (and at close), not necessarily at flush()."""
    import time

    w = _tb_writer(tmp_path, flush_secs=1)
    w.write_scalars(1, {"a": 1.0})
    deadline = time.time() + 10
    while time.time() < deadline and "a" not in _read_back(tmp_path).Tags()["scalars"]:
        time.sleep(0.2)
    assert [e.value for e in _read_back(tmp_path).Scalars("a")] == [1.0]
    w.close()


def test_purge_step_gives_one_value_per_step_after_a_resume(tmp_path):
    """A killed run logged steps 1-10 but its last checkpoint was step 6; the resumed run
    logs 7-12 again with purge_step=6: TensorBoard shows each step once."""
    with _tb_writer(tmp_path) as w:
        for step in range(1, 11):
            w.write_scalars(step, {"loss": float(step)})
    with _tb_writer(tmp_path, purge_step=6) as w:
        for step in range(7, 13):
            w.write_scalars(step, {"loss": 100.0 + step})
    assert len(_event_files(tmp_path)) == 2
    rows = [(e.step, e.value) for e in _read_back(tmp_path).Scalars("loss")]
    assert rows == [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(7, 13)]


def test_drop_rows_after_keeps_one_row_per_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with lj_logging.JsonlWriter(path) as w:
        for step in range(1, 9):
            w.write(step, {"x": float(step)})
    assert lj_logging.drop_rows_after(path, 5) == 3
    assert [r["step"] for r in lj_logging.read_jsonl(path)] == [1, 2, 3, 4, 5]
    assert lj_logging.drop_rows_after(path, 5) == 0
    assert lj_logging.drop_rows_after(tmp_path / "absent.jsonl", 0) == 0


# ---------------------------------------------------------------------------------------------
# MetricWriter
# ---------------------------------------------------------------------------------------------


def test_metric_writer_fans_out(tmp_path):
    with lj_logging.MetricWriter(tmp_path, process_index=0) as mw:
        mw.write_scalars(5, {"loss": np.float32(0.5)})
        paths = mw.write_images(5, {
            "recon/grid": np.random.default_rng(0).random((4, 8, 8, 1)),  # batch -> grid
            "single": np.zeros((8, 9, 3), np.uint8),
        })
    rec = lj_logging.read_jsonl(tmp_path / "metrics.jsonl")
    assert rec == [{"step": 5, "time": rec[0]["time"], "loss": 0.5}]
    acc = _read_back(tmp_path)
    assert acc.Tags()["scalars"] == ["loss"]
    assert sorted(acc.Tags()["images"]) == ["recon/grid", "single"]
    assert acc.Scalars("loss")[0].step == 5
    grid_png = np.asarray(Image.open(paths["recon/grid"]))
    assert grid_png.shape == (2 * 10 + 2, 2 * 10 + 2, 3)
    assert os.path.dirname(paths["single"]) == os.path.join(str(tmp_path), "images")
    assert os.path.basename(paths["single"]) == "single_00000005.png"


def test_metric_writer_log_lines(tmp_path):
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    messages = []
    orig = absl_logging.info
    absl_logging.info = lambda fmt, *args: messages.append(fmt % args)
    try:
        with lj_logging.MetricWriter(tmp_path, tensorboard=False, log_lines=True,
                                     process_index=0) as mw:
            mw.write_scalars(3, {"loss": 0.123456})
    finally:
        absl_logging.info = orig
    assert messages == ["step 3: loss=0.1235"]


def test_metric_writer_is_noop_on_other_processes(tmp_path):
    logdir = tmp_path / "run"
    with lj_logging.MetricWriter(logdir, process_index=1) as mw:
        mw.write_scalars(1, {"loss": 1.0})
        assert mw.write_images(1, {"x": np.zeros((2, 4, 4, 3))}) == {}
    assert not logdir.exists()


def test_metric_writer_defaults_to_jax_process_index(tmp_path):
    pytest.importorskip("jax")
    with lj_logging.MetricWriter(tmp_path) as mw:
        assert mw.active  # single-process test run is process 0


# ---------------------------------------------------------------------------------------------
# ProgressBar
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_progress_plain_one_line_per_interval_with_rate_and_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = lj_logging.ProgressBar(1000, stream=out, clock=clock, every_steps=100)
    clock.t += 50.0  # compile-heavy first step: excluded from the rate
    bar.update(1, {"loss": 1.0})
    for step in range(2, 101):
        clock.t += 0.2
        bar.update(step, {"loss": np.float32(0.123)} if step == 100 else None)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train step 1/1000 (0.1%) loss=1"
    # 99 steps in 19.8 s (the 50 s first step excluded) -> 5 steps/s, 900 left -> 3 min.
    assert lines[1] == "train step 100/1000 (10.0%) 5 steps/s ETA 03:00 loss=0.123"
    assert len(lines) == 2
    bar.update(199)
    assert len(out.getvalue().splitlines()) == 2   # no multiple of 100 reached since step 100
    bar.update(201)
    assert len(out.getvalue().splitlines()) == 3
    assert "\r" not in out.getvalue()
    bar.close()
    assert len(out.getvalue().splitlines()) == 3  # step 201 already printed


def test_progress_plain_close_prints_final_state_and_ends():
    clock, out = FakeClock(), io.StringIO()
    bar = lj_logging.ProgressBar(100, initial_step=40, desc="eval", stream=out, clock=clock)
    bar.update(41)
    clock.t += 2.0
    bar.update(45)
    assert len(out.getvalue().splitlines()) == 1
    bar.close()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("eval step 45/100 (45.0%) 2 steps/s ETA ")
    bar.update(100)  # ignored after close
    assert len(out.getvalue().splitlines()) == 2


def test_progress_plain_default_interval_and_reaching_total():
    clock, out = FakeClock(), io.StringIO()
    bar = lj_logging.ProgressBar(50, stream=out, clock=clock)   # a line every 5 steps
    for s in range(1, 51):
        clock.t += 1.0
        bar.update(s)
    lines = out.getvalue().splitlines()
    assert [l.split()[2] for l in lines] == [f"{s}/50" for s in (1, 5, 10, 15, 20, 25, 30, 35,
                                                                  40, 45, 50)]
    assert lines[-1].startswith("train step 50/50 (100.0%) 1 steps/s ETA 00:00")
    bar.close()
    assert len(out.getvalue().splitlines()) == len(lines)


def test_progress_tty_is_a_tqdm_bar_with_metrics(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = io.StringIO()
    bar = lj_logging.ProgressBar(200, stream=out, is_tty=True, refresh_secs=0.0)
    bar.update(1, {"loss": 2.0})
    bar.update(21, {"loss": 1.5})
    bar.close()
    text = out.getvalue()
    assert "\r" in text and text.endswith("\n")
    last = text.rstrip("\n").rsplit("\r", 1)[-1]
    assert "21/200" in last and "loss=1.5" in last and last.startswith("train")
    assert len(last) <= 120


def test_progress_tty_write_prints_above_the_bar(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = io.StringIO()
    bar = lj_logging.ProgressBar(10, stream=out, is_tty=True, refresh_secs=0.0)
    bar.update(3)
    bar.write("checkpoint saved")
    bar.close()
    lines = [l.rsplit("\r", 1)[-1] for l in out.getvalue().splitlines()]
    assert "checkpoint saved" in lines
    assert lines[-1].startswith("train") and "3/10" in lines[-1]


def test_progress_tty_detection_and_disabled():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert lj_logging.ProgressBar(5, stream=Tty()).is_tty
    assert not lj_logging.ProgressBar(5, stream=io.StringIO()).is_tty
    out = io.StringIO()
    bar = lj_logging.ProgressBar(5, stream=out, enabled=False)
    bar.update(5, {"a": 1})
    bar.close()
    assert out.getvalue() == ""


# ---------------------------------------------------------------------------------------------
# Image grids
# ---------------------------------------------------------------------------------------------


def test_make_grid_shape_and_layout():
    images = np.zeros((5, 4, 6, 3), np.float32)
    grid = imageio.make_grid(images, nrow=3, padding=2, pad_value=1.0)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3)
    # Image cells are black, padding and the unused 6th cell are white.
    assert (grid[2:6, 2:8] == 0).all()
    assert (grid[0:2] == 255).all() and (grid[:, 0:2] == 255).all()
    assert (grid[8:12, 18:24] == 255).all()  # empty cell (row 1, col 2)
    assert (grid[8:12, 10:16] == 0).all()  # 5th image (row 1, col 1)
    # Default nrow = ceil(sqrt(N)).
    assert imageio.make_grid(np.zeros((10, 2, 2, 3)), padding=0).shape == (6, 8, 3)
    assert imageio.make_grid(np.zeros((1, 3, 3, 3)), padding=1).shape == (5, 5, 3)


def test_make_grid_padding_value_and_uint8_conversion():
    images = np.array([0.0, 0.5, 1.0, 2.0, -1.0, np.nan]).reshape(6, 1, 1, 1)
    grid = imageio.make_grid(images, nrow=6, padding=1, pad_value=0.25)
    assert grid[0, 0].tolist() == [64, 64, 64]  # round(0.25 * 255)
    cells = grid[1, 1::2, 0]
    assert cells.tolist() == [0, 128, 255, 255, 0, 0]  # clipped, rounded, NaN -> 0
    u8 = np.full((2, 2, 2, 3), 7, np.uint8)
    assert (imageio.make_grid(u8, padding=0) == 7).all()


def test_make_grid_grayscale_expands_to_rgb():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 3, 1), dtype=np.uint8)
    grid = imageio.make_grid(images, nrow=2, padding=0)
    assert grid.shape == (3, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(grid[:, :3, c], images[0, ..., 0])
        np.testing.assert_array_equal(grid[:, 3:, c], images[1, ..., 0])


def test_make_grid_rejects_bad_input():
    with pytest.raises(ValueError):
        imageio.make_grid(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        imageio.make_grid(np.zeros((0, 4, 4, 3)))
    with pytest.raises(ValueError):
        imageio.make_grid(np.zeros((1, 4, 4, 2)))


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = imageio.save_png(tmp_path / "a" / "b" / "x.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    gray = rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)
    path = imageio.save_png(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), gray[..., 0])
    floats = rng.random((4, 4, 3))
    path = imageio.save_png(tmp_path / "f.png", floats)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), imageio.to_uint8(floats))


def test_save_grid_round_trip(tmp_path):
    images = np.random.default_rng(2).random((6, 4, 4, 3)).astype(np.float32)
    grid = imageio.save_grid(tmp_path / "grids" / "g.png", images, nrow=3)
    assert grid.shape == (2 * 6 + 2, 3 * 6 + 2, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "grids" / "g.png")), grid)


def test_module_does_not_shadow_stdlib_logging():
    import logging  # pylint: disable=g-import-not-at-top
    assert logging is not lj_logging
    assert hasattr(logging, "getLogger")
