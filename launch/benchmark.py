"""Training-step speed per method and phase, side by side with what it is compared to.

    python launch/benchmark.py --config=configs/introvac.py:synthetic [--config=...] \\
        [--steps=10] [--rounds=3] [--conv_shapes] [--compare=torch] [--profile]
    python launch/benchmark.py --config=configs/introvac.py:synthetic --run_dir=DIR

Per config: the input pipeline's time per batch (batches are fetched before timing the steps).
Per config and phase: compile time, seconds per step (median over `--rounds` rounds of
`--steps` steps each), images/s, FLOPs per step (XLA's cost analysis of the compiled step,
latent_jax.compute), achieved GFLOP/s and its share of a matmul peak measured on the same
device in the same run (a 2048x2048 matmul in the step's compute dtype). `--config.KEY=VALUE`
flags apply to every config (e.g. `--config.model.compute_dtype=bfloat16`).

`--profile` then traces `--steps` steps of each phase with JAX's profiler and prints where
the time goes (latent_jax.profiling): each XLA operation's time, summed by kind (convolution,
dot, elementwise/reduce, layout) and pass (forward, backward, optimizer update), and the
costliest operations with their shapes and the network layer they belong to; with
`--compare=torch` also PyTorch's operator time for the same step, by the same kinds
(torch.profiler, the faster of its two layouts).

`--also_plain_xla` and `--also_layers=KEY=VALUE,...` time each config a second (third) time in
the same run, rounds alternating: with XLA's convolutions everywhere (flax's layers), or with
other `nets.layers` thresholds (`layers.override`'s keywords).

`--conv_shapes` times each convolution shape of the IntroVAE-style nets at 64x64 (batch 64)
forward and forward+backward, as XLA's convolution and as the im2col matmul that
`latent_jax.nets.layers.Conv` uses on small maps.

`--loop=1,8` then runs the trainer itself (`train.train_and_evaluate`, a scratch workdir) on
each config with those `config.steps_per_call` values, and prints its time per step against the
compiled steps' own: the difference is the host's work per step (dispatch, the input pipeline,
metric sums, checks), what an accelerator would wait for.

`--run_dir=DIR` (with the run's `--config`) times the CLI on a trained checkpoint instead of
the steps: `--mode=edit` of one test image and `--mode=sample`, each a fresh process as a user
runs it (median of `--cli_rounds` calls), and prints DIR's latest evaluation's time by part
(the judge, trained or loaded from its cache, the evaluation set, each metric family) against
the run's training time.

`--compare=torch` (the `bench` extra: a CPU build of PyTorch) times the same networks and the
same step written in PyTorch (launch/torch_reference.py; from the papers and the shapes, not the
authors' code), alternating rounds with the JAX step in the same run, and prints the ratio:
cases `vac` (IntroVAC's phase 0: encoder, decoder and linear classifier with Adam, L1 + BCE +
KL), IntroVAC's phase 1 (the introspective step: the players' own Adam updates and the same
forward and backward passes as latent_jax's step) and `ccvae_unsup` (CCVAE's unsupervised
bound's networks: conv encoder and decoder with Adam, Laplace likelihood + KL), each at the
shapes of the given config. PyTorch uses as many threads as JAX's CPU client (all cores).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import statistics
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latent_jax import compute as compute_lib  # noqa: E402
from latent_jax import configlib  # noqa: E402
from latent_jax import parallel, train  # noqa: E402
from latent_jax.data import pipeline as data_lib  # noqa: E402
from latent_jax.nets import layers  # noqa: E402
from latent_jax.nets import precision  # noqa: E402

flags.DEFINE_multi_string("config", [], "Config file[:preset] (repeatable).")
flags.DEFINE_multi_string("set", [], "KEY=VALUE applied to every config (e.g. "
                          "model.compute_dtype=bfloat16).")
flags.DEFINE_integer("steps", 10, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Rounds per phase (the median is reported).")
flags.DEFINE_bool("conv_shapes", False, "Time the IntroVAE convolution shapes, conv vs im2col.")
flags.DEFINE_integer("conv_batch", 64, "Batch of --conv_shapes.")
flags.DEFINE_enum("compare", None, ["torch"], "Also time the PyTorch version of each case.")
flags.DEFINE_list("also_layers", [], "Also run each config with these nets.layers thresholds "
                  "(KEY=VALUE of layers.override, e.g. strided_max_patch=100000: im2col for "
                  "every strided convolution), in the same run, rounds alternating.")
flags.DEFINE_bool("also_plain_xla", False, "Also run each config with XLA's convolutions "
                  "everywhere (nets.layers.plain_xla: what flax's layers compute), in the same "
                  "run, rounds alternating.")
flags.DEFINE_string("run_dir", None, "A trained workdir of the first --config: time the CLI's "
                    "start-up instead of the steps (--mode=edit of one image and --mode=sample, "
                    "each a fresh process) and print its latest evaluation's time by part "
                    "against its training time.")
flags.DEFINE_integer("cli_rounds", 3, "With --run_dir: calls per CLI mode (the median is "
                     "reported).")
flags.DEFINE_bool("profile", False, "After timing each phase, profile --steps steps of it "
                  "(jax.profiler) and print where the time goes: summed time per kind of XLA "
                  "operation (convolution, dot, elementwise, layout) and pass (forward, "
                  "backward, update), and the costliest operations with their shapes; with "
                  "--compare=torch, PyTorch's operators for the same step (torch.profiler).")
flags.DEFINE_string("workdir", "/tmp/latent_jax_benchmark", "Scratch workdir (nothing written).")
flags.DEFINE_list("loop", [], "Also run the trainer (latent_jax.train) on each config with these "
                  "config.steps_per_call values (e.g. 1,8) and print its time per step against "
                  "the compiled steps' own: the host's share of a step.")
flags.DEFINE_integer("pipeline", 0, "Also time the training input pipeline of each config for "
                     "this many batches per epoch over three epochs (the split cut to that many "
                     "batches): the first read, then from memory (config.data.memory_mb), with "
                     "and without it; images/s per host core against what one H100 would "
                     "consume at the step's FLOPs per image.")
flags.DEFINE_float("h100_flops", 989e12 * 0.3, "With --pipeline: the FLOP/s one H100 is assumed "
                   "to reach (default 30% of its dense bfloat16 peak, 989 TFLOP/s).")
flags.DEFINE_integer("loop_steps", 40, "With --loop: steps per timed interval; the trainer "
                     "runs two, and the second (compiled, warm) is reported.")
FLAGS = flags.FLAGS


def _time(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / n


def matmul_peak(dtype=jnp.float32, n: int = 2048) -> float:
    """FLOP/s of an n x n matmul on the default device (best of 5 after a warm-up)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, b))
    return 2.0 * n ** 3 / min(_time(lambda: f(a, b), 3) for _ in range(5))


def load_config(spec: str):
    path, _, preset = spec.partition(":")
    mod = configlib.sibling_config(path, os.path.basename(path))
    c = mod.get_config(preset) if preset else mod.get_config()
    for kv in FLAGS.set:
        key, _, value = kv.partition("=")
        c.update_from_flattened_dict({key: _parse(value)})
    return c


def _parse(value: str):
    import ast  # pylint: disable=import-outside-toplevel
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


class JaxCase:
    """One config's training steps, phase by phase, on real pipeline batches."""

    def __init__(self, spec: str):
        self.config = load_config(spec)
        self.exp = train.Experiment(self.config, FLAGS.workdir)
        it = data_lib.make_train_iterator(self.config.data,
                                          global_batch_size=int(self.config.batch_size),
                                          seed=int(self.config.seed))
        t = time.perf_counter()
        host = [self.exp.host_batch(it) for _ in range(4)]
        self.data_ms = (time.perf_counter() - t) / 4 * 1e3   # the input pipeline, per batch
        self.batches = [parallel.shard_batch(b, self.exp.mesh) for b in host[:2]]
        m = self.exp.method
        self.phases = sorted({m.phase(0)} | {m.phase(b) for b in m.phase_boundaries()})
        self.states = self.exp.init_states()
        self.images_per_step = int(self.config.batch_size) * self.exp.batches_per_step
        self.compile_s, self.cost, self.hlo = {}, {}, {}

    def prepare(self, phase: int):
        """Compiles the phase's step (cost analysis, one step): `compile_s`, `cost`, `hlo`
        (the optimised program's text, for --profile)."""
        fn = self.exp.step_fn(phase)
        t = time.perf_counter()
        compiled = fn.lower(compute_lib.abstract(self.states),
                            compute_lib.abstract(self.batches[0]),
                            jax.ShapeDtypeStruct(self.exp.base_key.shape,
                                                 self.exp.base_key.dtype)).compile()
        cost = compute_lib.compiled_cost(compiled)
        self.states, metrics, _ = fn(self.states, self.batches[0], self.exp.base_key)
        jax.block_until_ready(metrics)
        self.compile_s[phase], self.cost[phase] = time.perf_counter() - t, cost
        if FLAGS.profile:
            self.hlo[phase] = compiled.as_text()

    def round(self, phase: int, steps: int) -> float:
        fn = self.exp.step_fn(phase)
        t = time.perf_counter()
        for i in range(steps):
            self.states, metrics, _ = fn(self.states, self.batches[i % 2],
                                         jax.random.fold_in(self.exp.base_key, i))
        jax.block_until_ready((self.states, metrics))
        return (time.perf_counter() - t) / steps


def run_configs():
    # The peak in the first config's compute dtype (--set applies to every config).
    dtype = precision.compute_dtype(
        load_config(FLAGS.config[0]).model.get("compute_dtype", "float32"))
    peak = matmul_peak(dtype)
    dev = jax.devices()[0]
    print(f"devices: {jax.device_count()} x {dev.device_kind} ({dev.platform}); "
          f"matmul peak {peak / 1e9:.0f} GFLOP/s ({jnp.dtype(dtype).name}, 2048x2048)")
    torch_ref = None
    if FLAGS.compare == "torch":
        import torch_reference as torch_ref  # pylint: disable=import-outside-toplevel
        print(f"PyTorch {torch_ref.torch.__version__}, {torch_ref.torch.get_num_threads()} "
              "threads")
    header = ("| config | phase | compile s | s/step | images/s | GFLOP/step | GFLOP/s | "
              "% of peak |" + (" PyTorch s/step | channels_last s/step | ratio to the faster |"
                               if torch_ref else ""))
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    # (label suffix, context manager factory) per variant of nets.layers' choices.
    variants = [("", contextlib.nullcontext)]
    if FLAGS.also_plain_xla:
        variants.append((", XLA convolutions", layers.plain_xla))
    if FLAGS.also_layers:
        kwargs = {k: v for k, _, v in (kv.partition("=") for kv in FLAGS.also_layers)}
        known = tuple(inspect.signature(layers.override).parameters)
        if any(k not in known or not v.isdigit() for k, v in kwargs.items()):
            raise app.UsageError(f"--also_layers: KEY=INTEGER with KEY one of {', '.join(known)}; "
                                 f"got {','.join(FLAGS.also_layers)}")
        kwargs = {k: int(v) for k, v in kwargs.items()}
        variants.append((", " + ", ".join(FLAGS.also_layers),
                         lambda: layers.override(**kwargs)))
    profiles, loops, pipelines, step_s = [], [], [], {}
    for spec in FLAGS.config:
        cases = []
        for suffix, context in variants:
            with context():
                case = JaxCase(spec)
                for phase in case.phases:
                    case.prepare(phase)   # traced (and compiled) inside the block
            label = spec + suffix
            cases.append((label, case))
        print(f"{spec}: batch {case.config.batch_size}, image {case.exp.spec.image_shape}, "
              f"input pipeline {case.data_ms:.1f} ms/batch (not in the step times)")
        for phase in cases[0][1].phases:
            refs = (torch_ref.case_for(cases[0][1].config, phase) or {}) if torch_ref else {}
            times = {label: [] for label, _ in cases}
            torch_t = {name: [] for name in refs}
            for _ in range(FLAGS.rounds):   # alternating rounds: the same machine state
                for label, case in cases:
                    times[label].append(case.round(phase, FLAGS.steps))
                for name, ref in refs.items():
                    torch_t[name].append(ref.round(FLAGS.steps))
            for label, case in cases:
                s = statistics.median(times[label])
                cost = case.cost[phase]
                row = (f"| {label} | {phase} | {case.compile_s[phase]:.1f} | {s:.3f} | "
                       f"{case.images_per_step / s:.0f} | {cost.flops / 1e9:.2f} | "
                       f"{cost.flops / s / 1e9:.1f} | {100 * cost.flops / s / peak:.0f} |")
                if torch_ref:
                    if not refs:
                        row += " - | - | - |"
                    else:
                        ts = [statistics.median(torch_t[n]) for n in refs]
                        row += (" " + " | ".join(f"{t:.3f}" for t in ts)
                                + f" | {s / min(ts):.2f}x |")
                print(row, flush=True)
            if FLAGS.profile:
                profiles.append(_profile(cases[0], phase, statistics.median(times[cases[0][0]]),
                                         refs, {n: statistics.median(torch_t[n]) for n in refs}))
            step_s[spec, phase] = statistics.median(times[cases[0][0]])
        loops.extend(_loop_rows(spec, cases[0][1], step_s))
        if FLAGS.pipeline:
            pipelines.extend(_pipeline_rows(spec, cases[0][1]))
    if pipelines:
        _print_table(
            f"The input pipeline (--pipeline), {os.cpu_count()} host cores; an H100 assumed at "
            f"{FLAGS.h100_flops / 1e12:.0f} TFLOP/s (--h100_flops) consumes FLOP/s / (FLOPs "
            "per image) images/s, FLOPs of phase 0's step.",
            ("config", "image", "memory_mb", "images/s epoch 1", "images/s epochs 2-3",
             "per core, epochs 2-3", "H100 would consume"), pipelines)
    if loops:
        _print_table(
            "The trainer's time per step against the compiled steps' (--loop): the difference "
            "is the host's work per step, the input pipeline's included.",
            ("config", "steps/call", "trainer s/step", "compiled s/step", "host s/step",
             "host share", "input pipeline s/batch"), loops)
    for text in profiles:
        print(text, flush=True)


def _print_table(title: str, columns, rows) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print(row, flush=True)


def _loop_rows(spec: str, case: JaxCase, step_s: dict) -> list[str]:
    """--loop: the trainer on `spec` for two intervals of --loop_steps steps per
    steps_per_call value (a scratch workdir, no evaluation, grids or checkpoints but the
    last), its second interval's time per step against the compiled steps of those steps'
    phases (timed above)."""
    import json  # pylint: disable=import-outside-toplevel
    import shutil  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    rows = []
    for value in FLAGS.loop:
        per_call = int(value)
        n = -(-FLAGS.loop_steps // per_call) * per_call   # a multiple of the steps per call
        config = load_config(spec)
        config.update_from_flattened_dict({
            "num_steps": 2 * n, "num_epochs": 0.0, "steps_per_call": per_call,
            "log_every_steps": n, "eval_every_steps": 0, "grids_every_steps": 0,
            "eval_at_fractions": (), "evaluate_at_end": False, "grid_size": 0,
            "checkpoint.every_steps": 2 * n, "checkpoint.asynchronous": False})
        for key in ("flops", "images", "steps"):
            config.budget[key] = None
        workdir = tempfile.mkdtemp(prefix="latent_jax_loop_")
        try:
            train.train_and_evaluate(config, workdir)
            with open(os.path.join(workdir, "metrics.jsonl")) as f:
                last = [json.loads(line) for line in f][-1]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        trainer = 1.0 / last["perf/steps_per_sec"]
        m = case.exp.method
        compiled = statistics.mean(step_s[spec, m.phase(s)] for s in range(n, 2 * n))
        rows.append(f"| {spec} | {per_call} | {trainer:.4f} | {compiled:.4f} | "
                    f"{trainer - compiled:.4f} | {100 * (trainer - compiled) / trainer:.0f}% | "
                    f"{case.data_ms / 1e3 * case.exp.batches_per_step:.4f} |")
    return rows


def _pipeline_rows(spec: str, case: JaxCase) -> list[str]:
    """--pipeline: the training iterator of `spec` (its read threads and prefetch), with the
    training split cut to --pipeline batches (synthetic data), over three epochs: the first
    reads (renders or decodes) every example, the next two are served from memory unless
    memory_mb is 0."""
    n = int(FLAGS.pipeline)
    rows = []
    for memory_mb in (0, 1024):
        config = load_config(spec)
        batch = int(config.batch_size)
        if config.data.name in ("synthetic_faces", "synthetic_identities"):
            config.data.synthetic.num_train = n * batch
        config.data.memory_mb = memory_mb
        it = data_lib.make_train_iterator(config.data, global_batch_size=batch,
                                          seed=int(config.seed))
        per_epoch = max(1, data_lib.get_data_spec(config.data).num_examples["train"] // batch)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(per_epoch):
                next(it)
            times.append((time.perf_counter() - t) / (per_epoch * batch))
        first, later = 1.0 / times[0], 2.0 / (times[1] + times[2])
        cost = case.cost[case.phases[0]]
        consume = FLAGS.h100_flops / (cost.flops / case.images_per_step)
        rows.append(f"| {spec} | {config.data.image_size} | {memory_mb} | {first:.0f} | "
                    f"{later:.0f} | {later / os.cpu_count():.0f} | {consume:.0f} |")
    return rows


def _profile(labelled_case, phase: int, step_seconds: float, refs, torch_seconds) -> str:
    """--profile: where one phase's step time goes (latent_jax.profiling), and PyTorch's
    operator time by the same categories for the faster of its layouts."""
    from latent_jax import profiling  # pylint: disable=import-outside-toplevel

    label, case = labelled_case
    times = profiling.op_times(lambda: case.round(phase, 1), case.hlo[phase], FLAGS.steps)
    text = f"\n### {label}, phase {phase}: where the step's time goes\n\n"
    text += profiling.summary(times, step_seconds)
    if refs:
        fastest = min(refs, key=lambda n: torch_seconds[n])
        by_kind = refs[fastest].profile(FLAGS.steps)
        ours: dict[str, float] = {}
        for t in times:
            if t.category == "convolution":
                key = f"convolution, {t.direction or 'backward'}"
            elif t.direction == "update" and t.category != "dot":
                key = "update"
            else:
                key = t.category
            ours[key] = ours.get(key, 0.0) + t.seconds
        text += (f"\nNext to PyTorch ({fastest}), each operation's time summed per step by "
                 "kind (PyTorch runs its operators one after another; XLA may run independent "
                 "ones at the same time, so its sum can exceed the step's wall time):\n\n"
                 "| kind | latent_jax ms | PyTorch ms | ratio |\n|---|---|---|---|\n")
        # latent_jax computes the convolutions on small maps as im2col matmuls (nets.layers),
        # which the profile counts as dots: one row adds both kinds up, the last one every kind.
        def heavy(by_key):
            return sum(v for k, v in by_key.items() if k.startswith(("convolution", "dot")))

        rows = [(k, ours.get(k, 0.0), by_kind.get(k, 0.0))
                for k in sorted(set(ours) | set(by_kind), key=lambda k: -ours.get(k, 0.0))]
        rows += [("convolutions and dots together", heavy(ours), heavy(by_kind)),
                 ("all", sum(ours.values()), sum(by_kind.values()))]
        for key, a, b in rows:
            ratio = f"{a / b:.2f}x" if b > 0 else "-"
            text += f"| {key} | {1e3 * a:.1f} | {1e3 * b:.1f} | {ratio} |\n"
    return text


INTROVAE_64 = [  # (map, C_in, C_out, kernel) of IntroVAC's nets at 64x64, channels 32..512
    (64, 3, 32, 5), (32, 32, 64, 3), (32, 64, 64, 3), (16, 64, 128, 3), (16, 128, 128, 3),
    (8, 128, 256, 3), (8, 256, 256, 3), (4, 256, 512, 3), (4, 512, 512, 3), (2, 512, 512, 3),
    (64, 32, 3, 5)]


def run_conv_shapes():
    def xla(x, k):
        pad = k.shape[0] // 2
        return jax.lax.conv_general_dilated(x, k, (1, 1), ((pad, pad), (pad, pad)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def matmul(x, k):
        pad = k.shape[0] // 2
        return layers.im2col_conv(x, k, (1, 1), ((pad, pad), (pad, pad)))

    b = FLAGS.conv_batch
    print(f"\nconvolution shapes, batch {b}, ms (forward / forward+backward to input and kernel)")
    print("| map | C_in -> C_out | kernel | XLA conv fwd | XLA conv f+b | im2col fwd | "
          "im2col f+b |")
    print("|---|---|---|---|---|---|---|")
    for size, cin, cout, k in INTROVAE_64:
        x = jax.random.normal(jax.random.key(0), (b, size, size, cin))
        w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05
        cells = []
        for fn in (xla, matmul):
            fwd = jax.jit(fn)
            fb = jax.jit(jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))
            for f in (fwd, fb):
                jax.block_until_ready(f(x, w))
                cells.append(min(_time(lambda f=f: f(x, w), 2) for _ in range(3)) * 1e3)
        print(f"| {size}x{size} | {cin} -> {cout} | {k}x{k} | "
              + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)


def _training_seconds(run_dir) -> tuple[float, str]:
    """Wall time the run spent training: the span of metrics.jsonl's training rows, scaled
    from the logged steps to all of them (compilation excluded), and how it was measured."""
    import json  # pylint: disable=import-outside-toplevel
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if "train/phase" in r or any(k.startswith("loss/") for k in r)]
    if len(rows) < 2:
        raise app.UsageError(f"{run_dir}/metrics.jsonl has fewer than two training rows")
    first, last = rows[0], rows[-1]
    span = last["time"] - first["time"]
    return (span * last["step"] / max(last["step"] - first["step"], 1),
            f"metrics.jsonl, steps {first['step']}..{last['step']} scaled to {last['step']}")


def run_cli_and_report(spec: str, run_dir: str):
    """CLI start-up on a trained checkpoint, and the evaluation's time by part."""
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel
    from etils import epath  # pylint: disable=import-outside-toplevel
    from latent_jax import imageio  # pylint: disable=import-outside-toplevel
    from latent_jax.evaluate import report as report_lib  # pylint: disable=import-outside-toplevel

    run = epath.Path(run_dir)
    latest = run / "eval" / "latest.json"
    if not (run / "checkpoints").exists():
        raise app.UsageError(f"--run_dir={run_dir} holds no checkpoints/")
    config = load_config(spec)
    label = list(config.data.labels)[0]
    scratch = epath.Path(tempfile.mkdtemp(prefix="latent_jax_cli_"))
    image = next(iter(data_lib.iterate_eval_batches(config.data, "test", 1)))["image"][0]
    imageio.save_png(scratch / "input.png", image)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = [sys.executable, "-m", "latent_jax.main", f"--config={spec}", f"--workdir={run_dir}"]
    modes = {"edit (1 image)": ["--mode=edit", f"--images={scratch / 'input.png'}",
                                f"--attributes=+{label}"],
             "sample (16)": ["--mode=sample", f"--attributes=+{label}"]}
    print(f"CLI start-up on {run_dir} ({spec}), wall seconds of a fresh process, median of "
          f"{FLAGS.cli_rounds}:")
    for name, extra in modes.items():
        times = []
        for k in range(FLAGS.cli_rounds):
            cmd = base + extra + [f"--output_dir={scratch / name.split()[0] / str(k)}"]
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            times.append(time.perf_counter() - t)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        print(f"  {name:16s} {statistics.median(times):6.2f} s   (calls: "
              + ", ".join(f"{t:.2f}" for t in times) + ")")
    if not latest.exists():
        print(f"no evaluation report in {run}/eval: run --mode=evaluate first for its breakdown")
        return
    report = json.loads(latest.read_text())
    total = float(report["run"]["seconds"])
    parts = report["results"].get("timing_seconds", {})
    train_s, how = _training_seconds(run)
    print(f"evaluation at step {report['run']['step']}: {total:.1f} s = "
          f"{100 * total / train_s:.1f} % of training ({train_s:.0f} s; {how})")
    for k, v in parts.items():
        note = report_lib.judge_timing_note(report["run"]) if k == "judge" else ""
        print(f"  {k:16s} {v:7.1f} s{note}")
    print(f"  {'rest':16s} {total - sum(parts.values()):7.1f} s (writing the report and figures)")
    if "judge" not in parts:
        print("  (this report predates the judge's timing: its time is in 'rest')")


def main(argv):
    del argv
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if FLAGS.run_dir:
        if not FLAGS.config:
            raise app.UsageError("--run_dir needs the run's --config")
        run_cli_and_report(FLAGS.config[0], FLAGS.run_dir)
    elif FLAGS.config:
        run_configs()
    if FLAGS.conv_shapes:
        run_conv_shapes()
    if not FLAGS.config and not FLAGS.conv_shapes:
        raise app.UsageError("give --config (repeatable) and/or --conv_shapes")


if __name__ == "__main__":
    app.run(main)
