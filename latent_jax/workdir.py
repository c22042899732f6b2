"""One training job per workdir: the lock file `<workdir>/LOCK`.

On a local (or NFS) disk the lock is an exclusive `flock` on that file, held until the process
exits. The kernel drops it when the holder dies, so a killed job never leaves a stale lock: the
next job takes it over (the file's old content is only informative). The file holds the holder's
host, pid and start time, which the refusal prints.

On an object store (`gs://...`) there is no flock: process 0 writes the file as a marker and
deletes it when the job ends; a second job that finds it refuses to start. A job that was killed
leaves the marker behind; once you are sure that no job uses the workdir, delete the file
(`gsutil rm gs://.../LOCK`, or `rm DIR/LOCK`) and start again.

Only process 0 takes the lock (the other processes of a multi-host job share it).
"""

from __future__ import annotations

import json
import os
import socket
import time

from etils import epath

from latent_jax import paths
from latent_jax.errors import WorkdirLockedError

LOCK_NAME = "LOCK"


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"host {info['host']}, pid {info['pid']}, since {when}"
    except (ValueError, KeyError, TypeError):
        return "an unknown holder"


class WorkdirLock:
    """`acquire()` raises `WorkdirLockedError` when another job holds the workdir."""

    def __init__(self, workdir):
        self.path = epath.Path(workdir) / LOCK_NAME
        self._fd = None
        self._held = False

    def _info(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.time()})

    def acquire(self) -> "WorkdirLock":
        if not paths.is_remote(self.path):
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
                raise WorkdirLockedError(
                    f"--workdir: {self.path.parent} is in use by another training job "
                    f"({_describe(self.path.read_text())}; marker {self.path}). If no job uses "
                    f"it any more (e.g. it was killed), delete {self.path} and start again")
            self.path.write_text(self._info())
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
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
