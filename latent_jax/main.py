"""Entry point.

    python -m latent_jax.main --config=configs/introvac.py[:preset] --workdir=DIR \
        [--config.key=value ...] [--mode=train|evaluate|edit|sample]

train     trains (resuming from DIR's latest checkpoint), then evaluates
evaluate  writes the evaluation report of DIR's latest checkpoint
edit      --images=a.png,b.jpg --attributes=+Eyeglasses,-Smiling [--strength=S] [--paste_back]
          writes each edited image (model resolution and an upscaled copy) and labelled grids
          (input / reconstruction / edit) to a new folder DIR/edits/<date-time>
sample    --attributes=+Eyeglasses [--num_samples=N] [--seed=K] writes class-conditional
          samples and a grid with the rejected ones framed to DIR/samples/<date-time> (labels
          not named are drawn from the test split's label rows)
inpaint   --images=a.png --mask=right_half|eyes|nose_mouth|bottom_half|FILE.png [--fill=0.5|mean]:
          the region filled (mid-grey by default), encoded, decoded and pasted back (Lr-LiVAE
          Sec. 4.5), any method
walk      [--labels=Male,Smiling] [--pair=Male,Eyeglasses] [--num_images=6] [--walk_steps=7]
          latent walks of methods that declare `walk` (CCVAE, DIVA) to DIR/walks/<date-time>
`--output_dir` replaces the dated folder. Flags are checked against the config and the method's
capabilities before anything is loaded.
"""

from __future__ import annotations

import glob
import logging as std_logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
from ml_collections import config_flags

from latent_jax import errors
from latent_jax import paths
from latent_jax.errors import ConfigError

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, grids and reports.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "edit", "sample", "walk", "inpaint"],
                  "What to do.")
flags.DEFINE_string("mask", "right_half", "inpaint: right_half, eyes, nose_mouth, bottom_half "
                    "or a PNG file (white = missing).")
flags.DEFINE_string("fill", "0.5", "inpaint: what fills the missing region before encoding: a "
                    "grey level in [0, 1] (0.5: the authors' 0 in [-1, 1]) or 'mean' (the "
                    "image's mean colour outside the mask).")
flags.DEFINE_list("images", [], "edit: image files (PNG/JPEG) or glob patterns.")
flags.DEFINE_list("attributes", [], "edit/sample: +Name to add/set, -Name to remove/unset.")
flags.DEFINE_float("strength", None, "edit: edit strength (None: the method's default).")
flags.DEFINE_bool("paste_back", False, "edit: also paste each edited face back into its "
                  "original image (the inverse of the crop).")
flags.DEFINE_integer("num_samples", 16, "sample: number of samples.")
flags.DEFINE_integer("seed", 0, "sample: seed of the samples.")
flags.DEFINE_list("labels", [], "walk: labels to walk (default: every binary label).")
flags.DEFINE_list("pair", [], "walk: two labels for a 2-D walk of the first image.")
flags.DEFINE_integer("num_images", 6, "walk: test images (rows).")
flags.DEFINE_integer("walk_steps", 7, "walk: steps of each walk.")
flags.DEFINE_integer("grid_columns", 8, "edit/sample: at most this many faces a grid page.")
flags.DEFINE_string("output_dir", None, "edit/sample/walk: output directory (default: a new "
                    "folder WORKDIR/<mode>s/<date-time> per call).")
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/introvac.py:synthetic.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

FLAGS = flags.FLAGS


def parse_attribute_changes(items, label_names) -> dict[str, float]:
    """['+Eyeglasses', '-Smiling'] -> {'Eyeglasses': 1.0, 'Smiling': -1.0}."""
    out = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        if name not in label_names:
            raise ConfigError(f"--attributes: {name!r} is not a label of this model; its labels "
                             f"are {', '.join(label_names)}")
        out[name] = 1.0 if sign == "+" else -1.0
    if not out:
        raise ConfigError("--attributes: name at least one label, e.g. --attributes=+"
                         + label_names[0])
    return out


def _expand_images(patterns) -> list[str]:

    files = []
    for p in patterns:
        if paths.is_remote(p):
            parent, _, name = p.rpartition("/")
            matches = sorted(str(m) for m in epath.Path(parent).glob(name))
        else:
            matches = sorted(glob.glob(p))
        if not matches:
            raise ConfigError(f"--images: no file matches {p!r}")
        files.extend(matches)
    return files


def _require(config, capability: str, mode: str) -> None:
    """The method must declare the capability a mode needs; checked before anything loads."""
    from latent_jax import methods

    cls = methods.method_class(config.method)
    if capability not in cls.capabilities:
        raise ConfigError(f"--mode={mode}: method {config.method!r} has no {capability!r} "
                          f"capability (it declares {', '.join(sorted(cls.capabilities))})")


def _output_dir(kind: str, workdir: str):
    """--output_dir, or a new folder per call, WORKDIR/<kind>/<date-time>[-k], so that a call
    never overwrites an earlier one's outputs; checked before anything is loaded."""
    import time


    from latent_jax import configlib

    if FLAGS.output_dir:
        out = epath.Path(FLAGS.output_dir)
    else:
        base = epath.Path(workdir) / kind / time.strftime("%Y%m%d-%H%M%S")
        out, k = base, 1
        while out.exists():
            k += 1
            out = base.parent / f"{base.name}-{k}"
    configlib.check_writable_dir(out, "--output_dir")
    return out


def _pages(n: int):
    """Column ranges of the grid pages: at most --grid_columns faces a page."""
    per = max(1, int(FLAGS.grid_columns))
    return [(a, min(a + per, n)) for a in range(0, n, per)]


def _save_grid_pages(out_dir, stem: str, rows, row_labels, column_labels, marks=None):
    from latent_jax import imageio

    written = []
    pages = _pages(len(rows[0]))
    for k, (a, b) in enumerate(pages):
        grid = imageio.labelled_grid([r[a:b] for r in rows], row_labels, column_labels[a:b],
                                     marks=None if marks is None else marks[:, a:b])
        name = f"{stem}.png" if len(pages) == 1 else f"{stem}_page{k + 1}.png"
        written.append(imageio.save_png(out_dir / name, grid))
    return written


def _short(name: str, n: int = 14) -> str:
    return name if len(name) <= n else name[:n - 1] + "~"


def run_edit(config, workdir):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from latent_jax import imageio, train

    if not FLAGS.images:
        raise ConfigError("--images: give at least one image file for --mode=edit")
    _require(config, "edit", "edit")
    files = _expand_images(FLAGS.images)
    changes = parse_attribute_changes(FLAGS.attributes, tuple(config.data.labels))
    out_dir = _output_dir("edits", workdir)
    exp, states, step = train.load_for_inference(config, workdir)
    method = exp.method
    size = exp.spec.image_shape[0]
    loaded = [imageio.load_image_with_crop(f, size) for f in files]
    x = np.stack([img for img, _ in loaded])
    c = np.zeros((len(files), method.num_labels), np.float32)
    for name, v in changes.items():
        c[:, method.label_names.index(name)] = v
    # One compilation for both (start-up time is mostly compiling).
    both = jax.jit(lambda s, xx, cc: (method.edit(s, xx, cc, FLAGS.strength),
                                      method.reconstruct(s, xx)))
    out, recon = (np.asarray(a) for a in both(states, jnp.asarray(x), jnp.asarray(c)))
    tag = "_".join(("add" if v > 0 else "remove") + "_" + k for k, v in changes.items())
    label = " ".join(("+" if v > 0 else "-") + k for k, v in changes.items())
    stems = [epath.Path(f).stem for f in files]
    for i, (f, img, (_, crop)) in enumerate(zip(files, out, loaded)):
        # The index keeps a/face.png and b/face.jpg apart.
        base = f"{i:03d}_{stems[i]}_{tag}"
        imageio.save_png(out_dir / f"{base}.png", img)
        imageio.save_png(out_dir / f"{base}_large.png", imageio.upscale(img, 256))
        if FLAGS.paste_back:
            imageio.save_png(out_dir / f"{base}_in_frame.png", imageio.paste_back(f, img, crop))
        logging.info("%s: %s", f, imageio.describe_crop(crop))
    grids = _save_grid_pages(out_dir, f"grid_{tag}", [x, recon, out],
                             ["input", "reconstruction", label],
                             [_short(f"{i}: {s}") for i, s in enumerate(stems)])
    print(f"edited {len(files)} images ({label}) with the checkpoint of step {step}, at the "
          f"model's {size}x{size}:")
    for f, (_, crop) in list(zip(files, loaded))[:10]:
        print(f"  {f}: {imageio.describe_crop(crop)}")
    if len(files) > 10:
        print(f"  ... and {len(files) - 10} more (all in the log)")
    extra = ", *_in_frame.png (pasted back)" if FLAGS.paste_back else ""
    print(f"wrote to {out_dir}: NNN_<name>_{tag}.png (model resolution), *_large.png "
          f"(upscaled){extra}, and {len(grids)} labelled grid page(s) {epath.Path(grids[0]).name}"
          + ("..." if len(grids) > 1 else ""))


def run_sample(config, workdir):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from latent_jax.data import pipeline as data_lib
    from latent_jax import train
    from latent_jax import imageio

    _require(config, "sample", "sample")
    n = int(FLAGS.num_samples)
    if n <= 0:
        raise ConfigError("--num_samples: must be positive")
    changes = parse_attribute_changes(FLAGS.attributes, tuple(config.data.labels))
    out_dir = _output_dir("samples", workdir)
    exp, states, step = train.load_for_inference(config, workdir)
    method = exp.method
    rows = next(iter(data_lib.iterate_eval_batches(exp.data, "test", n)))["label"][:n]
    y = np.array(rows, np.float32)
    if y.shape[0] < n:
        y = np.resize(y, (n, y.shape[1]))
    for name, v in changes.items():
        y[:, method.label_names.index(name)] = 1.0 if v > 0 else 0.0
    rng = jax.random.fold_in(jax.random.fold_in(exp.base_key, 0x5A3), int(FLAGS.seed))
    images, accepted = jax.jit(method.sample)(states, rng, jnp.asarray(y))
    images, accepted = np.asarray(images), np.asarray(accepted, bool)
    tag = "_".join(("with" if v > 0 else "without") + "_" + k for k, v in changes.items())
    label = " ".join(("+" if v > 0 else "-") + k for k, v in changes.items())
    for i, img in enumerate(images):
        suffix = "" if accepted[i] else "_rejected"
        imageio.save_png(out_dir / f"{tag}_{i:03d}{suffix}.png", img)
    columns = [f"{i}" if accepted[i] else f"{i} rejected" for i in range(n)]
    grids = _save_grid_pages(out_dir, f"grid_{tag}", [images], [label], columns,
                             marks=~accepted[None])
    print(f"sampled {n} images ({label}, seed {FLAGS.seed}) with the checkpoint of step {step}: "
          f"{int(accepted.sum())} of {n} accepted by the model's own check (yield "
          f"{accepted.mean():.2f}); rejected ones are framed in red in the grid")
    print(f"wrote to {out_dir}: {tag}_NNN[_rejected].png and {len(grids)} grid page(s)")


def run_inpaint(config, workdir):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from latent_jax import imageio, train
    from latent_jax.evaluate import inpaint as inpaint_lib

    if not FLAGS.images:
        raise ConfigError("--images: give at least one image file for --mode=inpaint")
    files = _expand_images(FLAGS.images)
    size = int(config.data.image_size)
    fill = inpaint_lib.parse_fill(FLAGS.fill)
    is_file = FLAGS.mask not in inpaint_lib.MASK_NAMES
    m = (inpaint_lib.load_mask(FLAGS.mask, size) if is_file
         else inpaint_lib.mask(FLAGS.mask, size, str(config.data.name)))
    out_dir = _output_dir("inpaintings", workdir)
    exp, states, step = train.load_for_inference(config, workdir)
    loaded = [imageio.load_image_with_crop(f, size) for f in files]
    x = np.stack([img for img, _ in loaded])
    recon = jax.jit(exp.method.reconstruct)
    corrupted, filled = inpaint_lib.inpaint(
        lambda im: np.asarray(recon(states, jnp.asarray(im))), x, m, fill)
    tag = "inpaint_" + ("mask" if is_file else FLAGS.mask)
    stems = [epath.Path(f).stem for f in files]
    for i, img in enumerate(filled):
        imageio.save_png(out_dir / f"{i:03d}_{stems[i]}_{tag}.png", img)
        imageio.save_png(out_dir / f"{i:03d}_{stems[i]}_{tag}_large.png",
                         imageio.upscale(img, 256))
    grids = _save_grid_pages(out_dir, f"grid_{tag}", [x, corrupted, filled],
                             ["input", "masked", "inpainted"],
                             [_short(f"{i}: {s}") for i, s in enumerate(stems)])
    err = float(np.mean(np.square(filled - x)[:, m]))
    print(f"inpainted {len(files)} images ({FLAGS.mask}, {m.mean():.0%} of the image, filled "
          f"with {fill}) with the "
          f"checkpoint of step {step}: MSE inside the mask {err:.4f}")
    print(f"wrote to {out_dir}: NNN_<name>_{tag}.png, *_large.png and {len(grids)} grid page(s)")


def run_walk(config, workdir):
    import jax
    import numpy as np

    from latent_jax import imageio, train
    from latent_jax.data import labels as labels_lib
    from latent_jax.data import pipeline as data_lib

    _require(config, "walk", "walk")
    names = tuple(config.data.labels)
    chosen = list(FLAGS.labels) or [n for n in names
                                    if labels_lib.label_kind(n) == labels_lib.BINARY]
    for name in chosen + list(FLAGS.pair):
        if name not in names:
            raise ConfigError(f"--labels/--pair: {name!r} is not a label of this model; its "
                              f"labels are {', '.join(names)}")
    if FLAGS.pair and len(FLAGS.pair) != 2:
        raise ConfigError("--pair: name two labels, e.g. --pair=Male,Eyeglasses")
    steps = int(FLAGS.walk_steps)
    if steps < 2:
        raise ConfigError("--walk_steps: at least 2")
    out_dir = _output_dir("walks", workdir)
    exp, states, step = train.load_for_inference(config, workdir)
    method = exp.method
    batch = next(iter(data_lib.iterate_eval_batches(exp.data, "test", int(FLAGS.num_images))))
    x = np.asarray(batch["image"][:int(FLAGS.num_images)])
    walk = jax.jit(method.latent_walk, static_argnums=(2, 3))
    written = []
    for name in chosen:
        imgs = np.asarray(walk(states, x, names.index(name), steps))          # [T, B, ...]
        grid = imageio.labelled_grid(
            [np.concatenate([x[b:b + 1], imgs[:, b]]) for b in range(len(x))],
            [f"image {b}" for b in range(len(x))],
            ["input"] + [f"{name} {t / (steps - 1):.2f}" if t in (0, steps - 1) else ""
                         for t in range(steps)])
        written.append(imageio.save_png(out_dir / f"walk_{name}.png", grid))
    if FLAGS.pair:
        a, b = FLAGS.pair
        pair = jax.jit(method.latent_walk_pair, static_argnums=(2, 3, 4))
        imgs = np.asarray(pair(states, x[:1], names.index(a), names.index(b), steps))
        grid = imageio.labelled_grid([imgs[i, :, 0] for i in range(steps)],
                                     [f"{a} {i / (steps - 1):.2f}" for i in range(steps)],
                                     [f"{b} {j / (steps - 1):.2f}" for j in range(steps)])
        written.append(imageio.save_png(out_dir / f"walk_{a}__{b}.png", grid))
    print(f"wrote {len(written)} latent walk grid(s) of the checkpoint of step {step} to "
          f"{out_dir}: {', '.join(epath.Path(w).name for w in written)}")


def _override_keys(argv) -> list[str]:
    """The dotted keys of the `--config.<key>=value` overrides in argv, in order."""
    keys = []
    for a in argv[1:]:
        if a.startswith("--config."):
            keys.append(a[len("--config."):].split("=", 1)[0])
    return keys


def _flag_error_line(e: BaseException, argv) -> str:
    """One readable line for a failure while parsing the flags and loading the config."""
    text = str(e).strip()
    if isinstance(e, (AttributeError, KeyError)) or "Unknown command line flag 'config." in text:
        quoted = re.findall(r"'([^']+)'", text)
        name = (quoted[-1] if quoted else text.strip("\"'")).split(".")[-1]
        for key in _override_keys(argv):
            if key.split(".")[-1] == name:
                return (f"--config.{key}: no such key in the config (its method does not read "
                        "it, or it is misspelt)")
        return f"--config: no such key {name!r} in the config"
    if "No such file or directory" in text or "Failed loading config file" in text:
        path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")
        return f"--config: cannot load the config file {path.split(':')[0]!r} (no such file?)"
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for l in reversed(lines):   # the config file's own message, e.g. an unknown preset
        for prefix in ("ValueError: ", "ConfigError: ", "latent_jax.errors.ConfigError: "):
            if l.startswith(prefix):
                return l[len(prefix):]
    return lines[0] if lines else type(e).__name__


def _config_file_defaults(argv):
    """The config as the config file gives it (before the overrides), or None."""
    import importlib.util

    spec_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if not spec_arg:
        return None
    path, _, preset = spec_arg.partition(":")
    spec = importlib.util.spec_from_file_location("latent_jax_config_defaults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def _check_override_types(defaults, argv) -> None:
    """A tuple override must be a tuple whose elements have the kind of the config file's
    elements (numbers for channels), so that `--config.model.channels=abc` is refused here and
    not inside tracing."""
    import ast
    import numbers

    def kind(v):
        return "number" if isinstance(v, numbers.Number) and not isinstance(v, bool) else \
            type(v).__name__

    for key in _override_keys(argv):
        try:
            value = defaults
            for part in key.split("."):
                value = value[part]
        except (KeyError, AttributeError, TypeError):
            continue
        if not isinstance(value, (tuple, list)):
            continue
        raw = next(a.split("=", 1)[1] for a in argv if a.startswith(f"--config.{key}="))
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            parsed = raw
        if isinstance(parsed, numbers.Number):
            parsed = (parsed,)
        example = f"--config.{key}=(8,16) or --config.{key}='(\"a\", \"b\")'"
        if raw.strip() and not isinstance(parsed, (tuple, list)):
            raise ConfigError(f"--config.{key}: {raw!r} is not a tuple; write e.g. {example}")
        expected = {kind(v) for v in value}
        if len(expected) == 1 and any(kind(v) not in expected for v in parsed):
            raise ConfigError(f"--config.{key}: {raw!r} holds {sorted({kind(v) for v in parsed})} "
                              f"where the config holds {expected.pop()} values")


def _last_override_wins(argv) -> list[str]:
    """Drops all but the last `--config.<key>=...` of each key: absl would concatenate repeated
    tuple overrides ((8,16) then (4,8) gave channels (8, 16, 4, 8))."""
    last = {}
    for i, a in enumerate(argv):
        if a.startswith("--config."):
            last[a.split("=", 1)[0]] = i
    return [a for i, a in enumerate(argv)
            if not a.startswith("--config.") or last[a.split("=", 1)[0]] == i]


def parse_flags(argv):
    """absl's flag parsing, with one line (not a traceback) for a missing config file, an unknown
    preset or key, or a tuple override that is no tuple. A repeated override: the last wins."""
    argv = _last_override_wins(argv)
    try:
        rest = FLAGS(argv)
        config = FLAGS.config
        if config is None:
            raise flags.Error("--config: no config file given")
        config.get("method")   # a config file that failed to load raises here
        _check_override_types(_config_file_defaults(argv), argv)
        return rest
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
    except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError) as e:
        print(f"error: {_flag_error_line(e, argv)}", file=sys.stderr)
    sys.exit(2)


class _QuietLibraries(std_logging.Filter):
    """Drops the INFO chatter of Orbax, grain and tfds (warnings and errors still show)."""

    _NOISY = (os.sep + "orbax" + os.sep, os.sep + "grain" + os.sep,
              os.sep + "tensorflow_datasets" + os.sep)

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or not any(
            s in record.pathname for s in self._NOISY)


class _OneLineLibraryErrors(std_logging.Filter):
    """Orbax's background threads log a failed write as an error with its traceback (dozens of
    lines per array); the trainer reports the failure itself in one line. A full disk's
    records are dropped; others keep their first line, without the traceback."""

    _ORBAX = os.sep + "orbax" + os.sep

    def filter(self, record):
        if record.levelno < std_logging.ERROR or self._ORBAX not in record.pathname:
            return True
        text = record.getMessage()
        if "No space left on device" in text or "RESOURCE_EXHAUSTED" in text:
            return False
        record.msg, record.args = text.splitlines()[0][:300] if text else text, ()
        record.exc_info, record.exc_text = None, None
        return True


class _NoAcceleratorProbe(std_logging.Filter):
    """Drops JAX's INFO line about backends it could not start ("Unable to initialize backend
    'tpu' ... libtpu.so") on machines without that accelerator; the platform JAX picks is
    unchanged."""

    def filter(self, record):
        return (record.levelno >= std_logging.WARNING
                or not str(record.msg).startswith("Unable to initialize backend"))


def main(argv):
    std_logging.getLogger("absl").addFilter(_QuietLibraries())
    std_logging.getLogger("absl").addFilter(_OneLineLibraryErrors())
    std_logging.getLogger("jax._src.xla_bridge").addFilter(_NoAcceleratorProbe())
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config, workdir = FLAGS.config, FLAGS.workdir
    from latent_jax import multihost

    # First of all, so that a failure on any process from here on reaches every process.
    try:
        multihost.initialize(config)
    except Exception as e:  # noqa: BLE001 - the coordinator's refusal or time-out
        print(f"error: --config.parallel: jax.distributed.initialize failed: "
              f"{' '.join(str(e).split())[:400]}", file=sys.stderr)
        sys.exit(1)
    multihost.watch_for_failures()
    from latent_jax import train
    from latent_jax.data.celeba import DatasetNotPreparedError

    try:
        if FLAGS.mode == "train":
            result = train.train_and_evaluate(config, workdir)
            if result and jax_process_index() == 0:
                print("final evaluation:", {k: round(v, 4) for k, v in result.items()
                                            if isinstance(v, float)})
        elif FLAGS.mode == "evaluate":
            result = multihost.on_process_0("evaluate",
                                            lambda: train.evaluate_only(config, workdir))
            if jax_process_index() == 0:
                print(f"wrote the evaluation report to {epath.Path(workdir) / 'eval'} "
                      "(report_<step>.json / .md, latest.json); headline: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in result.items()
                                  if isinstance(v, float) and "/" not in k))
        else:
            # Host work that writes files: process 0's alone in a job of several processes.
            run = {"edit": run_edit, "sample": run_sample, "inpaint": run_inpaint,
                   "walk": run_walk}[FLAGS.mode]
            multihost.on_process_0(FLAGS.mode, lambda: run(config, workdir))
    except train.Preempted as e:
        logging.warning("%s", e)
        print(str(e), file=sys.stderr)
        return 0
    except (errors.UserError, DatasetNotPreparedError, train.NonFiniteLossError) as e:
        multihost.report_failure(str(e))
        print(f"error: {e}", file=sys.stderr)
        multihost.exit_after_failure(1)
        if isinstance(e, errors.DiskFullError):
            # Writes that Orbax abandoned would print tracebacks while Python shuts down;
            # everything of ours is closed by now.
            sys.stdout.flush()
            sys.stderr.flush()
            logging.flush()
            os._exit(1)
        sys.exit(1)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (restore, compilation, --mode=evaluate): with
        # several processes the others must not wait for this one.
        if not multihost.is_multiprocess():
            raise
        multihost.report_failure("interrupted (Ctrl-C)")
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        multihost.exit_after_failure(130)
    except Exception as e:
        # A bug or a library failure: the traceback here, one line for the other processes.
        multihost.report_failure(f"{type(e).__name__}: {e}")
        if multihost.is_multiprocess():
            import traceback

            traceback.print_exc()
            multihost.exit_after_failure(1)
        raise


def jax_process_index() -> int:
    import jax

    return jax.process_index()


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
