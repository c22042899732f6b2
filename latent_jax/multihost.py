"""Several JAX processes in one job (TPU pod slices, multi-node GPU clusters): start-up,
agreement between the processes, and failure.

What runs where:
- Collective work runs on every process: the train step, checkpoint saves (Orbax writes
  each process's part), and the finiteness checks of the state.
- Reading a checkpoint is each process's own (a read that fails on one process must not leave
  the others waiting in a collective); which step every process restores is then agreed here
  (`all_true`, `gather`) before anything is moved aside.
- Host work runs on process 0 alone, on its local devices: evaluations, the judge, image grids,
  reports and the post-hoc modes (`on_process_0`); the other processes wait for its result
  through the coordination service's key-value store rather than in a device collective.

Agreement goes through that key-value store (`jax.distributed`'s client), so it needs no
compiled program and every wait has a deadline. With one process every function here is the
identity (no store, no thread).

Failure: `watch_for_failures()` starts a thread in every process that polls the store. A process
that fails publishes its one-line message (`report_failure`) before it exits; every other
process sees it within a second, prints it (so the message reaches process 0's log, whichever
process failed) and exits with status 1, even while its main thread waits in a collective that
would never complete. A process that loses the coordinator (process 0 died) exits likewise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, Callable

from absl import logging
import jax

_PREFIX = "latent_jax"
_FAILED = f"{_PREFIX}/failed/"
_POLL_SECONDS = 0.5
# How long a process waits for the others at an agreement point before it gives up: long
# enough for a slow restore from a remote bucket; a failed process ends the wait sooner.
AGREEMENT_TIMEOUT_SECONDS = 1800

_initialized_here = False
_sequence = 0            # agreement points met so far (the same on every process)
_failing = False
_exiting = False         # the interpreter is exiting: JAX shuts the client down
_alone = False           # inside `on_process_0`'s work: no agreement point may be met there


def initialize(config) -> bool:
    """Starts `jax.distributed` when `config.parallel.distributed` asks for it, at most once per
    process (a second call, e.g. a second workdir in one process, is a no-op); never otherwise.
    Returns whether this process is part of a distributed job."""
    global _initialized_here
    par = config.parallel
    if not bool(par.get("distributed", False)):
        return is_distributed()
    if is_distributed():
        return True
    kwargs = {}
    if par.get("coordinator_address"):
        kwargs = dict(coordinator_address=str(par.coordinator_address),
                      num_processes=int(par.num_processes), process_id=int(par.process_id))
    local = par.get("local_device_ids", None)
    if local is not None and tuple(local):
        kwargs["local_device_ids"] = [int(i) for i in local]
    jax.distributed.initialize(**kwargs)
    _initialized_here = True
    return True


def is_distributed() -> bool:
    """Whether `jax.distributed` was initialised in this process."""
    return _client() is not None


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def _client():
    from jax._src import distributed  # pylint: disable=import-outside-toplevel

    return distributed.global_state.client


def _json(value) -> str:
    return json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def _next_key(tag: str) -> str:
    global _sequence
    if _alone:
        raise RuntimeError(f"{tag!r}: an agreement point inside work that process 0 does alone")
    _sequence += 1
    return f"{_PREFIX}/{_sequence}-{tag}"


def _get(client, key: str, timeout_s: float, what: str) -> str:
    """The value of `key`, waiting for it at most `timeout_s` (in slices, so that a failure
    seen by the watch thread ends the process meanwhile)."""
    deadline = time.time() + timeout_s
    while True:
        try:
            return client.blocking_key_value_get(key, 10_000)
        except Exception as e:  # noqa: BLE001 - the store's "deadline exceeded"
            if "DEADLINE_EXCEEDED" not in str(e) and "timed out" not in str(e).lower():
                raise RuntimeError(f"lost the job's coordinator while waiting for {what}: "
                                   f"{e}") from None
            if time.time() > deadline:
                raise RuntimeError(f"process {jax.process_index()}: gave up waiting for {what} "
                                   f"after {timeout_s:.0f} s") from None


def gather(tag: str, value: Any, timeout_s: float = AGREEMENT_TIMEOUT_SECONDS) -> list:
    """Every process's `value` (JSON-serialisable), in process order; every process must call
    it at the same point of the program."""
    if not is_multiprocess():
        return [value]
    client = _client()
    key = _next_key(tag)
    client.key_value_set(f"{key}/{jax.process_index()}", _json(value))
    return [json.loads(_get(client, f"{key}/{p}", timeout_s, f"process {p} at {tag!r}"))
            for p in range(jax.process_count())]


def all_true(tag: str, flag: bool) -> bool:
    """Whether `flag` holds on every process."""
    return all(gather(tag, bool(flag)))


def broadcast(tag: str, value: Any = None, timeout_s: float = AGREEMENT_TIMEOUT_SECONDS):
    """Process 0's `value` on every process."""
    if not is_multiprocess():
        return value
    client = _client()
    key = _next_key(tag)
    if jax.process_index() == 0:
        client.key_value_set(key, _json(value))
        return value
    return json.loads(_get(client, key, timeout_s, f"process 0 at {tag!r}"))


def barrier(tag: str, timeout_s: float = AGREEMENT_TIMEOUT_SECONDS) -> None:
    gather(tag, None, timeout_s)


def on_process_0(tag: str, fn: Callable[[], Any], timeout_s: float = 7 * 24 * 3600):
    """Runs `fn` on process 0 only; every process returns its result (JSON-serialisable, or
    None). Host work that writes files (reports, figures, edits) goes through here, so that one
    process writes them and the others neither repeat the work nor leave process 0 alone."""
    global _alone
    if not is_multiprocess() or _alone:   # one process, or already process 0's work alone
        return fn()
    if jax.process_index() == 0:
        _alone = True
        try:
            result = fn()
        finally:
            _alone = False
        return broadcast(tag, result)
    logging.info("process %d: %s runs on process 0; waiting for it", jax.process_index(), tag)
    return broadcast(tag, None, timeout_s)


def preemption_notice_received() -> bool:
    """Whether JAX's preemption notifier told the coordination service of a notice (SIGTERM
    to any process of the job)."""
    if not is_distributed():
        return False
    try:
        _client().key_value_try_get("RECEIVED_PREEMPTION_NOTICE")
        return True
    except Exception:  # noqa: BLE001 - NOT_FOUND
        return False


def report_failure(message: str) -> None:
    """Publishes this process's failure so that the others stop too (see the module doc)."""
    global _failing
    _failing = True
    if not is_multiprocess():
        return
    try:
        _client().key_value_set(f"{_FAILED}{jax.process_index()}", " ".join(message.split()),
                                allow_overwrite=True)
    except Exception:  # noqa: BLE001 - the coordinator may already be gone
        pass


def exit_after_failure(code: int) -> None:
    """Ends a failed process of a multi-process job without JAX's exit-time shutdown barrier
    (which would wait minutes for processes that are stopping too); process 0 first lets the
    others read its message from the store it serves."""
    sys.stdout.flush()
    sys.stderr.flush()
    if is_multiprocess():
        if jax.process_index() == 0:
            time.sleep(3 * _POLL_SECONDS + 0.5)
        logging.flush()
        os._exit(code)


def watch_for_failures() -> None:
    """Starts the failure watch (see the module doc); a no-op with one process."""
    if not is_multiprocess():
        return
    import atexit

    me = jax.process_index()
    client = _client()

    def stop_watching():
        global _exiting
        _exiting = True

    # Runs before JAX's own exit handler (registered earlier, run later), which shuts the
    # client down: a poll after that is no lost coordinator.
    atexit.register(stop_watching)

    def run():
        while True:
            time.sleep(_POLL_SECONDS)
            if _failing or _exiting:
                return
            try:
                failed = [(k, v) for k, v in client.key_value_dir_get(_FAILED)
                          if not k.endswith(f"/{me}")]
            except Exception as e:  # noqa: BLE001 - the coordinator (process 0) is gone
                if _failing or _exiting or _client() is None:
                    return
                print(f"error: process {me}: lost the job's coordinator (process 0 stopped?): "
                      f"{' '.join(str(e).split())[:200]}; stopping", file=sys.stderr, flush=True)
                os._exit(1)
            if failed and not _failing:
                key, message = sorted(failed)[0]
                who = key.rsplit("/", 1)[-1]
                print(f"error: process {who} failed: {message} (process {me} stops too)",
                      file=sys.stderr, flush=True)
                logging.flush()
                os._exit(1)

    threading.Thread(target=run, name="latent_jax-failure-watch", daemon=True).start()
