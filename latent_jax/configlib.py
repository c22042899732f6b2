"""Shared config skeleton and up-front validation.

Every `configs/<method>.py` starts from `base_config()` and fills in its method's blocks
(`model`, `loss`, `optim.<player>` and whatever else the method reads). `validate()` runs before
anything is compiled and raises `ValueError` naming the offending key.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import types

import ml_collections

from latent_jax import optim
from latent_jax import paths
from latent_jax.errors import ConfigError


def sibling_config(config_file: str, name: str) -> types.ModuleType:
    """Loads the config file `name` from the folder of `config_file` (config files are loaded by
    path, not imported as a package), e.g. `sibling_config(__file__, "csvae.py")` in configs/vae.py."""
    path = pathlib.Path(config_file).with_name(name)
    spec = importlib.util.spec_from_file_location(f"latent_jax_configs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keep_keys_the_method_reads(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`c` without the keys of `c.method`'s blocks that it does not read (a family's config
    files share presets between methods; `methods.base.check_config_keys` refuses such keys):
    every config file's `get_config` ends with it."""
    from latent_jax.methods import base   # pylint: disable=import-outside-toplevel
    import latent_jax.methods   # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return base.drop_unread_config_keys(c)


def base_config() -> ml_collections.ConfigDict:
    from latent_jax.data.pipeline import default_data_config
    from latent_jax.evaluate.report import default_eval_config

    c = ml_collections.ConfigDict()
    c.method = ""
    c.seed = 0
    c.batch_size = 64            # global batch, over all devices and hosts
    c.num_epochs = 1.0           # training length in epochs of the (subsetted) training split,
    c.num_steps = 0              # ... unless num_steps > 0
    # ... or a compute budget, one of flops / images / steps (latent_jax.compute): the trainer
    # converts it to a number of steps, phase by phase. Not together with num_steps.
    c.budget = ml_collections.ConfigDict(dict(
        flops=ml_collections.config_dict.placeholder(float),
        images=ml_collections.config_dict.placeholder(float),
        steps=ml_collections.config_dict.placeholder(int),
    ))
    c.data = default_data_config()
    c.model = ml_collections.ConfigDict()
    c.loss = ml_collections.ConfigDict()
    c.optim = ml_collections.ConfigDict()
    c.eval = default_eval_config()
    c.eval_every_steps = 0       # 0: evaluate at the end of training only
    c.eval_at_fractions = ()     # also at these fractions of the run, e.g. (0.125, 0.25, 0.5)
    c.evaluate_at_end = True
    c.grids_every_steps = 0      # 0: only with evaluation
    c.grid_size = 8              # test images per grid row
    c.log_every_steps = 50
    # Training steps per call of the compiled program (a lax.scan over that many batches):
    # the host's work per step (dispatch, metric sums, checks) divided by it, for devices
    # whose steps take about as long as that work. The same training as 1. The logging,
    # checkpoint, evaluation and grid intervals must be multiples of it.
    c.steps_per_call = 1
    c.checkpoint = ml_collections.ConfigDict(dict(
        every_steps=1000,
        max_to_keep=3,
        asynchronous=True,
    ))
    c.parallel = ml_collections.ConfigDict(dict(
        distributed=False,       # True: jax.distributed.initialize() (TPU pods, SLURM, ...)
        coordinator_address="",
        num_processes=1,
        process_id=0,
        # This process's devices, e.g. (0,1,2,3,4,5,6,7) for one process per 8-GPU node
        # under SLURM, whose auto-detection otherwise gives each process GPU SLURM_LOCALID
        # only; () lets jax.distributed decide.
        local_device_ids=(),
        num_devices=0,           # 0: every device
    ))
    return c


def apply_tiny(c: ml_collections.ConfigDict, image_size: int = 16) -> ml_collections.ConfigDict:
    """The shared part of every config's `tiny` preset: the embedded synthetic faces at
    `image_size` px with a few hundred examples, batch 8, 6 steps, a checkpoint every 2 steps,
    no end-of-run evaluation, small grids. Sized for tests and smoke runs (seconds on a CPU);
    each config file shrinks its networks on top."""
    c.data.name = "synthetic_faces"
    c.data.image_size = image_size
    c.data.preprocess = "resize"
    c.data.validation_from_train = 0
    c.data.subset.positives = ()
    c.data.synthetic.update(dict(num_train=96, num_validation=32, num_test=32))
    c.data.read_threads = 0
    c.data.prefetch = 0
    c.batch_size = 8
    c.num_steps = 6
    c.checkpoint.update(dict(every_steps=2, max_to_keep=2, asynchronous=False))
    c.log_every_steps = 1
    c.eval_every_steps = 0
    c.grids_every_steps = 0
    c.evaluate_at_end = False
    c.grid_size = 2
    c.eval.update(dict(num_examples=32, num_samples=8, batch_size=16))
    c.eval.judge.update(dict(steps=30, width=8, feature_dim=16, test_examples=32))
    return c


def adam(learning_rate: float, **kw) -> ml_collections.ConfigDict:
    return optim.default_optimizer_config(learning_rate, **kw)


def _validate_steps_per_call(config: ml_collections.ConfigDict) -> None:
    per_call = config.get("steps_per_call", 1)
    if isinstance(per_call, bool) or not isinstance(per_call, int) or per_call < 1:
        raise ConfigError(f"config.steps_per_call: must be an int >= 1, got {per_call!r}")
    if per_call == 1:
        return
    intervals = {"log_every_steps": config.log_every_steps,
                 "checkpoint.every_steps": config.checkpoint.every_steps,
                 "eval_every_steps": config.eval_every_steps,
                 "grids_every_steps": config.grids_every_steps}
    bad = [f"config.{k}={int(v)}" for k, v in intervals.items() if int(v) % per_call]
    if bad:
        raise ConfigError(f"config.steps_per_call: {per_call} steps per call need intervals "
                          f"that are multiples of it; not {', '.join(bad)}")


def validate(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
    """Checks that need no data and no compilation. Raises ValueError naming the key."""
    from latent_jax import methods

    if not config.get("method"):
        raise ConfigError("config.method: no method given; known: "
                         + ", ".join(methods.registered_methods()))
    methods.method_class(config.method)  # raises for an unknown method
    if int(config.batch_size) <= 0:
        raise ConfigError(f"config.batch_size: must be positive, got {config.batch_size}")
    if int(config.num_steps) < 0 or float(config.num_epochs) < 0:
        raise ConfigError("config.num_steps / config.num_epochs: must not be negative")
    from latent_jax import compute
    if (int(config.num_steps) == 0 and float(config.num_epochs) <= 0
            and compute.budget_of(config) is None):
        raise ConfigError("config.num_epochs: must be positive when config.num_steps is 0 and "
                          "no config.budget is given")
    for key in ("log_every_steps",):
        if int(config[key]) <= 0:
            raise ConfigError(f"config.{key}: must be positive, got {config[key]}")
    for key in ("eval_every_steps", "grids_every_steps"):
        if int(config[key]) < 0:
            raise ConfigError(f"config.{key}: must not be negative, got {config[key]}")
    if int(config.checkpoint.every_steps) <= 0:
        raise ConfigError("config.checkpoint.every_steps: must be positive")
    _validate_steps_per_call(config)
    if int(config.checkpoint.max_to_keep) <= 0:
        raise ConfigError("config.checkpoint.max_to_keep: must be positive")
    for name in config.optim.keys():
        lr = config.optim[name].get("learning_rate", None)
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise ConfigError(f"config.optim.{name}.learning_rate: must be a number, got "
                              f"{lr!r}") from None
        if not math.isfinite(lr) or lr < 0:
            raise ConfigError(f"config.optim.{name}.learning_rate: must be finite and >= 0, "
                              f"got {lr}")
    from latent_jax.nets import precision
    precision.compute_dtype((config.get("model") or {}).get("compute_dtype", "float32"))
    remat = (config.get("model") or {}).get("remat", False)
    if not isinstance(remat, bool):
        raise ConfigError(f"config.model.remat: must be True or False, got {remat!r}")
    for key, value in (config.get("model") or {}).items():
        if (key == "latent_dim" or key.endswith(("_dim", "_dims"))) and isinstance(value, int):
            minimum = 1 if key == "latent_dim" else 0
            if value < minimum:
                raise ConfigError(f"config.model.{key}: must be >= {minimum}, got {value}")
    if workdir is not None:
        check_workdir(workdir)


def check_workdir(workdir: str) -> None:
    check_writable_dir(workdir, "--workdir")


REMOTE_PROBE_SECONDS = 20.0   # how long a remote store may take to answer the first question


def check_remote_reachable(directory, flag: str, timeout_s: float | None = None) -> None:
    """One question to the object store behind a remote `directory` (does its bucket exist?),
    answered within `timeout_s`: without a network, the storage client's retries would
    otherwise take a minute and more, and end in several tracebacks."""
    import threading

    from etils import epath

    text = os.fspath(directory)
    scheme, _, rest = text.partition("://")
    bucket = f"{scheme}://{rest.split('/', 1)[0]}"
    answer: dict = {}

    def ask():
        try:
            answer["exists"] = epath.Path(bucket).exists()
        except Exception as e:  # noqa: BLE001 - reported below in one line
            answer["error"] = e

    timeout_s = REMOTE_PROBE_SECONDS if timeout_s is None else timeout_s
    worker = threading.Thread(target=ask, daemon=True, name="latent_jax-remote-probe")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ConfigError(f"{flag}: no answer from {bucket} within {timeout_s:.0f} s (no "
                          "network, or the storage endpoint is unreachable)")
    if "error" in answer:
        e = answer["error"]
        raise ConfigError(f"{flag}: cannot reach {bucket}: {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]}")
    if not answer.get("exists", False):
        raise ConfigError(f"{flag}: the bucket {bucket} does not exist (or is not visible with "
                          "these credentials)")


def check_writable_dir(directory, flag: str) -> None:
    """A local directory (or its nearest existing parent) must be a writable directory; `flag`
    names the setting in the error. Remote ones (gs://...) must answer within seconds
    (`check_remote_reachable`); whether they can be written is checked by the first write."""
    if paths.is_remote(directory):
        check_remote_reachable(directory, flag)
        return
    path = os.path.abspath(os.fspath(directory))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"{flag}: cannot write to {path} ({probe} exists and is not a "
                          "directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: cannot write to {path} (no permission to write to {probe})")


# Keys whose change cannot alter a resumed run's trajectory (training length, logging,
# checkpointing, evaluation, parallelism, where and how fast data are read), or changes only its
# floating-point rounding, as moving to other hardware does (model.compute_dtype: the state is
# float32 either way, so a bfloat16 run on accelerators resumes or evaluates in float32 on a
# CPU; model.remat only recomputes activations). Methods add theirs
# (`Method.resume_safe_keys`, e.g. IntroVAC's inference-only `edit.` and `langevin.`).
# A key ending in '.' covers the whole block.
RESUME_SAFE_KEYS = (
    "num_steps", "num_epochs", "budget.", "log_every_steps", "eval_every_steps",
    "eval_at_fractions", "grids_every_steps", "steps_per_call",
    "grid_size", "evaluate_at_end", "checkpoint.", "eval.", "parallel.",
    "model.compute_dtype", "model.remat",
    "data.data_dir", "data.cache_dir", "data.num_workers", "data.read_threads", "data.prefetch",
    "data.memory_mb",
)


def _flatten(tree, prefix="") -> dict:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not tree and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = tree
    return out


def config_differences(saved: dict, current: dict,
                       safe_keys=RESUME_SAFE_KEYS) -> tuple[list[str], list[str]]:
    """(unsafe, safe): one 'key: saved -> current' line per key whose value differs between two
    configs as JSON dicts (a key missing on one side counts as a difference)."""
    a, b = _flatten(saved), _flatten(current)
    unsafe, safe = [], []
    missing = "(absent)"
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va == vb:
            continue
        line = f"{key}: {json.dumps(va)} -> {json.dumps(vb)}"
        ok = any(key == s or (s.endswith(".") and key.startswith(s)) for s in safe_keys)
        (safe if ok else unsafe).append(line)
    return unsafe, safe
