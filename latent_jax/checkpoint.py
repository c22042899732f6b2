"""Orbax checkpoints of a training run: every player's state, the step, the RNG, the data
iterator position and the config.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. Saves are asynchronous (the train
loop goes on while the previous save is written); `close()` waits for them. The trainer never
saves a state with a non-finite leaf.

Restoring takes the newest checkpoint that restores (`restore_newest`): one that does not (a
truncated or zeroed array file, a lost manifest or item, garbage in its data-iterator JSON, an
empty step folder) is skipped with a warning that says why, and moved aside to
`<workdir>/checkpoints.unreadable/<step>-<unix time>` (kept, never deleted; Orbax would
otherwise overwrite or garbage-collect it). When none restores, nothing is moved and the run
stops with `NoRestorableCheckpointError` instead of starting over. Before the state is read, the checkpoint's own
config is handed to a check (`check_config`), so a checkpoint of another config is refused as
such rather than with an Orbax shape message.

With several processes (`latent_jax.multihost`) every process writes its part of a save, but
each reads a checkpoint on its own (`Checkpointer(reader=True)`: no barrier that a failed read
on one process would leave the others waiting at), and `restore_newest(agree=True)` makes them
agree: they try the steps of process 0's listing, newest first, and take the first step that
restored on every process; only then does process 0 move the unreadable ones aside.

Every path goes through `etils.epath`, so the workdir may be a `gs://` URL.
"""

from __future__ import annotations

import json
import os
import logging as logging_std
import sys
import time
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from latent_jax import multihost
from latent_jax.errors import UserError


class NoRestorableCheckpointError(UserError):
    """Checkpoints exist but none of them restores."""


class _AbandonedReads(logging_std.Filter):
    """Drops asyncio's "exception was never retrieved" reports of the reads that Orbax leaves
    behind when a checkpoint does not restore: `restore_newest` has already reported that
    checkpoint in one line, and each abandoned read would add a traceback at exit."""

    def filter(self, record):
        if "never retrieved" not in record.getMessage():
            return True
        exc = record.exc_info[1] if record.exc_info else None
        text = f"{record.getMessage()} {exc!r} {record.__dict__.get('future', '')}"
        return not any(s in text for s in ("orbax", "OCDBT", "TensorStore", "tensorstore"))


logging_std.getLogger("asyncio").addFilter(_AbandonedReads())


def _is_abandoned_read_callback(exc_type, exc, tb) -> bool:
    """TensorStore's completion callback of a read or write that Orbax abandoned (a checkpoint
    that did not restore, a save that failed): it posts to Orbax's event loop, closed by then,
    and the RuntimeError is printed with a traceback (dozens per checkpoint)."""
    if exc_type is not RuntimeError or "Event loop is closed" not in str(exc):
        return False
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return "call_soon_threadsafe" in frames


_previous_excepthook = sys.excepthook


def _excepthook(exc_type, exc, tb):
    if _is_abandoned_read_callback(exc_type, exc, tb):
        return
    _previous_excepthook(exc_type, exc, tb)


sys.excepthook = _excepthook
_previous_unraisablehook = sys.unraisablehook


def _is_abandoned_orbax_coroutine(unraisable) -> bool:
    """One of Orbax's read coroutines (e.g. `_read_array_index_and_device_put`) of a checkpoint
    that did not restore, closed by the garbage collector with its read error pending: Python
    prints "Exception ignored in: <coroutine ...>" and the traceback, after `restore_newest`
    has reported that checkpoint in one line."""
    code = getattr(unraisable.object, "cr_code", None)
    return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _unraisablehook(unraisable):
    # TensorStore reports a failed callback as "unraisable" (without an object, so Python
    # prints the bare traceback).
    if _is_abandoned_read_callback(unraisable.exc_type, unraisable.exc_value,
                                   unraisable.exc_traceback):
        return
    if _is_abandoned_orbax_coroutine(unraisable):
        return
    _previous_unraisablehook(unraisable)


sys.unraisablehook = _unraisablehook


class Checkpointer:
    def __init__(self, directory, *, max_to_keep: int = 3, asynchronous: bool = True,
                 create: bool = True, reader: bool = False):
        """`reader`: a manager for reading only, of this process alone (with several processes,
        Orbax's own barriers would otherwise tie every read to every process)."""
        self.directory = epath.Path(directory)
        if reader:
            me = jax.process_index()
            options = ocp.CheckpointManagerOptions(
                create=False, save_interval_steps=0, max_to_keep=None,
                enable_async_checkpointing=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=me, active_processes={me},
                    barrier_sync_key_prefix=f"latent_jax_reader_{me}")
                if jax.process_count() > 1 else ocp.options.MultiprocessingOptions())
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=create,
                enable_async_checkpointing=asynchronous,
            )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "config"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None, config_json: str,
             force: bool = False) -> bool:
        """Saves asynchronously; returns whether a save was started."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            config=ocp.args.JsonSave(json.loads(config_json)),
        )
        return self._manager.save(step, args=args, force=force)

    def restore(self, target: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores `state` onto the structure, dtypes and shardings of `target` (arrays or
        `jax.ShapeDtypeStruct`s with shardings, e.g. from `jax.eval_shape`)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            data=ocp.args.JsonRestore(),
        ))
        data = restored["data"]
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"the data-iterator item is {type(data).__name__}, not a dict")
        return step, restored["state"], dict(data or {})

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        restored = self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))
        config = restored["config"]
        if not isinstance(config, dict):
            raise ValueError(f"the config item is {type(config).__name__}, not a dict")
        return dict(config)

    def restore_newest(self, target: Any,
                       check_config: Callable[[dict, int], None] | None = None,
                       check_restored: Callable[[int, Any, dict], None] | None = None,
                       move_unreadable: bool = True, agree: bool = False):
        """(step, state, data_state) of the newest checkpoint that restores, or None when the
        directory holds none.

        `check_config(saved_config, step)` may raise to refuse a checkpoint of another config;
        that error propagates (an older checkpoint of the same run has the same config).
        `check_restored(step, state, data_state)` may raise to declare a restored checkpoint
        unusable (e.g. a data-iterator state the iterator rejects). Unreadable checkpoints newer
        than the one restored are skipped with a warning and, if `move_unreadable` (process 0),
        moved aside so that the run can save those steps again. When no checkpoint restores at
        all, nothing is moved and `NoRestorableCheckpointError` says why: that is more likely
        a code or config change than corruption of every step, and starting over would
        discard the run.

        With `agree` every process of the job calls this together: the steps are process 0's
        listing, a step counts as restorable only if it restored on every process (the reason
        names the process where it did not), and every process returns the same step."""
        def outcome(tag, error):
            if not agree:
                return error
            errors = multihost.gather(f"restore-{tag}", error)
            bad = [(p, e) for p, e in enumerate(errors) if e is not None]
            if not bad:
                return None
            p, e = bad[0]
            return e if len(errors) == 1 else f"{e} on process {p}"

        steps = self.all_steps()
        if agree:
            steps = multihost.broadcast("restore-steps", steps)
        failures = []
        for step in reversed(steps):
            saved, error = None, None
            try:
                saved = self.restore_config(step)
            except Exception as e:  # noqa: BLE001 - any failure to read means "unreadable"
                error = f"its config does not read ({_short(e)})"
            error = outcome(f"{step}-config", error)
            if error is not None:
                failures.append((step, error))
                continue
            if check_config is not None:
                check_config(saved, step)
            found, error = None, None
            try:
                found = self.restore(target, step)
                if check_restored is not None:
                    check_restored(*found)
            except Exception as e:  # noqa: BLE001
                error = f"it does not restore ({_short(e)})"
            error = outcome(f"{step}-state", error)
            if error is not None:
                failures.append((step, error))
                continue
            for bad, why in failures:
                self._skip(bad, why, move_unreadable)
            if failures and agree:
                multihost.barrier("restore-moved-aside")   # then every process lists anew
                self._manager.reload()
            return found
        if failures:
            reasons = "; ".join(f"step {s}: {why}" for s, why in failures)
            raise NoRestorableCheckpointError(
                f"--workdir: none of the {len(failures)} checkpoints in {self.directory} "
                f"restores ({reasons}). If the code or the config changed, run the version that "
                f"wrote them; to start over, move {self.directory} away")
        return None

    def _skip(self, step: int, why: str, move: bool):
        where = ""
        if move:
            aside = self.directory.parent / f"{self.directory.name}.unreadable"
            dest = aside / f"{step}-{int(time.time())}"
            try:
                aside.mkdir(parents=True, exist_ok=True)
                (self.directory / str(step)).rename(dest)
                where = f"; moved aside to {dest} (kept, not deleted)"
            except OSError as e:
                where = f"; could not move it aside ({e}), left in place"
            self._manager.reload()
        logging.warning("skipping checkpoint %d in %s: %s%s", step, self.directory, why, where)

    def reached_preemption(self, step: int) -> bool:
        """True on every host once a preemption notice arrived (multi-host TPU/GPU runs)."""
        return self._manager.reached_preemption(step)

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()


def has_checkpoint(directory) -> bool:
    """Whether `directory` holds at least one step folder (cheap; creates nothing)."""
    d = epath.Path(directory)
    if not d.exists():
        return False
    return any(p.name.isdigit() for p in d.iterdir())


def _short(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[:limit] + "..."
