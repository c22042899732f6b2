"""Entry point.

    python -m latent_jax.main --config=configs/introvac.py[:preset] --workdir=DIR \
        [--config.key=value ...] [--mode=train|evaluate|edit|sample]

train     trains (resuming from DIR's latest checkpoint), then evaluates
evaluate  writes the evaluation report of DIR's latest checkpoint
edit      --images=a.png,b.jpg --attributes=+Eyeglasses,-Smiling [--strength=S]
          writes edited images (and a before/after grid) to DIR/edits
sample    --attributes=+Eyeglasses [--num_samples=N] writes class-conditional samples to
          DIR/samples (labels not named are drawn from the test split's label rows)
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
from ml_collections import config_flags

from latent_jax import errors
from latent_jax import paths
from latent_jax.errors import ConfigError

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, grids and reports.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "edit", "sample"], "What to do.")
flags.DEFINE_list("images", [], "edit: image files (PNG/JPEG) or glob patterns.")
flags.DEFINE_list("attributes", [], "edit/sample: +Name to add/set, -Name to remove/unset.")
flags.DEFINE_float("strength", None, "edit: edit strength (None: the method's default).")
flags.DEFINE_integer("num_samples", 16, "sample: number of samples.")
flags.DEFINE_string("output_dir", None, "edit/sample: output directory (default under workdir).")
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
    from etils import epath

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


def _writable_output_dir(default_subdir: str, workdir: str):
    """--output_dir (or WORKDIR/<default_subdir>), checked before anything is loaded."""
    from etils import epath

    from latent_jax import configlib

    out = epath.Path(FLAGS.output_dir or os.path.join(workdir, default_subdir))
    configlib.check_writable_dir(out, "--output_dir")
    return out


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
    out_dir = _writable_output_dir("edits", workdir)
    exp, states, step = train.load_for_inference(config, workdir)
    method = exp.method
    size = exp.spec.image_shape[0]
    x = np.stack([imageio.load_image(f, size) for f in files])
    c = np.zeros((len(files), method.num_labels), np.float32)
    for name, v in changes.items():
        c[:, method.label_names.index(name)] = v
    edit = jax.jit(method.edit, static_argnames=("strength",))
    out = np.asarray(edit(states, jnp.asarray(x), jnp.asarray(c), strength=FLAGS.strength))
    recon = np.asarray(jax.jit(method.reconstruct)(states, jnp.asarray(x)))
    tag = "_".join(("add" if v > 0 else "remove") + "_" + k for k, v in changes.items())
    for f, img in zip(files, out):
        name = os.path.splitext(os.path.basename(f))[0]
        imageio.save_png(out_dir / f"{name}_{tag}.png", img)
    imageio.save_grid(out_dir / f"grid_{tag}.png",
                         np.concatenate([x, recon, out]), nrow=len(files))
    logging.info("wrote %d edited images (checkpoint step %d) to %s", len(files), step, out_dir)
    print(f"wrote {len(files)} edited images to {out_dir}")


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
    out_dir = _writable_output_dir("samples", workdir)
    exp, states, step = train.load_for_inference(config, workdir)
    method = exp.method
    rows = next(iter(data_lib.iterate_eval_batches(exp.data, "test", n)))["label"][:n]
    y = np.array(rows, np.float32)
    if y.shape[0] < n:
        y = np.resize(y, (n, y.shape[1]))
    for name, v in changes.items():
        y[:, method.label_names.index(name)] = 1.0 if v > 0 else 0.0
    rng = jax.random.fold_in(exp.base_key, 0x5A3)
    images, accepted = jax.jit(method.sample)(states, rng, jnp.asarray(y))
    images, accepted = np.asarray(images), np.asarray(accepted)
    tag = "_".join(("with" if v > 0 else "without") + "_" + k for k, v in changes.items())
    for i, img in enumerate(images):
        suffix = "" if accepted[i] else "_rejected"
        imageio.save_png(out_dir / f"{tag}_{i:03d}{suffix}.png", img)
    imageio.save_grid(out_dir / f"grid_{tag}.png", images)
    print(f"wrote {n} samples ({int(accepted.sum())} accepted by the model's own check) "
          f"to {out_dir} (checkpoint step {step})")


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
                return f"--config.{key}: no such key in the config"
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


def main(argv):
    std_logging.getLogger("absl").addFilter(_QuietLibraries())
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config, workdir = FLAGS.config, FLAGS.workdir
    from latent_jax import train
    from latent_jax.data.celeba import DatasetNotPreparedError

    try:
        if FLAGS.mode == "train":
            result = train.train_and_evaluate(config, workdir)
            if result:
                print("final evaluation:", {k: round(v, 4) for k, v in result.items()
                                            if isinstance(v, float)})
        elif FLAGS.mode == "evaluate":
            train.evaluate_only(config, workdir)
        elif FLAGS.mode == "edit":
            run_edit(config, workdir)
        else:
            run_sample(config, workdir)
    except train.Preempted as e:
        logging.warning("%s", e)
        print(str(e), file=sys.stderr)
        return 0
    except (errors.UserError, DatasetNotPreparedError, train.NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
