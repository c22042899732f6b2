"""Test-session settings.

XLA compilation dominates the suite's time, and many tests compile the same tiny programs
(the `tiny` presets, in-process and in subprocesses). A persistent compilation cache shared by
the whole session, in a fresh temporary folder, compiles each program once; it is set through
the environment before jax is imported, so subprocesses share it too."""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="latent_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
