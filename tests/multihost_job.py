"""Starts `latent_jax.main` as a real multi-process JAX job on this machine: N processes with K
CPU devices each, `jax.distributed` on a free localhost port (gloo collectives), every process
with a hard deadline (a collective that one process never joins hangs, it does not raise)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
DEADLINE_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_flags(name: str, workdir, **overrides) -> list[str]:
    """`configs/<name>.py:tiny` with `--config.<key>=<value>` overrides."""
    return ([f"--config={os.path.join(REPO, 'configs', name + '.py')}:tiny",
             f"--workdir={workdir}"]
            + [f"--config.{k}={v}" for k, v in overrides.items()])


class Job:
    """One job of `processes` processes with `devices` CPU devices each; `extra[i]` adds flags
    to process i only. With one process, no `jax.distributed` (a plain single-host run)."""

    def __init__(self, flags, *, processes: int = 2, devices: int = 2, log_dir,
                 extra: dict | None = None, name: str = "job"):
        self.logs = [os.path.join(log_dir, f"{name}.p{i}.log") for i in range(processes)]
        port = free_port()
        env = dict(ENV, JAX_NUM_CPU_DEVICES=str(devices))
        self.procs = []
        self.t0 = time.time()
        for i in range(processes):
            dist = [] if processes == 1 else [
                "--config.parallel.distributed=True",
                f"--config.parallel.coordinator_address=localhost:{port}",
                f"--config.parallel.num_processes={processes}",
                f"--config.parallel.process_id={i}"]
            argv = ([sys.executable, "-m", "latent_jax.main"] + list(flags) + dist
                    + list((extra or {}).get(i, ())))
            with open(self.logs[i], "w") as log:
                self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                   env=env, cwd=REPO,
                                                   start_new_session=True))

    def log(self, i: int) -> str:
        with open(self.logs[i]) as f:
            return f.read()

    def logs_text(self) -> str:
        return "\n".join(f"--- process {i} ---\n" + self.log(i)[-3000:]
                         for i in range(len(self.procs)))

    def signal(self, i: int, sig) -> None:
        self.procs[i].send_signal(sig)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()

    def wait(self, timeout: float = DEADLINE_S) -> list[int]:
        """The exit codes; every process is killed (and the test fails) past the deadline."""
        deadline = self.t0 + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"the job did not end within {timeout:.0f} s:\n"
                                     + self.logs_text()) from None
        return [p.returncode for p in self.procs]

    def wait_ok(self, timeout: float = DEADLINE_S) -> None:
        codes = self.wait(timeout)
        assert codes == [0] * len(codes), f"exit codes {codes}:\n" + self.logs_text()

    def wait_for(self, predicate, timeout: float = 300) -> None:
        """Polls `predicate()` until true; fails if a process exits first."""
        end = time.time() + timeout
        while time.time() < end:
            if predicate():
                return
            if any(p.poll() is not None for p in self.procs):
                codes = [p.poll() for p in self.procs]
                self.kill()
                raise AssertionError(f"a process exited early ({codes}):\n" + self.logs_text())
            time.sleep(0.05)
        self.kill()
        raise AssertionError("timed out waiting:\n" + self.logs_text())
