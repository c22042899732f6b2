"""Metric logging, progress reporting and image grids.

Everything here depends only on numpy, pillow, absl and (lazily) jax: TensorBoard event files
are written without TensorFlow or tensorboardX.

* :class:`JsonlWriter` - one JSON object per line, flushed on every write, append mode.
* :class:`TensorBoardWriter` - TFRecord-framed ``Event`` protos (scalars and PNG images).
* :class:`MetricWriter` - fans out to the two writers (plus optional absl log lines) on
  process 0 only; a no-op on other processes.
* :class:`ProgressBar` - single updating line on a terminal, rate-limited plain lines otherwise.
* :func:`make_grid`, :func:`save_png`, :func:`save_grid`, :func:`labelled_rows` - image grids.

This module is called ``logging`` inside the package; it never shadows the standard library
(absolute imports are the default). Other modules import it as
``from latent_jax import logging as lj_logging``.

Paths are local filesystem paths (``open``/``os.makedirs``).
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import re
import shutil
import socket
import struct
import sys
import time
from typing import Any, Callable, Mapping, Sequence, TextIO

from absl import logging as absl_logging
import numpy as np

__all__ = [
    "JsonlWriter",
    "read_jsonl",
    "TensorBoardWriter",
    "MetricWriter",
    "ProgressBar",
    "crc32c",
    "masked_crc32c",
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
    * The file is opened in append mode (a resumed run continues it) and flushed after every
      line, so at most the line being written is lost on a crash. If the file ends with a
      partial line (an earlier crash mid-write), a newline is inserted first so the new lines
      still parse.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
        self.path = os.fspath(path)
        self._fsync = fsync
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        needs_newline = False
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")
        if needs_newline:
            self._file.write("\n")
            self._file.flush()

    def write(self, step: int, scalars: Mapping[str, Any], *, wall_time: float | None = None):
        if self._file is None:
            raise ValueError(f"JsonlWriter({self.path!r}) is closed")
        values = _to_floats(_device_get(scalars))
        for reserved in ("step", "time"):
            if reserved in values:
                raise ValueError(f"metric name {reserved!r} is reserved in JSONL records")
        record: dict[str, Any] = {
            "step": int(step),
            "time": float(time.time() if wall_time is None else wall_time),
        }
        record.update({k: _json_value(v) for k, v in values.items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    # Alias so the writer has the same verb as MetricWriter.
    write_scalars = write

    def flush(self):
        if self._file is not None:
            self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a file written by :class:`JsonlWriter`; non-finite strings become floats again.

    Blank lines and a trailing partial line (crash mid-write) are skipped.
    """
    records = []
    with open(os.fspath(path), encoding="utf-8") as f:
        for line in f:
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
# CRC32C (Castagnoli), reflected polynomial 0x82F63B78
# ---------------------------------------------------------------------------------------------


def _make_crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.asarray(_CRC_TABLE, dtype=np.uint32)

# Inputs at least this long use the vectorised path below.
_CRC_VECTOR_MIN = 16384
_CRC_CHUNK = 512  # bytes per chunk on the vectorised path


def _crc_update_py(state: int, data: bytes) -> int:
    """Raw register update (no pre/post inversion), one table look-up per byte."""
    table = _CRC_TABLE
    for b in data:
        state = table[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


def _make_zero_shift_tables(n_bytes: int) -> list[list[int]]:
    """Tables for the linear map 'feed n_bytes zero bytes' on the 32-bit register.

    The register update is linear over GF(2), so the map is determined by the images of the
    32 basis vectors; it is applied as four 256-entry look-ups (one per register byte).
    """
    zeros = bytes(n_bytes)
    basis = [_crc_update_py(1 << i, zeros) for i in range(32)]
    tables = []
    for byte in range(4):
        t = [0] * 256
        for v in range(1, 256):
            low = v & -v
            t[v] = t[v ^ low] ^ basis[8 * byte + low.bit_length() - 1]
        tables.append(t)
    return tables


_SHIFT_TABLES: list[list[int]] | None = None


def _crc_update_vectorised(state: int, data: bytes) -> int:
    """Same result as :func:`_crc_update_py`, computed chunk-parallel with numpy.

    The data is cut into ``K`` equal chunks whose raw CRCs (from a zero register) are computed
    simultaneously, one numpy step per byte position; the chunk CRCs are then chained with the
    precomputed 'shift by one chunk of zeros' map: ``s <- shift(s) ^ crc(chunk)``.
    A leading remainder shorter than a chunk goes through the scalar loop.
    """
    global _SHIFT_TABLES
    if _SHIFT_TABLES is None:
        _SHIFT_TABLES = _make_zero_shift_tables(_CRC_CHUNK)
    t0, t1, t2, t3 = _SHIFT_TABLES
    head = len(data) % _CRC_CHUNK
    state = _crc_update_py(state, data[:head])
    chunks = np.frombuffer(data, dtype=np.uint8, offset=head).reshape(-1, _CRC_CHUNK)
    columns = np.ascontiguousarray(chunks.T).astype(np.uint32)
    regs = np.zeros(chunks.shape[0], dtype=np.uint32)
    table = _CRC_TABLE_NP
    for col in columns:
        regs = table[(regs ^ col) & 0xFF] ^ (regs >> 8)
    for r in regs.tolist():
        state = (
            t0[state & 0xFF]
            ^ t1[(state >> 8) & 0xFF]
            ^ t2[(state >> 16) & 0xFF]
            ^ t3[state >> 24]
            ^ r
        )
    return state


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as used by the TFRecord format."""
    data = bytes(data)
    if len(data) >= _CRC_VECTOR_MIN:
        state = _crc_update_vectorised(0xFFFFFFFF, data)
    else:
        state = _crc_update_py(0xFFFFFFFF, data)
    return state ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord 'masked' CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Protobuf encoding (just the fields of Event / Summary that we write)
# ---------------------------------------------------------------------------------------------

_WIRE_VARINT, _WIRE_64BIT, _WIRE_LEN, _WIRE_32BIT = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # Negative int64 values use their 10-byte two's complement form.
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _pb_varint(field: int, value: int) -> bytes:
    return _key(field, _WIRE_VARINT) + _varint(value)


def _pb_double(field: int, value: float) -> bytes:
    return _key(field, _WIRE_64BIT) + struct.pack("<d", value)


def _pb_float(field: int, value: float) -> bytes:
    return _key(field, _WIRE_32BIT) + struct.pack("<f", value)


def _pb_bytes(field: int, value: bytes) -> bytes:
    return _key(field, _WIRE_LEN) + _varint(len(value)) + value


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           summary: bytes | None = None) -> bytes:
    """Event{wall_time=1 double, step=2 int64, file_version=3 string | summary=5 Summary}."""
    msg = _pb_double(1, wall_time) + _pb_varint(2, step)
    if file_version is not None:
        msg += _pb_bytes(3, file_version.encode("utf-8"))
    if summary is not None:
        msg += _pb_bytes(5, summary)
    return msg


def _summary_scalar(tag: str, value: float) -> bytes:
    """Summary.Value{tag=1, simple_value=2}, wrapped as Summary.value=1."""
    return _pb_bytes(1, _pb_bytes(1, tag.encode("utf-8")) + _pb_float(2, value))


def _summary_image(tag: str, height: int, width: int, colorspace: int, png: bytes) -> bytes:
    """Summary.Value{tag=1, image=4 Image{height=1, width=2, colorspace=3, encoded=4}}."""
    image = (
        _pb_varint(1, height)
        + _pb_varint(2, width)
        + _pb_varint(3, colorspace)
        + _pb_bytes(4, png)
    )
    return _pb_bytes(1, _pb_bytes(1, tag.encode("utf-8")) + _pb_bytes(4, image))


def _tfrecord(data: bytes) -> bytes:
    """uint64 length, masked CRC of the length, data, masked CRC of the data (little endian)."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


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
    """Writes TensorBoard event files (scalars and PNG images) with no TensorFlow dependency.

    The file is ``<logdir>/events.out.tfevents.<unix time>.<hostname>`` (``.<n>`` is appended
    if that name is taken); its first record is the ``file_version`` event
    ``"brain.Event:2"``. Every record is flushed to disk when it is written unless
    ``flush_secs`` > 0, in which case flushes happen at most that often (and on
    :meth:`flush` / :meth:`close`).
    """

    def __init__(self, logdir: str | os.PathLike, *, flush_secs: float = 0.0,
                 filename_suffix: str = ""):
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        now = time.time()
        base = os.path.join(
            self.logdir,
            f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}{filename_suffix}",
        )
        path, n = base, 0
        while os.path.exists(path):
            n += 1
            path = f"{base}.{n}"
        self.path = path
        self._file = open(self.path, "xb")
        self._flush_secs = float(flush_secs)
        self._last_flush = now
        self._write_event(_event(now, 0, file_version="brain.Event:2"))

    def _write_event(self, event: bytes):
        if self._file is None:
            raise ValueError(f"TensorBoardWriter({self.path!r}) is closed")
        self._file.write(_tfrecord(event))
        now = time.time()
        if self._flush_secs <= 0 or now - self._last_flush >= self._flush_secs:
            self._file.flush()
            self._last_flush = now

    def scalars(self, step: int, scalars: Mapping[str, Any], *,
                wall_time: float | None = None):
        """One event holding a ``simple_value`` (float32) per tag."""
        values = _to_floats(_device_get(scalars))
        if not values:
            return
        summary = b"".join(_summary_scalar(tag, v) for tag, v in values.items())
        self._write_event(_event(time.time() if wall_time is None else wall_time, int(step),
                                 summary=summary))

    def images(self, step: int, images: Mapping[str, Any], *,
               wall_time: float | None = None):
        """One event per tag with a PNG-encoded image (uint8 [H, W, C], C in 1/3/4).

        Float images in [0, 1] and [H, W] grayscale arrays are accepted too.
        """
        wall_time = time.time() if wall_time is None else wall_time
        for tag, array in _device_get(images).items():
            image = _as_image(array, tag)
            h, w, c = image.shape
            colorspace = {1: 1, 3: 3, 4: 4}[c]  # grayscale, RGB, RGBA
            summary = _summary_image(str(tag), h, w, colorspace, _encode_png(image))
            self._write_event(_event(wall_time, int(step), summary=summary))

    def flush(self):
        if self._file is not None:
            self._file.flush()
            self._last_flush = time.time()

    def close(self):
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

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
    """

    def __init__(self, logdir: str | os.PathLike, *, jsonl: bool = True,
                 tensorboard: bool = True, log_lines: bool = False, save_pngs: bool = True,
                 jsonl_name: str = "metrics.jsonl", process_index: int | None = None):
        if process_index is None:
            import jax  # pylint: disable=g-import-not-at-top

            process_index = jax.process_index()
        self.logdir = os.fspath(logdir)
        self.active = process_index == 0
        self._log_lines = log_lines
        self._save_pngs = save_pngs
        self._jsonl = None
        self._tb = None
        if not self.active:
            return
        os.makedirs(self.logdir, exist_ok=True)
        if jsonl:
            self._jsonl = JsonlWriter(os.path.join(self.logdir, jsonl_name))
        if tensorboard:
            self._tb = TensorBoardWriter(self.logdir)

    @property
    def image_dir(self) -> str:
        return os.path.join(self.logdir, "images")

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
                path = os.path.join(self.image_dir, f"{_safe_filename(name)}_{step:08d}.png")
                save_png(path, image)
                paths[name] = path
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

    Terminal mode (``is_tty`` true, default ``stream.isatty()``): one line redrawn with ``'\\r'``
    at most every ``refresh_secs``, truncated to the terminal width; ``close()`` ends the line.

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
        self._refresh_secs = refresh_secs
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
        self._last_width = 0
        self._closed = False

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

    def _format_bar(self) -> str:
        width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
        bar_width = max(10, min(30, width // 4))
        filled = int(bar_width * min(self.step, self.total) / self.total)
        bar = "#" * filled + "." * (bar_width - filled)
        line = f"{self.desc} [{bar}] {self._stats_text()}"
        for part in self._metric_parts():  # Whole metrics only, while they fit.
            if len(line) + 1 + len(part) > width:
                break
            line += " " + part
        return line[:width]

    # -- output ----------------------------------------------------------------------------

    def _emit_line(self, now: float):
        self._sample_rate(now)
        self.stream.write(self.format_line() + "\n")
        self.stream.flush()
        self._last_line_time = now
        self._last_line_step = self.step

    def _redraw(self, now: float):
        self._sample_rate(now)
        line = self._format_bar()
        pad = " " * max(self._last_width - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_width = len(line)
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
        if self.is_tty:
            if first or done or now - self._last_line_time >= self._refresh_secs:
                self._redraw(now)
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
        if self.is_tty and self._last_width and not self._closed:
            self.stream.write("\r" + " " * self._last_width + "\r" + text + "\n")
            self._last_width = 0
            self._redraw(self._clock())
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self):
        """Draws the final state and ends the line (terminal) or prints a last line (plain)."""
        if not self.enabled or self._closed:
            return
        now = self._clock()
        if self.is_tty:
            self._redraw(now)
            self.stream.write("\n")
            self.stream.flush()
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


def save_png(path: str | os.PathLike, array: Any) -> str:
    """Saves a [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image (uint8, or float in [0, 1]).

    Parent directories are created. Returns the path.
    """
    path = os.fspath(path)
    image = _as_image(array, path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(_encode_png(image))
    return path


def save_grid(path: str | os.PathLike, images: Any, nrow: int | None = None, padding: int = 2,
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
