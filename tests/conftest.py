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
import os
import shutil
import tempfile

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="latent_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
