"""Metric logging, progress reporting and image grids.

TensorBoard event files are written by tensorboardX (no TensorFlow); every path goes through
``etils.epath``, so a run directory may be a ``gs://`` URL.

* :class:`JsonlWriter` - one JSON object per line (append mode locally, whole-object rewrites
  on object stores).
* :class:`TensorBoardWriter` - scalars and images through ``tensorboardX.SummaryWriter``.
* :class:`MetricWriter` - fans out to the two writers (plus optional absl log lines) on
  process 0 only; a no-op on other processes.
* :class:`ProgressBar` - single updating line on a terminal, rate-limited plain lines otherwise.
* :func:`make_grid`, :func:`save_png`, :func:`save_grid`, :func:`labelled_rows` - image grids.

This module is called ``logging`` inside the package; it never shadows the standard library
(absolute imports are the default). Other modules import it as
``from latent_jax import logging as lj_logging``.

Paths are ``etils.epath`` paths or strings (local or ``gs://``).
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import re
import sys
import time
from typing import Any, Callable, Mapping, Sequence, TextIO

from absl import logging as absl_logging
from etils import epath
import numpy as np

from latent_jax import paths

__all__ = [
    "JsonlWriter",
    "read_jsonl",
    "TensorBoardWriter",
    "MetricWriter",
    "ProgressBar",
    "drop_rows_after",
    "to_uint8",
    "make_grid",
    "save_png",
    "save_grid",
    "labelled_rows",
    "format_duration",
]


# ---------------------------------------------------------------------------------------------
# Scalar conversion
# ---------------------------------------------------------------------------------------------


def _to_float(value: Any, key: str = "value") -> float:
    """Converts a Python / numpy / jax scalar (or a size-1 array) to a Python float."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    arr = np.asarray(value)  # Pulls jax arrays to the host.
    if arr.size != 1:
        raise ValueError(f"metric {key!r} must be a scalar, got an array of shape {arr.shape}")
    if arr.dtype.kind in "OSUMm":  # object, strings, datetimes
        raise TypeError(f"metric {key!r} must be numeric, got dtype {arr.dtype}")
    return float(arr.reshape(()))  # also covers bfloat16 and other ml_dtypes


def _to_floats(scalars: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): _to_float(v, str(k)) for k, v in scalars.items()}


def _device_get(values: Mapping[str, Any]) -> dict[str, Any]:
    """Fetches the jax arrays of a flat dict to the host in one transfer, keeping key order.

    (``jax.device_get`` on a dict returns its keys sorted; the caller's order is kept so logs
    list metrics as the method produced them.) Without jax imported this is a plain copy.
    """
    values = dict(values)
    if "jax" not in sys.modules:
        return values
    import jax  # pylint: disable=g-import-not-at-top

    fetched = jax.device_get(list(values.values()))
    return dict(zip(values.keys(), fetched))


# ---------------------------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------------------------

# Non-finite floats are written as these strings (the spellings Python's float() parses back),
# not as null, so that +inf and -inf stay distinguishable; the file stays strict JSON.
_NONFINITE_TO_STR = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_STR_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_value(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return _NONFINITE_TO_STR[repr(x)]


class JsonlWriter:
    """Appends ``{"step": int, "time": float, **scalars}`` lines to a JSON-lines file.

    * Values are converted to Python floats (numpy / jax scalars and size-1 arrays accepted).
    * NaN, +Inf and -Inf are written as the JSON strings ``"NaN"``, ``"Infinity"`` and
      ``"-Infinity"`` so every line is strict JSON (``json.loads`` with any parser);
      :func:`read_jsonl` turns them back into floats.
    * ``time`` is the Unix wall time (seconds) of the write.
    * Local files are opened in append mode (a resumed run continues them) and flushed after
      every line, so at most the line being written is lost on a crash. If the file ends with a
      partial line (an earlier crash mid-write), a newline is inserted first.
    * Remote files (``gs://...``, through ``etils.epath``; object stores cannot append) are kept
      in memory and rewritten whole at most every ``flush_secs`` (default 10 s), on
      :meth:`flush` and on :meth:`close`; a crash loses at most that interval.
    """

    def __init__(self, path, *, fsync: bool = False, flush_secs: float | None = None):
        self.path = epath.Path(path)
        self._fsync = fsync
        self._remote = paths.is_remote(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._remote:
            existing = self.path.read_text() if self.path.exists() else ""
            if existing and not existing.endswith("\n"):
                existing += "\n"     # a partial last line from an earlier crash
            self._buffer = [existing]
            self._flush_secs = 10.0 if flush_secs is None else float(flush_secs)
            self._last_flush = time.time()
            self._file = True   # open
            return
        needs_newline = False
        if self.path.exists() and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")
        if needs_newline:
            self._file.write("\n")
            self._file.flush()

    def write(self, step: int, scalars: Mapping[str, Any], *, wall_time: float | None = None):
        if self._file is None:
            raise ValueError(f"JsonlWriter({os.fspath(self.path)!r}) is closed")
        values = _to_floats(_device_get(scalars))
        for reserved in ("step", "time"):
            if reserved in values:
                raise ValueError(f"metric name {reserved!r} is reserved in JSONL records")
        record: dict[str, Any] = {
            "step": int(step),
            "time": float(time.time() if wall_time is None else wall_time),
        }
        record.update({k: _json_value(v) for k, v in values.items()})
        line = json.dumps(record, allow_nan=False) + "\n"
        if self._remote:
            self._buffer.append(line)
            if time.time() - self._last_flush >= self._flush_secs:
                self.flush()
            return
        self._file.write(line)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    # Alias so the writer has the same verb as MetricWriter.
    write_scalars = write

    def flush(self):
        if self._file is None:
            return
        if self._remote:
            self.path.write_text("".join(self._buffer))
            self._last_flush = time.time()
        else:
            self._file.flush()

    def close(self):
        if self._file is None:
            return
        self.flush()
        if not self._remote:
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path) -> list[dict[str, Any]]:
    """Reads a file written by :class:`JsonlWriter`; non-finite strings become floats again.

    Blank lines and a trailing partial line (crash mid-write) are skipped.
    """
    records = []
    for line in epath.Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        for k, v in record.items():
            if isinstance(v, str) and v in _STR_TO_NONFINITE:
                record[k] = _STR_TO_NONFINITE[v]
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# TensorBoard (tensorboardX)
# ---------------------------------------------------------------------------------------------


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image  # pylint: disable=g-import-not-at-top

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _as_image(array: Any, name: str = "image") -> np.ndarray:
    """uint8 [H, W, C] with C in {1, 3, 4}; [H, W] becomes [H, W, 1]; floats are in [0, 1]."""
    image = to_uint8(array)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"image {name!r} must be [H, W] or [H, W, C] with C in (1, 3, 4), "
            f"got shape {image.shape}"
        )
    return image


class TensorBoardWriter:
    """TensorBoard event files (scalars and images) through ``tensorboardX.SummaryWriter``,
    which needs no TensorFlow and writes to local and ``gs://`` log directories.

    ``purge_step``: on a resumed run, the step it resumes from; TensorBoard then drops the
    events that an earlier (killed) run logged past it, so every curve has one value per step.
    Events are written by tensorboardX's background thread: they reach the file within
    ``flush_secs`` and at :meth:`close` (tensorboardX's flush does not wait for its queue).
    """

    def __init__(self, logdir, *, flush_secs: float = 10.0, purge_step: int | None = None,
                 filename_suffix: str = ""):
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

        self.logdir = os.fspath(logdir)
        self._writer = SummaryWriter(self.logdir, purge_step=purge_step,
                                     flush_secs=max(1, int(round(flush_secs))),
                                     filename_suffix=filename_suffix)
        self.path = self._writer.file_writer.event_writer._ev_writer._file_name  # noqa: SLF001

    def scalars(self, step: int, scalars: Mapping[str, Any], *,
                wall_time: float | None = None):
        for tag, value in _to_floats(_device_get(scalars)).items():
            self._writer.add_scalar(tag, value, int(step), walltime=wall_time)

    def images(self, step: int, images: Mapping[str, Any], *,
               wall_time: float | None = None):
        """One image per tag (uint8 [H, W, C], C in 1/3/4; float images in [0, 1] and [H, W]
        arrays are accepted too)."""
        for tag, array in _device_get(images).items():
            self._writer.add_image(str(tag), _as_image(array, tag), int(step),
                                   walltime=wall_time, dataformats="HWC")

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Fan-out writer
# ---------------------------------------------------------------------------------------------


def _format_value(value: float) -> str:
    return f"{value:.4g}"


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"


class MetricWriter:
    """Writes metrics to ``<logdir>/metrics.jsonl`` and TensorBoard, on process 0 only.

    Args:
      logdir: run directory (created on process 0).
      jsonl: write ``<logdir>/<jsonl_name>`` with :class:`JsonlWriter`.
      tensorboard: write event files into ``<logdir>`` with :class:`TensorBoardWriter`.
      log_lines: also emit ``step N: k=v ...`` through ``absl.logging.info``.
      save_pngs: :meth:`write_images` also saves ``<logdir>/images/<name>_<step>.png``.
      process_index: defaults to ``jax.process_index()``; every method is a no-op (and
        nothing is created on disk) unless it is 0.
      purge_step: the step a resumed run continues from (see :class:`TensorBoardWriter`).
    """

    def __init__(self, logdir, *, jsonl: bool = True,
                 tensorboard: bool = True, log_lines: bool = False, save_pngs: bool = True,
                 jsonl_name: str = "metrics.jsonl", process_index: int | None = None,
                 purge_step: int | None = None):
        if process_index is None:
            import jax  # pylint: disable=g-import-not-at-top

            process_index = jax.process_index()
        self.logdir = epath.Path(logdir)
        self.active = process_index == 0
        self._log_lines = log_lines
        self._save_pngs = save_pngs
        self._jsonl = None
        self._tb = None
        if not self.active:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._jsonl = JsonlWriter(self.logdir / jsonl_name)
        if tensorboard:
            self._tb = TensorBoardWriter(self.logdir, purge_step=purge_step)

    @property
    def image_dir(self) -> str:
        return self.logdir / "images"

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        if not self.active or not scalars:
            return
        step = int(step)
        values = _to_floats(_device_get(scalars))
        wall_time = time.time()
        if self._jsonl is not None:
            self._jsonl.write(step, values, wall_time=wall_time)
        if self._tb is not None:
            self._tb.scalars(step, values, wall_time=wall_time)
        if self._log_lines:
            text = " ".join(f"{k}={_format_value(v)}" for k, v in values.items())
            absl_logging.info("step %d: %s", step, text)

    def write_images(self, step: int, images: Mapping[str, Any]) -> dict[str, str]:
        """Writes images: each value is one image [H, W, C] or a batch [N, H, W, C].

        Batches are tiled with :func:`make_grid`. Returns ``{name: png path}`` of the PNGs
        saved (empty when ``save_pngs`` is off or on processes other than 0).
        """
        if not self.active or not images:
            return {}
        step = int(step)
        prepared = {}
        for name, array in _device_get(images).items():
            array = np.asarray(array)
            prepared[name] = make_grid(array) if array.ndim == 4 else _as_image(array, name)
        if self._tb is not None:
            self._tb.images(step, prepared)
        paths = {}
        if self._save_pngs:
            for name, image in prepared.items():
                path = self.image_dir / f"{_safe_filename(name)}_{step:08d}.png"
                paths[name] = save_png(path, image)
        return paths

    def flush(self):
        for writer in (self._jsonl, self._tb):
            if writer is not None:
                writer.flush()

    def close(self):
        for writer in (self._jsonl, self._tb):
            if writer is not None:
                writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Progress bar
# ---------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``45s``, ``4m18s``, ``2h05m``, ``3d04h``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    if rate >= 1:
        return f"{rate:.2f}"
    return f"{rate:.3g}"


class ProgressBar:
    """Training progress: an updating bar on a terminal, plain lines otherwise.

    ``update(step, metrics)`` reports that ``step`` steps are done (absolute step, not an
    increment) and optionally the latest metrics; the bar shows the first ``max_metrics`` of
    the most recent values of every metric key seen (values are converted lazily, only when a
    line is drawn, so passing device arrays every step does not force a device sync each step).

    Rate: the time from creating the bar to the first ``update`` is excluded from steps/s and
    the ETA, because that interval usually contains the jit compilation. Afterwards the rate is
    an exponential moving average (weight ``smoothing`` for the newest interval) of
    steps / seconds between drawn lines; ``smoothing=0`` uses the plain average since the first
    update. Until two updates are seen the rate and ETA are omitted.

    Terminal mode (``is_tty`` true, default ``stream.isatty()``): a ``tqdm`` bar (redrawn at most
    every ``refresh_secs``, fitted to the terminal width, the latest metrics as its postfix);
    ``write`` prints above it.

    Plain mode: ``train step 120/1000 (12.0%) 3.41 steps/s ETA 4m18s loss=0.123`` lines, one on
    the first update, then whenever ``log_every_secs`` seconds have passed or another
    ``log_every_percent`` percent boundary was crossed since the last line, whichever comes
    first (``None`` disables either criterion), and on reaching ``total_steps`` /
    ``close()``. So at most about ``elapsed / log_every_secs + 100 / log_every_percent`` lines.

    ``clock`` (default ``time.monotonic``) can be replaced for tests. ``enabled=False`` makes
    every method a no-op (e.g. ``enabled=jax.process_index() == 0``).
    """

    def __init__(self, total_steps: int, initial_step: int = 0, desc: str = "train",
                 stream: TextIO | None = None, is_tty: bool | None = None, *,
                 log_every_secs: float | None = 60.0, log_every_percent: float | None = 10.0,
                 refresh_secs: float = 0.1, smoothing: float = 0.3, max_metrics: int = 4,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
        self.total = int(total_steps)
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        if is_tty is None:
            try:
                is_tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                is_tty = False
        self.is_tty = is_tty
        self.enabled = enabled
        self._log_every_secs = log_every_secs
        self._log_every_percent = log_every_percent
        self._smoothing = smoothing
        self._max_metrics = max_metrics
        self._clock = clock

        self.step = int(initial_step)
        self._start_time = clock()
        self._metrics: dict[str, Any] = {}
        # Rate state: reference point of the first update, last sampled point, EMA.
        self._first: tuple[int, float] | None = None
        self._sample: tuple[int, float] | None = None
        self._ema_steps = 0.0
        self._ema_secs = 0.0
        self._rate: float | None = None
        # Output state.
        self._last_line_time = self._start_time
        self._last_line_step: int | None = None
        self._closed = False
        self._tqdm = None
        if self.is_tty and self.enabled:
            import tqdm  # pylint: disable=g-import-not-at-top

            self._tqdm = tqdm.tqdm(total=self.total, initial=self.step, desc=desc,
                                   file=self.stream, dynamic_ncols=True, unit="step",
                                   mininterval=refresh_secs, smoothing=smoothing, leave=True)

    # -- rate ------------------------------------------------------------------------------

    def _sample_rate(self, now: float):
        """Folds the interval since the previous sample into the rate estimate."""
        if self._first is None:  # First update: start measuring from here.
            self._first = self._sample = (self.step, now)
            return
        last_step, last_time = self._sample
        d_steps, d_secs = self.step - last_step, now - last_time
        if d_secs <= 0 or d_steps < 0:
            return
        self._sample = (self.step, now)
        if self._smoothing == 0:
            first_step, first_time = self._first
            total_secs = now - first_time
            if total_secs > 0:
                self._rate = (self.step - first_step) / total_secs
            return
        if self._rate is None:
            self._ema_steps, self._ema_secs = float(d_steps), d_secs
        else:
            a = self._smoothing
            self._ema_steps = a * d_steps + (1 - a) * self._ema_steps
            self._ema_secs = a * d_secs + (1 - a) * self._ema_secs
        self._rate = self._ema_steps / self._ema_secs

    @property
    def rate(self) -> float | None:
        """Estimated steps per second, or None before it can be measured."""
        return self._rate

    @property
    def eta_secs(self) -> float | None:
        if not self._rate:
            return None
        return max(self.total - self.step, 0) / self._rate

    # -- formatting ------------------------------------------------------------------------

    def _metric_parts(self) -> list[str]:
        parts = []
        for key, value in list(self._metrics.items())[: self._max_metrics]:
            try:
                parts.append(f"{key}={_format_value(_to_float(value, key))}")
            except (TypeError, ValueError):
                parts.append(f"{key}={value}")
        return parts

    def _metrics_text(self) -> str:
        return " ".join(self._metric_parts())

    def _stats_text(self) -> str:
        pct = 100.0 * self.step / self.total
        text = f"{self.step}/{self.total} ({pct:.1f}%)"
        if self._rate is not None:
            text += f" {_format_rate(self._rate)} steps/s"
            eta = self.eta_secs
            if eta is not None:
                text += f" ETA {format_duration(eta)}"
        return text

    def format_line(self) -> str:
        """The plain-mode line for the current state."""
        line = f"{self.desc} step {self._stats_text()}"
        metrics = self._metrics_text()
        return f"{line} {metrics}" if metrics else line

    # -- output ----------------------------------------------------------------------------

    def _emit_line(self, now: float):
        self._sample_rate(now)
        self.stream.write(self.format_line() + "\n")
        self.stream.flush()
        self._last_line_time = now
        self._last_line_step = self.step

    def _percent_boundary_crossed(self) -> bool:
        k = self._log_every_percent
        if not k or self._last_line_step is None:
            return False
        before = 100.0 * self._last_line_step / self.total
        after = 100.0 * self.step / self.total
        return math.floor(after / k) > math.floor(before / k)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None):
        """Reports ``step`` (absolute) steps done and optionally the latest metrics."""
        if not self.enabled or self._closed:
            return
        self.step = int(step)
        if metrics:
            self._metrics.update(metrics)
        now = self._clock()
        first = self._first is None
        done = self.step >= self.total
        if self._tqdm is not None:
            self._sample_rate(now)
            if metrics:
                self._tqdm.set_postfix_str(self._metrics_text(), refresh=False)
            self._tqdm.update(self.step - self._tqdm.n)
            return
        due = (
            first
            or done
            or (self._log_every_secs is not None
                and now - self._last_line_time >= self._log_every_secs)
            or self._percent_boundary_crossed()
        )
        if due and self._last_line_step != self.step:
            self._emit_line(now)
        elif first:
            self._sample_rate(now)

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
        """Draws the final state and ends the line (terminal) or prints a last line (plain)."""
        if not self.enabled or self._closed:
            return
        now = self._clock()
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._last_line_step != self.step:
            self._emit_line(now)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Image grids
# ---------------------------------------------------------------------------------------------


def to_uint8(images: Any) -> np.ndarray:
    """uint8 arrays pass through; anything else is read as [0, 1] floats, clipped, rounded.

    NaN maps to 0.
    """
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    array = np.nan_to_num(np.asarray(array, dtype=np.float32), nan=0.0)
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_grid(images: Any, nrow: int | None = None, padding: int = 2,
              pad_value: float | Sequence[float] = 1.0) -> np.ndarray:
    """Tiles ``images`` [N, H, W, C] into a uint8 [H', W', 3] grid.

    Args:
      images: float in [0, 1] or uint8, C in {1, 3}; grayscale is repeated to RGB.
      nrow: images per grid row (as in torchvision), default ``ceil(sqrt(N))``. The grid has
        ``ceil(N / nrow)`` rows, filled in row-major order; unused cells show ``pad_value``.
      padding: pixels between images and around the border:
        ``H' = rows * (H + padding) + padding``, ``W' = nrow * (W + padding) + padding``.
      pad_value: padding colour in [0, 1], a scalar or an RGB triple.
    """
    array = to_uint8(images)
    if array.ndim != 4:
        raise ValueError(f"make_grid expects [N, H, W, C] images, got shape {array.shape}")
    n, h, w, c = array.shape
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    if c == 1:
        array = np.repeat(array, 3, axis=-1)
    elif c != 3:
        raise ValueError(f"make_grid expects 1 or 3 channels, got {c}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ncol = int(nrow) if nrow else math.ceil(math.sqrt(n))
    if ncol <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    ncol = min(ncol, n)
    rows = math.ceil(n / ncol)
    fill = to_uint8(np.broadcast_to(np.asarray(pad_value, dtype=np.float32), (3,)))
    grid = np.empty((rows * (h + padding) + padding, ncol * (w + padding) + padding, 3),
                    dtype=np.uint8)
    grid[...] = fill
    for i in range(n):
        r, col = divmod(i, ncol)
        top = padding + r * (h + padding)
        left = padding + col * (w + padding)
        grid[top:top + h, left:left + w] = array[i]
    return grid


def save_png(path, array: Any) -> str:
    """Saves a [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image (uint8, or float in [0, 1]).

    Parent directories are created; `path` may be local or remote (etils.epath). Returns the
    path as a string.
    """
    path = epath.Path(path)
    image = _as_image(array, os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode_png(image))
    return os.fspath(path)


def save_grid(path, images: Any, nrow: int | None = None, padding: int = 2,
              pad_value: float | Sequence[float] = 1.0) -> np.ndarray:
    """:func:`make_grid` then :func:`save_png`; returns the grid."""
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    save_png(path, grid)
    return grid


def labelled_rows(rows: Sequence[Any]) -> np.ndarray:
    """Stacks rows of images into one [R * n, H, W, C] batch in row-major order.

    ``rows`` is e.g. ``[inputs, reconstructions, edits_plus, edits_minus]``, each [n, H, W, C];
    ``make_grid(labelled_rows(rows), nrow=n)`` then shows one row per entry, in the given
    order, with column j holding the j-th example of every row. All rows need the same
    n, H and W. Grayscale rows are expanded to RGB when mixed with RGB rows, and rows are
    converted to uint8 when their dtypes differ (float rows stay float otherwise).
    """
    if not rows:
        raise ValueError("labelled_rows needs at least one row")
    arrays = [np.asarray(r) for r in rows]
    for i, a in enumerate(arrays):
        if a.ndim != 4:
            raise ValueError(f"row {i} must be [n, H, W, C], got shape {a.shape}")
        if a.shape[:3] != arrays[0].shape[:3]:
            raise ValueError(
                f"row {i} has shape {a.shape}, expected [n, H, W] = {arrays[0].shape[:3]} "
                "like row 0"
            )
    channels = {a.shape[-1] for a in arrays}
    if len(channels) > 1:
        if channels != {1, 3}:
            raise ValueError(f"rows mix incompatible channel counts {sorted(channels)}")
        arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    if len({a.dtype for a in arrays}) > 1:
        arrays = [to_uint8(a) for a in arrays]
    return np.concatenate(arrays, axis=0)


def drop_rows_after(path, step: int) -> int:
    """Removes the rows of a JSONL metrics file whose step is past `step` (rows a killed run
    logged after its last checkpoint, which the resumed run logs again), so that every step has
    one row. Rewrites the file only when there is something to drop; returns how many rows
    were dropped. Works on any `etils.epath` path."""
    from etils import epath

    path = epath.Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept, dropped = [], 0
    for line in lines:
        try:
            row_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            kept.append(line)  # a partial last line is left for the reader to skip
            continue
        if row_step > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.parent / (path.name + ".tmp")
        tmp.write_text("".join(l + "\n" for l in kept))
        tmp.replace(path)
        absl_logging.info("dropped %d rows past step %d from %s", dropped, step, path)
    return dropped
