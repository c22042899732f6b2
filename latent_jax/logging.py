"""Metrics and progress: a JSON-lines file, TensorBoard events (tensorboardX), a progress bar
(tqdm on a terminal, one plain line per logging interval otherwise).

Only process 0 writes (`MetricWriter(process_index=...)`); every path goes through
``etils.epath``, so a run directory may be a ``gs://`` URL. Image grids live in
:mod:`latent_jax.imageio`.

This module is called ``logging`` inside the package; it never shadows the standard library
(absolute imports are the default). Other modules import it as
``from latent_jax import logging as lj_logging``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Mapping, TextIO

from absl import logging as absl_logging
from etils import epath
import numpy as np

from latent_jax import imageio
from latent_jax import interrupt
from latent_jax import paths

__all__ = ["JsonlWriter", "read_jsonl", "drop_rows_after", "MetricWriter", "ProgressBar"]


def _host_floats(scalars: Mapping[str, Any]) -> dict[str, float]:
    """Python floats of a flat dict of numbers or size-1 (jax) arrays, fetched to the host in
    one transfer, in the caller's key order."""
    values = dict(scalars)
    if "jax" in sys.modules:
        import jax  # pylint: disable=import-outside-toplevel

        values = dict(zip(values, jax.device_get(list(values.values()))))
    out = {}
    for key, value in values.items():
        array = np.asarray(value)
        if array.size != 1 or array.dtype.kind in "OSUMm":  # bfloat16 is kind 'V'
            raise ValueError(f"metric {key!r} must be a numeric scalar, got {array.dtype} "
                             f"array of shape {array.shape}")
        out[str(key)] = float(array.reshape(()))
    return out


# Non-finite floats are written as the strings Python's float() parses back, not as null, so
# that +inf and -inf stay distinguishable and the file stays strict JSON.
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_value(x: float) -> float | str:
    return x if math.isfinite(x) else {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[
        repr(x)]


class JsonlWriter:
    """Appends ``{"step": int, "time": unix seconds, **scalars}`` lines to a JSON-lines file.

    Local files are opened in append mode (a resumed run continues them; a partial last line
    left by a crash is ended first) and flushed after every line. Object stores cannot append:
    a remote file is kept in memory and rewritten whole at most every ``flush_secs``, on
    :meth:`flush` and on :meth:`close`, so a crash loses at most that interval.
    """

    def __init__(self, path, *, flush_secs: float = 10.0):
        self.path = epath.Path(path)
        self._remote = paths.is_remote(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.read_text() if self.path.exists() else ""
        repair = "\n" if existing and not existing.endswith("\n") else ""
        if self._remote:
            self._buffer = [existing + repair]
            self._flush_secs, self._last_flush = float(flush_secs), time.time()
            self._file = True
        else:
            self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(repair)

    def write(self, step: int, scalars: Mapping[str, Any], *, wall_time: float | None = None):
        if self._file is None:
            raise ValueError(f"JsonlWriter({self.path}) is closed")
        values = _host_floats(scalars)
        if {"step", "time"} & set(values):
            raise ValueError("metric names 'step' and 'time' are reserved in JSONL records")
        record = {"step": int(step), "time": float(time.time() if wall_time is None else
                                                  wall_time)}
        record.update({k: _json_value(v) for k, v in values.items()})
        line = json.dumps(record, allow_nan=False) + "\n"
        if not self._remote:
            self._file.write(line)
            self._file.flush()
            return
        self._buffer.append(line)
        if time.time() - self._last_flush >= self._flush_secs:
            self.flush()

    def flush(self):
        if self._file is None:
            return
        if self._remote:
            self.path.write_text("".join(self._buffer))
            self._last_flush = time.time()
        else:
            self._file.flush()

    def close(self):
        if self._file is not None:
            self.flush()
            if not self._remote:
                self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path) -> list[dict[str, Any]]:
    """The records of a :class:`JsonlWriter` file, non-finite strings as floats again; blank
    lines and a partial last line (a crash mid-write) are skipped."""
    records = []
    for line in epath.Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records.append({k: _NONFINITE.get(v, v) if isinstance(v, str) else v
                        for k, v in record.items()})
    return records


def drop_rows_after(path, step: int) -> int:
    """Removes the rows of a JSONL metrics file whose step is past `step` (rows a killed run
    logged after its last checkpoint, which the resumed run logs again), so that every step has
    one row; returns how many were dropped (the file is rewritten only then)."""
    path = epath.Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            late = int(json.loads(line)["step"]) > step
        except (ValueError, KeyError, TypeError):
            late = False  # a partial last line is left for the reader to skip
        dropped += late
        if not late:
            kept.append(line + "\n")
    if dropped:
        tmp = path.parent / (path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
        absl_logging.info("dropped %d rows past step %d from %s", dropped, step, path)
    return dropped


def _event_thread_failed(args) -> bool:
    """tensorboardX's event-writing thread died on an OSError (a full or unwritable disk)."""
    return (type(args.thread).__name__ == "_EventLoggerThread"
            and isinstance(args.exc_value, OSError))


_previous_thread_excepthook = threading.excepthook


def _thread_excepthook(args):
    # One line instead of a traceback: the trainer reports the failure at its next write
    # (`MetricWriter._check_events_thread`).
    if _event_thread_failed(args):
        absl_logging.warning("the TensorBoard event writer stopped: %s", args.exc_value)
        return
    _previous_thread_excepthook(args)


threading.excepthook = _thread_excepthook


class MetricWriter:
    """Writes scalars to ``<logdir>/metrics.jsonl`` and to TensorBoard event files
    (``tensorboardX.SummaryWriter``: no TensorFlow, local or ``gs://``), and images to TensorBoard
    and ``<logdir>/images/<name>_<step>.png``. A no-op, creating nothing, unless
    ``process_index`` (default ``jax.process_index()``) is 0.

    ``purge_step``: the step a resumed run continues from; TensorBoard then drops the events an
    earlier (killed) run logged past it, so every curve has one value per step. tensorboardX
    writes from a background thread: events reach the file within ``flush_secs`` and at
    :meth:`close`. ``log_lines`` also logs ``step N: k=v ...`` through absl.
    """

    def __init__(self, logdir, *, jsonl: bool = True, tensorboard: bool = True,
                 log_lines: bool = False, save_pngs: bool = True,
                 process_index: int | None = None, purge_step: int | None = None,
                 flush_secs: int = 10):
        if process_index is None:
            import jax  # pylint: disable=import-outside-toplevel

            process_index = jax.process_index()
        self.logdir = epath.Path(logdir)
        self.image_dir = self.logdir / "images"
        self.active = process_index == 0
        self._log_lines, self._save_pngs = log_lines, save_pngs
        self._jsonl = self._tb = None
        if not self.active:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._jsonl = JsonlWriter(self.logdir / "metrics.jsonl")
        if tensorboard:
            from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

            # tensorboardX names the file by the second and the host only: a second writer in
            # the same second (a quick resume, an evaluation after training) would overwrite
            # the first one's file. The suffix (nanoseconds, fixed width) keeps the names
            # unique and in creation order, the order TensorBoard reads them in (a resumed
            # run's purge applies only to events read before it).
            self._tb = SummaryWriter(str(self.logdir), purge_step=purge_step,
                                     flush_secs=flush_secs,
                                     filename_suffix=f".{time.time_ns():020d}.{os.getpid()}")

    def _check_events_thread(self):
        """tensorboardX queues events for a background thread; once that thread died (a full
        disk) the queue fills and the next write would block for ever. Raise instead."""
        writer = getattr(self._tb, "file_writer", None) if self._tb is not None else None
        worker = getattr(getattr(writer, "event_writer", None), "_worker", None)
        if worker is None or worker.is_alive():
            return
        self._tb = None   # nothing more goes to it, not even at close()
        try:
            import shutil  # pylint: disable=import-outside-toplevel

            full = (not paths.is_remote(self.logdir)
                    and shutil.disk_usage(os.fspath(self.logdir)).free < 1 << 20)
        except OSError:
            full = False
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      ("No space left on device" if full else "its writing thread failed")
                      + f": the TensorBoard event writer for {self.logdir} stopped")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        if not self.active or not scalars:
            return
        self._check_events_thread()
        values, wall_time = _host_floats(scalars), time.time()
        if self._jsonl is not None:
            self._jsonl.write(step, values, wall_time=wall_time)
        if self._tb is not None:
            for tag, value in values.items():
                self._tb.add_scalar(tag, value, int(step), walltime=wall_time)
        if self._log_lines:
            absl_logging.info("step %d: %s", step,
                              " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def write_images(self, step: int, images: Mapping[str, Any]) -> dict[str, str]:
        """Each value is one image [H, W(, C)] or a batch [N, H, W, C] (tiled with
        :func:`imageio.make_grid`). Returns ``{name: png path}`` of the PNGs saved."""
        if not self.active or not images:
            return {}
        self._check_events_thread()
        written = {}
        for name, array in images.items():
            array = np.asarray(array)
            image = imageio.make_grid(array) if array.ndim == 4 else imageio.as_image(array)
            if self._tb is not None:
                self._tb.add_image(str(name), image, int(step), dataformats="HWC")
            if self._save_pngs:
                safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "image"
                written[name] = imageio.save_png(
                    self.image_dir / f"{safe}_{int(step):08d}.png", image)
        return written

    def flush(self):
        for writer in (self._jsonl, self._tb):
            if writer is not None:
                writer.flush()

    def close(self):
        for writer in (self._jsonl, self._tb):
            if writer is not None:
                writer.close()
        self._jsonl = self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ProgressBar:
    """Training progress: a tqdm bar on a terminal, plain lines otherwise (SLURM logs).

    ``update(step, metrics)`` reports that ``step`` steps are done (absolute) and the latest
    metrics (the first ``max_metrics`` are shown). Plain mode prints
    ``train step 120/1000 (12.0%) 3.41 steps/s ETA 04:18 loss=0.123`` on the first update, then
    on each multiple of ``every_steps`` reached (the trainer passes its logging interval;
    default a tenth of the run), on reaching ``total_steps`` and at :meth:`close`. The rate is measured from
    the first update, so the compilation before it does not count. ``enabled=False`` (e.g. on
    processes other than 0) makes every method a no-op.
    """

    def __init__(self, total_steps: int, initial_step: int = 0, desc: str = "train",
                 stream: TextIO | None = None, is_tty: bool | None = None, *,
                 every_steps: int | None = None, max_metrics: int = 4,
                 refresh_secs: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 enabled: bool = True):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.total, self.step, self.desc = int(total_steps), int(initial_step), desc
        self.stream = sys.stderr if stream is None else stream
        if is_tty is None:
            is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.is_tty, self.enabled = is_tty, enabled
        self._every = max(1, int(every_steps or self.total // 10))
        self._max_metrics, self._clock = max_metrics, clock
        self._metrics: dict[str, Any] = {}
        self._first: tuple[int, float] | None = None
        self._last_line: int | None = None
        self._closed = False
        self._tqdm = None
        if is_tty and enabled:
            import tqdm  # pylint: disable=import-outside-toplevel

            self._tqdm = tqdm.tqdm(total=self.total, initial=self.step, desc=desc,
                                   file=self.stream, dynamic_ncols=True, unit="step",
                                   mininterval=refresh_secs, leave=True)

    @property
    def rate(self) -> float | None:
        """Steps per second since the first update, or None before it can be measured."""
        if self._first is None:
            return None
        steps, secs = self.step - self._first[0], self._clock() - self._first[1]
        return steps / secs if steps > 0 and secs > 0 else None

    def _metrics_text(self) -> str:
        parts = []
        for key, value in list(self._metrics.items())[:self._max_metrics]:
            try:
                parts.append(f"{key}={float(np.asarray(value)):.4g}")
            except (TypeError, ValueError):
                parts.append(f"{key}={value}")
        return " ".join(parts)

    def format_line(self) -> str:
        """The plain-mode line for the current state."""
        import tqdm  # pylint: disable=import-outside-toplevel

        line = f"{self.desc} step {self.step}/{self.total} ({100.0 * self.step / self.total:.1f}%)"
        rate = self.rate
        if rate:
            eta = tqdm.tqdm.format_interval(max(self.total - self.step, 0) / rate)
            line += f" {rate:.3g} steps/s ETA {eta}"
        metrics = self._metrics_text()
        return f"{line} {metrics}" if metrics else line

    def _emit(self):
        self.stream.write(self.format_line() + "\n")
        self.stream.flush()
        self._last_line = self.step

    def update(self, step: int, metrics: Mapping[str, Any] | None = None):
        interrupt.check()   # a long loop with a bar is a place a signal is acted on
        if not self.enabled or self._closed:
            return
        self.step = int(step)
        self._metrics.update(metrics or {})
        first = self._first is None
        if first:
            self._first = (self.step, self._clock())
        if self._tqdm is not None:
            if metrics:
                self._tqdm.set_postfix_str(self._metrics_text(), refresh=False)
            self._tqdm.update(self.step - self._tqdm.n)
        elif (first or self.step >= self.total
              or self.step // self._every > self._last_line // self._every) \
                and self._last_line != self.step:
            self._emit()

    def write(self, text: str):
        """Prints a message without garbling the bar (terminal mode redraws it after)."""
        if not self.enabled:
            return
        if self._tqdm is not None and not self._closed:
            self._tqdm.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self):
        """Ends the bar (terminal) or prints the last state if not printed yet (plain)."""
        if not self.enabled or self._closed:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._first is not None and self._last_line != self.step:
            self._emit()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
