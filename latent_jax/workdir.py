"""One training job per workdir: the lock file `<workdir>/LOCK`.

On a local (or NFS) disk the lock is an exclusive `flock` on that file, held until the process
exits. The kernel drops it when the holder dies, so a killed job never leaves a stale lock: the
next job takes it over (the file's old content is only informative). The file holds the holder's
host, pid and start time, which the refusal prints.

On an object store (`gs://...`) there is no flock: process 0 writes the file as a marker with
a lease, renews it (a heartbeat every third of the lease) while the job runs and deletes it
when the job ends. A second job that finds a marker whose heartbeat is younger than the lease
refuses to start; one whose heartbeat is older (its job was killed hard: a preempted VM, kill
-9) is taken over with a warning that names the old holder, so a resubmission after a hard kill
waits at most one lease (`LEASE_SECONDS`, 5 minutes) instead of needing the file deleted by
hand. To take over at once, delete the file (`gsutil rm gs://.../LOCK`). Two new jobs that
find the same expired marker within the same second may both take it: start one at a time.

Only process 0 takes the lock (the other processes of a multi-host job share it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from absl import logging

from etils import epath

from latent_jax import paths
from latent_jax.errors import WorkdirLockedError

LOCK_NAME = "LOCK"
LEASE_SECONDS = 300.0


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"host {info['host']}, pid {info['pid']}, since {when}"
    except (ValueError, KeyError, TypeError):
        return "an unknown holder"


def _heartbeat(text: str) -> float | None:
    """The marker's last heartbeat (its start time for markers written without one)."""
    try:
        info = json.loads(text)
        return float(info.get("heartbeat", info["started"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class WorkdirLock:
    """`acquire()` raises `WorkdirLockedError` when another job holds the workdir."""

    def __init__(self, workdir, lease_seconds: float = LEASE_SECONDS,
                 marker: bool | None = None):
        """`marker`: use the object-store marker with a lease (default: for remote paths)."""
        self.path = epath.Path(workdir) / LOCK_NAME
        self.lease_seconds = float(lease_seconds)
        self._marker = paths.is_remote(self.path) if marker is None else bool(marker)
        self._fd = None
        self._held = False
        self._started = time.time()
        self._stop = threading.Event()
        self._renewer = None

    def _info(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": self._started, "heartbeat": time.time(),
                           "lease_seconds": self.lease_seconds})

    def _mine(self, text: str) -> bool:
        try:
            info = json.loads(text)
            return (info.get("host"), info.get("pid"), info.get("started")) == (
                socket.gethostname(), os.getpid(), self._started)
        except (ValueError, AttributeError):
            return False

    def _renew(self):
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                text = self.path.read_text() if self.path.exists() else ""
                if not self._mine(text):
                    # Our renewals stalled past the lease and another job took the workdir
                    # over: never write over its marker.
                    logging.error("the workdir lock %s was taken over by another job (%s) "
                                  "after this job's renewals stalled; two jobs may now write "
                                  "to this workdir: stop one", self.path, _describe(text))
                    return
                self.path.write_text(self._info())
            except Exception as e:  # noqa: BLE001 - a transient store error; try again
                logging.warning("could not renew the workdir lock %s: %s", self.path, e)

    def acquire(self) -> "WorkdirLock":
        if not self._marker:
            import fcntl

            fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                raise WorkdirLockedError(
                    f"--workdir: {self.path.parent} is in use by another training job "
                    f"({_describe(holder)}; lock file {self.path}). Wait for it to finish, stop "
                    "it, or use another --workdir") from None
            os.ftruncate(fd, 0)
            os.write(fd, self._info().encode())
            os.fsync(fd)
            self._fd = fd
        else:
            if self.path.exists():
                text = self.path.read_text()
                beat = _heartbeat(text)
                age = None if beat is None else time.time() - beat
                if age is not None and age <= self.lease_seconds:
                    raise WorkdirLockedError(
                        f"--workdir: {self.path.parent} is in use by another training job "
                        f"({_describe(text)}; marker {self.path}, renewed {age:.0f} s ago). If "
                        f"that job was killed, its lease expires {self.lease_seconds - age:.0f} "
                        f"s from now and the next start takes the workdir over; to take it "
                        f"over at once, delete {self.path}")
                logging.warning("taking over the workdir lock %s: its holder (%s) has not "
                                "renewed it for %s (lease %.0f s)", self.path, _describe(text),
                                "an unknown time" if age is None else f"{age:.0f} s",
                                self.lease_seconds)
            self.path.write_text(self._info())
            self._stop.clear()
            self._renewer = threading.Thread(target=self._renew, daemon=True,
                                             name="latent_jax-lock-lease")
            self._renewer.start()
        self._held = True
        return self

    def release(self):
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        else:
            self._stop.set()
            if self._renewer is not None:
                self._renewer.join()
                self._renewer = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
