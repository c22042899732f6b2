"""The one training loop. It knows players and phases, never method names.

Per step: the data iterator gives this process's rows of the global batch; they become one
global array sharded along the mesh's `data` axis; the method's `train_step` for the current
(static) phase runs as one jitted function over replicated player states; the step's RNG is
`fold_in(PRNGKey(seed), step)`, so results do not depend on the number of devices or on
restarts. Checkpoints every `checkpoint.every_steps`, at the end and on SIGTERM/preemption;
a run whose workdir holds a checkpoint resumes from it, data iterator included.

With several processes (`latent_jax.multihost`) every process runs the steps and the saves;
they restore the same agreed step; a stop (SIGTERM or Ctrl-C on any process) is agreed through
JAX's preemption sync point, so every process saves the same step and exits 0; evaluations,
grids and reports are process 0's, on its own devices, while the others wait for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import threading
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from latent_jax import checkpoint as ckpt_lib
from latent_jax import compute as compute_lib
from latent_jax import configlib
from latent_jax.data import pipeline as data_lib
from latent_jax import logging as lj_logging
from latent_jax import methods
from latent_jax import multihost
from latent_jax import parallel
from latent_jax import paths
from latent_jax import visualize
from latent_jax import workdir as workdir_lib
from latent_jax import errors
from latent_jax import interrupt
from latent_jax.errors import ConfigError


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/Inf; the last good checkpoint is kept."""


class Preempted(Exception):
    """SIGTERM or a preemption notice: a checkpoint was saved and training stopped."""


_Interrupted = interrupt.Interrupted   # the name the trainer's handlers use


class _SignalFlag:
    """On SIGTERM or SIGINT (Ctrl-C), sets a flag that the loop checks after each step (so a
    step is never cut in half); inside `immediate()` (evaluations, which can take minutes) the
    evaluation's next batch or progress-bar update raises `_Interrupted` instead.

    With several processes a signal is one process's, but the stop must be every process's at
    one step: SIGTERM is left to JAX's preemption notifier (installed by
    `jax.distributed.initialize`, which tells the coordination service; the loop's
    `reached_preemption(step)` is then true on every process at the same step), and SIGINT is
    passed on to it as a SIGTERM. Evaluations then run to their end (they are process 0's
    alone) and the stop comes at the next step."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.triggered = False
        self.signal_name = ""
        self._previous = {}
        self._multiprocess = multihost.is_multiprocess()
        interrupt.clear()
        if threading.current_thread() is threading.main_thread():
            for s in signals:
                if (self._multiprocess and s == signal.SIGTERM
                        and jax.config.jax_enable_preemption_service):
                    continue
                self._previous[s] = signal.signal(
                    s, self._pass_on if self._multiprocess else self._handle)

    def _pass_on(self, signum, frame):
        if not jax.config.jax_enable_preemption_service:   # no notifier to pass it on to
            self._handle(signum, frame)
            return
        logging.warning("received %s: asking every process to stop at the next agreed step",
                        signal.Signals(signum).name)
        os.kill(os.getpid(), signal.SIGTERM)

    def _handle(self, signum, frame):
        del frame
        self.triggered = True
        self.signal_name = signal.Signals(signum).name
        if interrupt.is_armed():
            # Recorded, not raised here: the handler runs between two bytecodes of whatever
            # executes, and a raise that lands in a gc callback or a weakref finaliser is
            # printed as "Exception ignored ... Traceback" and dropped. The next
            # `interrupt.check()` in the evaluation's loops (each batch, each bar update)
            # raises it.
            interrupt.request(self.signal_name)
            return
        logging.warning("received %s: saving a checkpoint and stopping", self.signal_name)

    @contextlib.contextmanager
    def immediate(self):
        if self.triggered:
            raise _Interrupted(self.signal_name)
        if self._multiprocess:   # see the class doc
            yield
            return
        with interrupt.armed():
            yield

    def restore(self):
        interrupt.clear()
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _leaf_finite(v) -> jax.Array:
    """Whether a leaf holds no NaN/Inf (integer and key leaves always do)."""
    v = jnp.asarray(v)
    return jnp.all(jnp.isfinite(v)) if jnp.issubdtype(v.dtype, jnp.inexact) else jnp.array(True)


def _all_finite(tree) -> jax.Array:
    vals = [_leaf_finite(v) for v in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(vals)) if vals else jnp.array(True)


def non_finite_leaves(tree) -> list[str]:
    """Paths of the floating-point leaves of `tree` that hold a NaN or Inf."""
    flags = jax.device_get(jax.tree.map(_leaf_finite, tree))
    return [jax.tree_util.keystr(path) for path, ok in
            jax.tree_util.tree_flatten_with_path(flags)[0] if not bool(ok)]


class Experiment:
    """Everything a run needs: spec, method, mesh, states; shared by train/evaluate/edit/sample."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, local: bool = False):
        """`local`: this process's devices only (inference and host work, which need no other
        process); otherwise every device of every process (training). `jax.distributed` is
        started by the launch (`multihost.initialize`), never here."""
        configlib.validate(config, workdir)
        self.config = config
        self.workdir = paths.resolve(workdir)
        self.local = bool(local)
        self.mesh = parallel.make_mesh(int(config.parallel.num_devices) or None, local=local)
        self.local_mesh = parallel.local_part(self.mesh)
        parallel.check_batch_divisible(int(config.batch_size), self.mesh)
        self.data = data_lib.options(config.data)   # validated once, passed on as is
        self.spec = data_lib.get_data_spec(self.data)
        n_train = int(self.spec.num_examples["train"])
        # Batches one iteration consumes (Method.batches_per_step); an epoch is one pass.
        self.batches_per_step = int(methods.method_class(config.method).batches_per_step(config))
        if self.batches_per_step < 1:
            raise ValueError(f"method {config.method!r}: batches_per_step must be >= 1")
        self.steps_per_epoch = max(1, n_train // (int(config.batch_size)
                                                  * self.batches_per_step))
        if n_train < int(config.batch_size):
            raise ConfigError(f"config.batch_size: {config.batch_size} exceeds the "
                             f"{n_train} training examples of {self.spec.name}")
        # With a compute budget the number of steps is known once the steps are compiled
        # (`plan`); until then it is the epoch count's.
        self.budget = compute_lib.budget_of(config)
        self.budget_note = ""
        self.total_steps = (int(config.num_steps) if int(config.num_steps) > 0 else
                            int(round(float(config.num_epochs) * self.steps_per_epoch)))
        self.method = methods.get_method(config, self.spec, self.steps_per_epoch)
        self.base_key = jax.random.PRNGKey(int(config.seed))
        self._replicated = parallel.replicated(self.mesh)
        self._preview = None
        self._step_fns: dict[int, Any] = {}
        self._train_fns: dict[tuple[int, int], Any] = {}
        self.steps_per_call = int(config.get("steps_per_call", 1))
        self.restored_compute = compute_lib.Compute()   # of the checkpoint restored last

    def host_batch(self, it) -> dict:
        """This process's rows of the next training batch, as `train_step` takes it: one batch
        of the stream, or `batches_per_step` consecutive ones stacked on axis 1."""
        if self.batches_per_step == 1:
            return next(it)
        return _stack([next(it) for _ in range(self.batches_per_step)], axis=1)

    def next_batch(self, it) -> dict:
        """`host_batch`, sharded over the mesh."""
        return self.next_batches(it, 1)

    def next_batches(self, it, n: int, first: dict | None = None) -> dict:
        """The batches of the next `n` steps as `train_fn(phase, n)` takes them: `next_batch`
        for one step, `n` of them stacked on a leading axis otherwise. `first`: a host batch
        already taken from `it` (`host_batch`), the first of the `n`."""
        parts = ([first] if first is not None else []) + [
            self.host_batch(it) for _ in range(n - (first is not None))]
        if n == 1:
            return parallel.shard_batch(parts[0], self.mesh)
        return parallel.shard_batch(_stack(parts, axis=0), self.mesh, stacked=True)

    def preview_batch(self) -> dict:
        """A fixed batch of test images for image grids."""
        if self._preview is None:
            n = int(self.config.grid_size)
            self._preview = next(iter(data_lib.iterate_eval_batches(self.data, "test", n)))
        return self._preview

    def grids(self, states) -> dict:
        """Image grids of the preview batch, computed on this process's devices; none when
        `config.grid_size` is 0 (e.g. data that are not images)."""
        if int(self.config.grid_size) <= 0:
            return {}
        b = self.preview_batch()
        return visualize.make_grids(self.method, self.local_states(states), b["image"],
                                    b["label"], jax.random.fold_in(self.base_key, 0x6E1D))

    def local_states(self, states) -> dict:
        """The (replicated) states on this process's devices: what host work computes with."""
        return parallel.to_local(states, self.local_mesh)

    # ------------------------------------------------------------------ state
    def _init_key(self):
        return jax.random.fold_in(self.base_key, 0x1A17)

    def init_states(self) -> dict:
        init = jax.jit(self.method.init, out_shardings=self._replicated)
        return init(self._init_key())

    def abstract_states(self, mesh=None) -> dict:
        """Shapes, dtypes and shardings (replicated over `mesh`, default the run's) of the
        states, without compiling `init`."""
        sharding = parallel.replicated(mesh or self.mesh)
        shapes = jax.eval_shape(self.method.init, self._init_key())
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                           sharding=sharding), shapes)

    def make_workdir(self):
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if not paths.is_remote(self.workdir):
                # One probe per process: on a shared disk every process checks at once.
                probe = self.workdir / f".write_test-{socket.gethostname()}-{os.getpid()}"
                probe.write_text("ok")
                probe.unlink()
        except OSError as e:
            raise ConfigError(f"--workdir: cannot write to {self.workdir}: {e}") from e

    @property
    def checkpoint_dir(self) -> epath.Path:
        return self.workdir / "checkpoints"

    def checkpointer(self, create: bool = True, reader: bool = False) -> ckpt_lib.Checkpointer:
        c = self.config.checkpoint
        return ckpt_lib.Checkpointer(self.checkpoint_dir, max_to_keep=int(c.max_to_keep),
                                     asynchronous=bool(c.asynchronous), create=create,
                                     reader=reader)

    def check_checkpoint_config(self, saved: dict, step: int) -> None:
        """Refuses a checkpoint written with a config that this run cannot continue; logs the
        changes that are safe (training length, logging, evaluation, ...)."""
        current = json.loads(_config_json(self.config))
        # Keys the method never read (kept by configs of earlier versions) changed nothing.
        saved = methods.base.drop_unread_config_keys(json.loads(json.dumps(saved)))
        safe_keys = configlib.RESUME_SAFE_KEYS + tuple(self.method.resume_safe_keys)
        unsafe, safe = configlib.config_differences(saved, current, safe_keys)
        if unsafe:
            shown = "; ".join(unsafe[:8]) + (f"; and {len(unsafe) - 8} more" if len(unsafe) > 8
                                             else "")
            raise errors.IncompatibleCheckpointError(
                f"--workdir: the checkpoint at step {step} in {self.checkpoint_dir} was written "
                f"with another config (checkpoint -> this run): {shown}. Run with the "
                f"checkpoint's config ({self.workdir / CONFIG_FILE}) or use a new --workdir")
        for line in safe:
            logging.info("config changed since the checkpoint at step %d (safe): %s", step, line)

    def restore_newest(self, data_iterator=None) -> tuple[int, dict | None, dict]:
        """(step, states, data_state) of the newest checkpoint that restores, restored into
        abstract shapes (no compilation), or (0, None, {}) when there is none. With a
        `data_iterator`, a checkpoint counts as restorable only if the iterator accepts its
        data state (it is then left at that position).

        Each process reads onto its own devices; in a run over several processes (not
        `local`) they agree on the step (`Checkpointer.restore_newest(agree=True)`) and the
        states become global arrays without any transfer."""
        agree = not self.local and multihost.is_multiprocess()
        present = ckpt_lib.has_checkpoint(self.checkpoint_dir)
        if agree:
            present = multihost.broadcast("has-checkpoint", present)
        if not present:
            return 0, None, {}
        mngr = self.checkpointer(create=False, reader=True)
        local = parallel.replicated(self.local_mesh)
        try:
            target = {"players": self.abstract_states(self.local_mesh),
                      "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=local),
                      "rng": jax.ShapeDtypeStruct(self.base_key.shape, self.base_key.dtype,
                                                  sharding=local)}
            def set_data_state(step, restored, data_state):
                del step, restored
                if data_iterator is not None and data_state:
                    data_iterator.set_state(_iterator_state(data_state))

            found = mngr.restore_newest(target, check_config=self.check_checkpoint_config,
                                        check_restored=set_data_state,
                                        move_unreadable=jax.process_index() == 0, agree=agree)
        finally:
            mngr.close()
        if found is None:
            return 0, None, {}
        step, restored, data_state = found
        self.restored_compute = compute_lib.Compute.from_dict((data_state or {}).get("compute"))
        return int(step), parallel.to_global(restored["players"], self.mesh), data_state

    def plan(self, states, batch, start_step: int = 0) -> dict[int, compute_lib.StepCost]:
        """The cost of every phase the run can reach from `start_step` (XLA's cost analysis of
        the compiled step on these shapes; with one step per call, the compilation is the one
        training reuses), and,
        with a compute budget, the number of steps it buys (`total_steps`, `budget_note`)."""
        if self.budget is None:   # the phases this run reaches
            bounds = [b for b in self.method.phase_boundaries() if start_step < b < self.total_steps]
            first = start_step
        else:                     # a budget is spent from step 0: every phase's cost
            bounds, first = list(self.method.phase_boundaries()), 0
        phases = sorted({self.method.phase(first)} | {self.method.phase(b) for b in bounds})
        costs = {p: self.step_cost(p, states, batch) for p in phases}
        if self.budget is not None:
            kind, amount = self.budget
            if kind == "flops" and any(c.has_loops for c in costs.values()):
                raise ConfigError("config.budget.flops: the train step contains a loop, whose "
                                  "FLOPs XLA counts once; use config.budget.images or steps")
            self.total_steps, self.budget_note = compute_lib.steps_for_budget(
                kind, amount, phase_of=self.method.phase,
                boundaries=self.method.phase_boundaries(),
                flops_per_step={p: c.flops for p, c in costs.items()},
                images_per_step=int(self.config.batch_size) * self.batches_per_step)
            if self.total_steps < 1:
                raise ConfigError(f"config.budget.{kind}: {self.budget_note}")
        return costs

    def step_cost(self, phase: int, states, batch) -> compute_lib.StepCost:
        """The cost of one step of `phase` on the whole global batch, the same on any mesh.

        XLA's cost analysis of a program partitioned over N devices is one device's share, and
        not a fixed fraction of the whole (work the partitioner leaves replicated is counted on
        every device), so on a mesh of several devices the step is costed as one device would
        run it: a second compilation of the same step, for cost analysis only. On one device
        it is the compilation training uses."""
        def step_and_key(sharding):   # train_fn's device-resident step counter and key
            return (jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding),
                    jax.ShapeDtypeStruct(self.base_key.shape, self.base_key.dtype,
                                         sharding=sharding))

        if self.mesh.devices.size == 1:   # the program training calls (one step per call)
            return compute_lib.step_cost(
                self.train_fn(phase, 1), compute_lib.abstract(states),
                compute_lib.abstract(batch), *step_and_key(self._replicated))
        device = jax.local_devices()[0]
        one = jax.sharding.SingleDeviceSharding(device)
        on_one = lambda tree: compute_lib.abstract(tree, sharding=one)  # noqa: E731
        lowered = jax.jit(self._call_body(phase, 1)).lower(
            on_one(states), on_one(batch), *step_and_key(one))
        # No autotuning on GPUs: it would run the kernels at the global batch on one device
        # (memory that device may not have), and the FLOP count does not depend on it.
        options = ({"xla_gpu_autotune_level": 0} if device.platform in ("gpu", "cuda", "rocm")
                   else None)
        return compute_lib.compiled_cost(lowered.compile(compiler_options=options))

    def _step_body(self, phase: int):
        def step(states, batch, rng):
            new_states, metrics = self.method.train_step(states, batch, rng, phase)
            return new_states, metrics, _all_finite(metrics)

        return step

    def step_fn(self, phase: int):
        """The jitted train step of one phase: `(states, batch, rng) -> (states, metrics,
        finite)`, with a finiteness flag."""
        if phase not in self._step_fns:
            self._step_fns[phase] = jax.jit(
                self._step_body(phase), donate_argnums=(0,),
                out_shardings=(self._replicated, self._replicated, self._replicated))
        return self._step_fns[phase]

    def train_fn(self, phase: int, n: int = 1):
        """The jitted program the trainer calls: `n` consecutive steps of `phase` in one call,
        `(states, batches, step, base_key) -> (states, metric_sums, finite, step + n)`.

        `step` (int32) and `base_key` are device arrays, so that a call transfers nothing from
        the host: step i's RNG is `fold_in(base_key, step + i)`, as in the one-step loop. With
        `n > 1` the batches are stacked on a leading axis (`next_batches`) and the steps are a
        `lax.scan`: the same step program, with the host's dispatch, metric sums and
        finiteness checks once per call instead of once per step (`config.steps_per_call`).
        `metric_sums` are the sums of the steps' metrics, `finite` whether every step's were
        finite. One compilation per (phase, n); `plan` costs the `n = 1` one."""
        if (phase, n) not in self._train_fns:
            replicated = self._replicated
            self._train_fns[(phase, n)] = jax.jit(
                self._call_body(phase, n), donate_argnums=(0,),
                out_shardings=(replicated, replicated, replicated, replicated))
        return self._train_fns[(phase, n)]

    def _call_body(self, phase: int, n: int):
        """`train_fn`'s function, before jit."""
        body = self._step_body(phase)

        def one(states, batch, step, base_key):
            return body(states, batch, jax.random.fold_in(base_key, step))

        def run(states, batches, step, base_key):
            if n == 1:
                states, metrics, finite = one(states, batches, step, base_key)
                return states, metrics, finite, step + 1

            def scan_body(states, xs):
                batch, i = xs
                states, metrics, finite = one(states, batch, step + i, base_key)
                return states, (metrics, finite)

            # XLA:CPU runs a rolled loop's body several times slower than the same program
            # unrolled (measured with 8 steps per call: 0.28 s a step rolled, 0.038 s
            # unrolled, 0.049 s at one step per call; docs/results.md), so on the CPU the k
            # steps are unrolled; GPUs and TPUs get XLA's while loop (one compilation of the
            # step, whatever k).
            states, (metrics, finite) = jax.lax.scan(
                scan_body, states, (batches, jnp.arange(n, dtype=step.dtype)),
                unroll=self.mesh.devices.flat[0].platform == "cpu")
            return (states, jax.tree.map(lambda m: jnp.sum(m, axis=0), metrics),
                    jnp.all(finite), step + n)

        return run


CONFIG_FILE = "config.json"   # the run's config, in its workdir


def _stack(batches: list[dict], axis: int) -> dict:
    """Host batches (dicts of arrays with the same keys) stacked key by key on `axis`."""
    return {key: np.stack([b[key] for b in batches], axis=axis) for key in batches[0]}


def _config_json(config) -> str:
    return config.to_json_best_effort(sort_keys=True)


def _iterator_state(data_state: dict) -> dict:
    """The data iterator's part of a checkpoint's data item (`{"iterator", "compute"}`; older
    checkpoints hold the iterator state alone)."""
    return data_state["iterator"] if "iterator" in data_state else data_state


def _data_state_to_json(state: Any) -> dict:
    return json.loads(json.dumps(state, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming if possible), evaluates at the configured intervals and at the end.

    Returns the final evaluation's headline metrics.
    """
    exp = Experiment(config, workdir)
    exp.make_workdir()
    lock = workdir_lib.WorkdirLock(exp.workdir)
    if jax.process_index() == 0:
        lock.acquire()
    try:
        return _train(exp)
    finally:
        lock.release()


def _train(exp: Experiment) -> dict:
    config = exp.config
    method = exp.method
    config_json = _config_json(config)
    it = data_lib.make_train_iterator(
        exp.data, global_batch_size=int(config.batch_size), seed=int(config.seed),
        process_index=jax.process_index(), process_count=jax.process_count())
    start_step, states, _ = exp.restore_newest(data_iterator=it)
    if start_step:
        logging.info("resuming from step %d", start_step)
    else:
        states = exp.init_states()
    # The data iterator's position after the batches of the steps run so far: what a
    # checkpoint saves (the iterator itself runs ahead by the batches already placed).
    data_state = it.get_state()
    # The first batch gives the shapes to cost the steps with (and is then trained on).
    first = exp.host_batch(it)
    costs = exp.plan(states, parallel.shard_batch(first, exp.mesh), start_step)
    total = exp.total_steps
    if exp.budget_note:
        logging.info("%s", exp.budget_note)
    spent = dataclasses.replace(exp.restored_compute)   # zero when nothing was restored
    n_devices = int(exp.mesh.devices.size)
    if jax.process_index() == 0:
        # Written only once the checkpoint (if any) restored with a compatible config.
        (exp.workdir / CONFIG_FILE).write_text(config_json)
        lj_logging.drop_rows_after(exp.workdir / "metrics.jsonl", start_step)
    log_every = int(config.log_every_steps)
    ckpt_every = int(config.checkpoint.every_steps)
    eval_every = int(config.eval_every_steps)
    grid_every = int(config.grids_every_steps) or eval_every
    # Evaluations at fractions of the run (a quality-against-compute curve), besides the
    # periodic ones and the final one.
    fractions = tuple(float(f) for f in config.get("eval_at_fractions", ()) or ())
    if any(not 0.0 < f < 1.0 for f in fractions):
        raise ConfigError(f"config.eval_at_fractions: fractions in (0, 1), got {fractions}")
    eval_steps = {max(1, int(round(f * total))) for f in fractions}
    # Steps per call of the compiled program (config.steps_per_call): a call ends where the
    # host has work (logging, checkpoints, evaluations and grids, whose intervals are
    # multiples of it; phase changes, evaluations at fractions, the end), so it never spans
    # one.
    per_call = exp.steps_per_call
    boundaries = tuple(int(b) for b in method.phase_boundaries())

    def call_length(at: int) -> int:
        stops = [total, *(b for b in boundaries if b > at), *(s for s in eval_steps if s > at)]
        stops += [(at // every + 1) * every for every in (log_every, ckpt_every, eval_every,
                                                          grid_every) if every]
        return max(1, min(per_call, min(stops) - at))

    mngr = exp.checkpointer()
    writer = lj_logging.MetricWriter(exp.workdir, purge_step=start_step or None)
    bar = lj_logging.ProgressBar(total, initial_step=start_step, desc=method.name or config.method,
                                 every_steps=log_every, enabled=jax.process_index() == 0)
    flag = _SignalFlag()
    is_writer = jax.process_index() == 0
    state_finite = jax.jit(_all_finite)
    finite_so_far = parallel.replicate_host_value(True, exp.mesh)
    last_metrics: dict = {}
    step = start_step
    eval_result: dict = {}

    def kept() -> str:
        last = mngr.latest_step()
        if last is None:
            return f"No checkpoint was saved before (none in {mngr.directory})"
        return f"The last good checkpoint (step {last}) is kept in {mngr.directory}"

    def save(at_step: int, force: bool = False):
        if not bool(jax.device_get(finite_so_far)):
            raise NonFiniteLossError(
                f"non-finite loss or gradient before step {at_step}; not saving. {kept()}")
        if not bool(jax.device_get(state_finite(states))):
            bad = non_finite_leaves(states)
            raise NonFiniteLossError(
                f"non-finite parameters or optimizer state at step {at_step} ({len(bad)} "
                f"leaves, e.g. {', '.join(bad[:3])}); not saving. {kept()}")
        # Every saved leaf a global array: Orbax refuses process-local ones with several
        # processes.
        mngr.save(at_step, {"players": states,
                            "step": parallel.replicate_host_value(np.int32(at_step), exp.mesh),
                            "rng": parallel.replicate_host_value(jax.device_get(exp.base_key),
                                                                 exp.mesh)},
                  {"iterator": _data_state_to_json(data_state),
                   "compute": spent.as_dict()}, config_json, force=force)

    failed = False
    try:
        if multihost.is_multiprocess() and _stop_noticed_before_training(mngr, start_step):
            raise Preempted(f"stopped at step {start_step} before training on a stop notice "
                            "(SIGTERM or Ctrl-C on one of the processes); nothing new to save")
        t_start = time.time()
        # Metrics are summed on device over the logging interval and logged as means (one
        # transfer per interval); per-key counts, since a phase change alters the keys.
        sums: dict = {}
        counts: dict = {}
        t_interval, step_interval = time.time(), step
        # The step counter and the base key live on the devices: a call transfers nothing
        # from the host but the batches (placed explicitly, one call ahead), which the
        # transfer guard holds to (an implicit transfer there is an error, not a stall).
        step_on_devices = parallel.replicate_host_value(np.int32(step), exp.mesh)
        key_on_devices = parallel.replicate_host_value(jax.device_get(exp.base_key), exp.mesh)
        pending = exp.next_batches(it, call_length(step), first=first) if step < total else None
        while step < total:
            phase = method.phase(step)
            n = call_length(step)
            if method.phase(step + n - 1) != phase:   # phase_boundaries() missed a change
                raise RuntimeError(f"{config.method}: the phase changes inside steps {step}.."
                                   f"{step + n}, which phase_boundaries() does not list")
            with jax.transfer_guard("disallow"):
                states, metrics, finite, step_on_devices = exp.train_fn(phase, n)(
                    states, pending, step_on_devices, key_on_devices)
                finite_so_far = jnp.logical_and(finite_so_far, finite)
                for k, v in metrics.items():
                    sums[k] = v if k not in sums else sums[k] + v
                    counts[k] = counts.get(k, 0) + n
            spent.flops += n * costs[phase].flops
            spent.images += n * int(config.batch_size) * exp.batches_per_step
            step += n
            data_state = it.get_state()
            # The next call's batches, placed while this call runs.
            pending = exp.next_batches(it, call_length(step)) if step < total else None
            if step % log_every == 0 or step == total:
                host_metrics = {k: float(v) / counts[k]
                                for k, v in jax.device_get(sums).items()}
                sums, counts = {}, {}
                if not bool(jax.device_get(finite_so_far)):
                    bad = sorted(k for k, v in host_metrics.items() if not np.isfinite(v))
                    raise NonFiniteLossError(
                        f"non-finite values at step {step} ({', '.join(bad) or 'earlier step'}); "
                        f"training stopped. {kept()}")
                host_metrics["train/phase"] = float(phase)
                host_metrics["train/epoch"] = step / exp.steps_per_epoch
                now = time.time()
                spent.device_seconds += (now - t_interval) * n_devices
                host_metrics.update(spent.metrics())
                rate = (step - step_interval) / max(now - t_interval, 1e-9)
                host_metrics["perf/steps_per_sec"] = rate
                host_metrics["perf/examples_per_sec"] = (rate * int(config.batch_size)
                                                         * exp.batches_per_step)
                t_interval, step_interval = now, step
                writer.write_scalars(step, host_metrics)
                last_metrics = host_metrics
            bar.update(step, last_metrics)
            # JAX's preemption sync point is the highest step reported (by this loop and by
            # Orbax's saves) plus one, so every step of the call is reported, in order.
            reached = [mngr.reached_preemption(s) for s in range(step - n + 1, step + 1)]
            if flag.triggered or any(reached):
                save(step, force=True)
                mngr.wait()
                why = flag.signal_name or ("a stop agreed by every process (SIGTERM or Ctrl-C "
                                           "on one of them, or a preemption notice)")
                raise Preempted(f"stopped at step {step} on {why}; checkpoint saved")
            if step % ckpt_every == 0 and step < total:
                save(step)
            if grid_every and step % grid_every == 0 and step < total and is_writer:
                writer.write_images(step, exp.grids(states))
            if ((eval_every and step % eval_every == 0) or step in eval_steps) and step < total:
                try:
                    with flag.immediate():
                        eval_result = _evaluate(exp, states, step, writer, spent)
                except _Interrupted as e:
                    save(step, force=True)
                    mngr.wait()
                    raise Preempted(f"stopped at step {step} during an evaluation on {e}; "
                                    "checkpoint saved") from None
        bar.close()
        if step > start_step or mngr.latest_step() != step:
            save(step, force=True)
        mngr.wait()
        logging.info("trained %d steps in %.1f s", step - start_step, time.time() - t_start)
        try:
            with flag.immediate():
                if is_writer:
                    writer.write_images(step, exp.grids(states))
                if config.evaluate_at_end:
                    eval_result = _evaluate(exp, states, step, writer, spent)
        except _Interrupted as e:
            raise Preempted(f"stopped during the final evaluation on {e}; the checkpoint of step "
                            f"{step} is saved and --mode=evaluate writes the report") from None
    except Exception as e:
        failed = True
        if _disk_full(e):
            raise errors.DiskFullError(
                f"no space left while saving a checkpoint to {mngr.directory} "
                f"({' '.join(str(e).split())[:300]}); "
                f"training stopped. The last complete checkpoint (step "
                f"{_last_complete(mngr)}) is kept (Orbax finalises a step only once it is "
                "written whole). Free space and run the same command to resume") from None
        raise
    else:
        failed = False
    finally:
        bar.close()
        flag.restore()
        try:
            mngr.close()
        except Exception:  # noqa: BLE001 - an async save's failure, already being reported
            if not failed:
                raise
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - e.g. the same full disk, already being reported
            if not failed:
                raise
    return eval_result


def _stop_noticed_before_training(mngr: ckpt_lib.Checkpointer, start_step: int) -> bool:
    """Whether a stop notice reached the job before its first step, agreed by every process.

    JAX's preemption sync point is the highest step any process has reported plus one; a
    notice that arrives before a resumed run reports a step (during the restore or the
    compilation) would set it to step 1, which the loop, counting from `start_step`, never
    meets. So every process reports `start_step` now, and a notice that arrived before that
    (the coordination service then holds its key) stops every process here."""
    if mngr.reached_preemption(start_step):
        return multihost.all_true("stop-before-training", True)
    return not multihost.all_true("stop-before-training",
                                  not multihost.preemption_notice_received())


def _disk_full(e: BaseException) -> bool:
    """Whether `e` (or an exception it was raised from) is 'no space left on device'."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or \
                "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _last_complete(mngr: ckpt_lib.Checkpointer):
    try:
        return mngr.latest_step()
    except Exception:  # noqa: BLE001
        return "unknown"


def _evaluate(exp: Experiment, states: dict, step: int, writer, spent) -> dict:
    """The evaluation report of `states`: process 0's work, on its own devices (it trains and
    caches the judge once for the workdir and writes the report); every process returns the
    headline."""
    from latent_jax.evaluate import report

    def run():
        result = report.run_evaluation(exp.method, exp.local_states(states), exp.config,
                                       exp.workdir, step,
                                       jax.random.fold_in(exp.base_key, 0xE7A1 + step),
                                       data_options=exp.data, compute=spent.as_dict())
        writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()
                                    if isinstance(v, (int, float))})
        return result

    return multihost.on_process_0(f"evaluation-{step}", run)


def saved_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` trained with (`CONFIG_FILE`, written when it started)."""
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise errors.NoCheckpointError(f"--workdir: no {CONFIG_FILE} in {workdir}; train first "
                                       "(--mode=train)")
    # Without the keys its method does not read, which configs of earlier versions carried
    # (they changed nothing; `methods.base.check_config_keys` refuses them now).
    return methods.base.drop_unread_config_keys(
        ml_collections.ConfigDict(json.loads(path.read_text())))


def load_for_inference(config: ml_collections.ConfigDict, workdir: str):
    """(experiment, states, step) from the workdir's newest checkpoint that restores, without
    compiling `init` and without writing anything, on this process's devices alone (in a job
    of several processes, process 0 does the inference: `multihost.on_process_0`)."""
    exp = Experiment(config, workdir, local=True)
    if not ckpt_lib.has_checkpoint(exp.checkpoint_dir):
        raise errors.NoCheckpointError(f"--workdir: no checkpoint under {exp.checkpoint_dir}; "
                                       "train first (--mode=train)")
    step, states, _ = exp.restore_newest()
    return exp, states, step


def load_runs_on_shared_data(workdirs):
    """`([(config, experiment, states, step)], data config)` for several trained runs, each from
    its saved config and newest checkpoint, refused (`ConfigError`) unless every run trained on
    the same data: what the figures that put runs side by side need."""
    runs, data_cfg = [], None
    for wd in workdirs:
        config = saved_config(wd)
        if data_cfg is not None and config.data.to_dict() != data_cfg.to_dict():
            raise errors.ConfigError(f"--workdir: {wd} was trained on other data than "
                                     f"{workdirs[0]}")
        data_cfg = config.data
        runs.append((config, *load_for_inference(config, wd)))
    return runs, data_cfg


def evaluate_only(config, workdir) -> dict:
    exp, states, step = load_for_inference(config, workdir)
    writer = lj_logging.MetricWriter(exp.workdir)
    try:
        return _evaluate(exp, states, step, writer, exp.restored_compute)
    finally:
        writer.close()

