"""The contract every registered method keeps, on its config's `tiny` preset: the shared trainer
runs every phase with finite scalar metrics, every declared capability returns the shapes its
callers expect, image grids are drawn, a checkpoint restores to the state it saved, a resumed run
ends where an uninterrupted one does, and one step on 8 devices equals one step on 1
(tests/test_device_equality.py).

A method added later joins these tests by being registered (and having a config file with a
`tiny` preset); nothing here names methods."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny
from latent_jax import methods
from latent_jax import train
from latent_jax.methods import base

METHODS = methods.registered_methods()
ENV = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def tiny_config(name: str, **overrides):
    path = os.path.join(tiny.REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"contract_cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    assert c.method == name
    c.update_from_flattened_dict(overrides)
    return c


def test_every_registered_method_has_a_config_with_a_tiny_preset():
    assert len(METHODS) >= 9
    for name in METHODS:
        assert os.path.exists(os.path.join(tiny.REPO, "configs", f"{name}.py")), name
        c = tiny_config(name)
        assert c.data.image_size <= 16 and c.num_steps <= 8, name


def test_registration_sets_the_name_and_checks_declared_capabilities():
    for name in METHODS:
        cls = methods.method_class(name)
        assert cls.name == name
        assert {base.EDIT, base.SAMPLE} <= cls.capabilities <= base.KNOWN_CAPABILITIES

    class NoWalk(methods.method_class("introvac")):
        capabilities = frozenset({base.EDIT, base.SAMPLE, base.WALK})

    with pytest.raises(ValueError, match="declares 'walk' but has no latent_walk"):
        base.register("contract_no_walk")(NoWalk)
    assert "contract_no_walk" not in methods.registered_methods()


# Keys declared in `config_keys` that the tiny preset's trace does not reach, with why.
READ_ONLY_ELSEWHERE = {
    "model.mlp_hidden": "read with model.kind='mlp' only (vector data)",
    "edit.grid_radius": "read by CSVAE's attribute grids",
    "edit.strength": "read by edits with an explicit strength",
}


@pytest.mark.parametrize("name", METHODS)
def test_a_method_reads_every_key_it_declares_and_refuses_the_others(tmp_path, name):
    """Every key of the method's blocks (loss, model and its own) that its trace reads is
    declared in `config_keys` and every declared key is read (recorded on the config while the
    method is built and its train step traced in every phase); a key it does not declare is
    refused with a one-line error naming it."""
    import ml_collections

    c = tiny_config(name)
    exp = train.Experiment(c, str(tmp_path / "run"))
    states = jax.eval_shape(exp.method.init, jax.random.PRNGKey(0))   # shapes suffice
    blocks = base._method_blocks(c)
    watched = {id(c[b]): b for b in blocks if b in c and hasattr(c[b], "keys")}
    reads = set()
    get_attr, get_item = ml_collections.ConfigDict.__getattr__, ml_collections.ConfigDict.__getitem__

    def record(get):
        def read(self, key):
            if id(self) in watched:
                reads.add(f"{watched[id(self)]}.{key}")
            return get(self, key)
        return read

    batch = {k: jnp.asarray(v[:4]) for k, v in exp.preview_batch().items()}
    k = methods.method_class(name).batches_per_step(c)
    if k > 1:
        batch = {key: jnp.stack([v] * k, 1) for key, v in batch.items()}
    try:
        ml_collections.ConfigDict.__getattr__ = record(get_attr)
        ml_collections.ConfigDict.__getitem__ = record(get_item)
        m = base.get_method(c, exp.spec, exp.steps_per_epoch)
        for phase in sorted({0} | {m.phase(b) for b in m.phase_boundaries()}):
            jax.eval_shape(lambda s, b: m.train_step(s, b, jax.random.PRNGKey(0), phase),
                           states, batch)
        y = jnp.asarray(batch["label"] if k == 1 else batch["label"][:, 0], jnp.float32)
        x = batch["image"] if k == 1 else batch["image"][:, 0]
        jax.eval_shape(lambda s: m.edit(s, x, jnp.zeros_like(y)), states)
        jax.eval_shape(lambda s: m.sample(s, jax.random.PRNGKey(0), y), states)
    finally:
        ml_collections.ConfigDict.__getattr__, ml_collections.ConfigDict.__getitem__ = (
            get_attr, get_item)
    present = {f"{b}.{key}" for b in blocks if b in c and hasattr(c[b], "keys")
               for key in c[b].keys()}
    declared = m.config_keys | base.EVERY_METHOD_READS
    assert reads & present <= declared, f"read but not declared: {sorted(reads - declared)}"
    assert present <= declared        # the config file dropped the family's other keys
    unread = declared & present - reads - set(READ_ONLY_ELSEWHERE)
    assert not unread, f"declared but not read: {sorted(unread)}"
    c.loss.unused_weight = 1.0
    with pytest.raises(base.ConfigError, match=rf"config.loss.unused_weight: method '{name}' "
                                               "does not read it"):
        base.get_method(c, exp.spec, exp.steps_per_epoch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted tiny run per method (checkpoints at steps 4 and 6), trained lazily."""
    cache = {}

    def get(name):
        if name not in cache:
            workdir = str(tmp_path_factory.mktemp(name) / "run")
            train.train_and_evaluate(tiny_config(name), workdir)
            exp = train.Experiment(tiny_config(name), workdir)
            step, states, _ = exp.restore_newest()
            assert step == 6
            cache[name] = (workdir, exp, states)
        return cache[name]

    return get


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree)
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact))


@pytest.mark.parametrize("name", METHODS)
def test_trainer_runs_every_phase_with_finite_scalar_metrics(runs, name):
    workdir, exp, states = runs(name)
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    train_rows = [r for r in rows if "train/phase" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 7))
    phases = {exp.method.phase(s) for s in range(6)}
    assert {int(r["train/phase"]) for r in train_rows} == phases
    assert len(phases) == 1 + len(exp.method.phase_boundaries())   # each phase was run
    for r in train_rows:
        for k, v in r.items():
            assert isinstance(v, float) or k == "step", (k, v)
            assert k in ("step", "time") or math.isfinite(v), (k, v)
    assert _finite(states)
    if exp.config.data.semi_supervised.fraction is not None:   # both kinds of batch were used
        assert {r["train/labeled_fraction"] for r in train_rows} == {0.0, 1.0}


@pytest.mark.parametrize("name", METHODS)
def test_declared_capabilities_return_the_expected_shapes(runs, name):
    _, exp, states = runs(name)
    method = exp.method
    batch = next(iter(train.data_lib.iterate_eval_batches(exp.config.data, "test", 4)))
    x = jnp.asarray(batch["image"][:4])
    y = jnp.asarray(batch["label"][:4], jnp.float32)
    n, (h, w, c) = x.shape[0], x.shape[1:]
    k = method.num_labels
    recon = jax.jit(method.reconstruct)(states, x)
    assert recon.shape == x.shape and _finite(recon)
    if method.has(base.EDIT):
        changes = jnp.zeros((n, k)).at[:, 0].set(jnp.asarray([1.0, -1.0, 1.0, -1.0]))
        out = jax.jit(method.edit)(states, x, changes)
        assert out.shape == x.shape and _finite(out)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if method.has(base.SAMPLE):
        images, accepted = jax.jit(method.sample)(states, jax.random.PRNGKey(0), y)
        assert images.shape == x.shape and accepted.shape == (n,) and accepted.dtype == bool
    if method.has(base.CLASSIFY):
        assert jax.jit(method.classify)(states, x).shape == (n, k)
    if method.has(base.LABEL_CODES):
        assert jax.jit(method.label_codes)(states, x).shape == (n, k)
    if method.has(base.ATTRIBUTE_GRID):
        g = jax.jit(lambda s, xx: method.attribute_grid(s, xx, 0, 3))(states, x)
        assert g.ndim == 5 and g.shape[0] == n and g.shape[2:] == (h, w, c)
    if method.has(base.ATTRIBUTE_GRID_PAIR) and k >= 2:
        g = jax.jit(lambda s, xx: method.attribute_grid(s, xx, (0, 1), 2))(states, x)
        assert g.ndim == 5 and g.shape[0] == n and g.shape[2:] == (h, w, c)
    if method.has(base.WALK):
        g = jax.jit(method.latent_walk, static_argnums=(2, 3))(states, x, 0, 3)
        assert g.shape[-3:] == (h, w, c) and _finite(g)
    if method.has(base.INTERVENE):
        assert jax.jit(method.intervene, static_argnums=(2,))(states, x, 0, 1.0).shape == x.shape
    if method.has(base.CODE_SPLIT):
        code = jax.jit(method.encode)(states, x)
        mask = np.asarray(method.relevant_code_mask(), bool)
        assert mask.shape == code.shape[1:] and 0 < mask.sum() < mask.size
        swapped = jax.jit(method.swap)(states, x, x[::-1])
        assert swapped.shape == x.shape and _finite(swapped)
        # The rest's coordinate at its own posterior mean gives back the plain decode.
        rest = int(np.flatnonzero(~mask)[0])
        g = jax.jit(method.sweep, static_argnums=(2,))(states, x[:1], 0, code[0, rest:rest + 1])
        assert g.shape == (1, 1, h, w, c)
        np.testing.assert_allclose(g[:, 0], jax.jit(method.decode)(states, code[:1]), atol=1e-5)
    grids = exp.grids(states)
    assert grids and all(np.asarray(g).ndim == 3 and np.asarray(g).shape[-1] == 3
                         for g in grids.values())
    # The grids of later evaluations in the run reuse the compiled functions.
    compiled = lambda: sum(f._cache_size() for f in vars(method)["_evaluation_jit_cache"].values())
    before = compiled()
    assert set(exp.grids(states)) == set(grids) and compiled() == before


@pytest.mark.parametrize("name", METHODS)
def test_resumed_run_ends_where_the_uninterrupted_one_does(runs, tmp_path, name):
    """Checkpoint round trip and resume equality through the shared trainer: the run is cut
    after its step-4 checkpoint (as a kill would leave it) and resumed to step 6."""
    workdir, _, states = runs(name)
    cut = str(tmp_path / "cut")
    shutil.copytree(workdir, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", "6"))
    exp = train.Experiment(tiny_config(name), cut)
    step, restored, data_state = exp.restore_newest()
    assert step == 4 and data_state
    train.train_and_evaluate(tiny_config(name), cut)
    step, resumed, _ = train.Experiment(tiny_config(name), cut).restore_newest()
    assert step == 6
    a, b = jax.tree.leaves(jax.device_get(states)), jax.tree.leaves(jax.device_get(resumed))
    assert len(a) == len(b) > 0
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-7)
