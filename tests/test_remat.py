"""config.model.remat: every method's networks recompute their activations in the backward pass
(latent_jax.nets.remat), through the shared trainer's step, with unchanged results."""

from __future__ import annotations

import jax
import jax.extend
import numpy as np
import pytest

from latent_jax import configlib, train
from latent_jax.data import pipeline as data
from latent_jax.errors import ConfigError

from test_method_contract import METHODS, tiny_config


def _primitives(jaxpr) -> set[str]:
    found = set()

    def walk(j):
        for eqn in j.eqns:
            found.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("name", METHODS)
def test_remat_puts_every_methods_networks_under_checkpoint(tmp_path, name):
    """Traced on abstract values (nothing compiled): with remat every phase's step holds
    rematerialised calls, and without it (checked on the first phase) none."""
    for remat in (True, False):
        cfg = tiny_config(name, **{"model.remat": remat})
        exp = train.Experiment(cfg, str(tmp_path / str(remat)))
        it = data.make_train_iterator(cfg.data, global_batch_size=cfg.batch_size, seed=cfg.seed)
        batch = exp.next_batch(it)
        states = jax.eval_shape(exp.method.init, exp.base_key)
        phases = sorted({exp.method.phase(s) for s in range(int(cfg.num_steps))})
        for phase in phases if remat else phases[:1]:
            fn = lambda s, b, r, p=phase: exp.method.train_step(s, b, r, p)   # noqa: E731
            prims = _primitives(jax.make_jaxpr(fn)(states, batch, exp.base_key))
            # 'remat', or 'remat2' once JAX has linearised the checkpointed call
            has = any(p.startswith(("remat", "checkpoint")) for p in prims)
            assert has == remat, f"{name} phase {phase} remat={remat}"


def test_a_remat_step_equals_the_plain_one(tmp_path):
    """The same init, batch and key, IntroVAC's introspective step (BatchNorm statistics,
    three players, re-encodings): the updated state and metrics agree to float32 rounding."""
    out = {}
    host_init = None
    for remat in (False, True):
        cfg = tiny_config("introvac", **{"model.remat": remat})
        exp = train.Experiment(cfg, str(tmp_path / str(remat)))
        it = data.make_train_iterator(cfg.data, global_batch_size=cfg.batch_size, seed=cfg.seed)
        batch = exp.next_batch(it)
        if host_init is None:
            host_init = jax.device_get(exp.init_states())
        phase = exp.method.phase(int(cfg.num_steps) - 1)
        assert phase == 1
        states, metrics, _ = exp.step_fn(phase)(host_init, batch, exp.base_key)
        out[remat] = jax.device_get((states, metrics))
    (s0, m0), (s1, m1) = out[False], out[True]
    assert set(m0) == set(m1)
    for k in m0:
        np.testing.assert_allclose(m1[k], m0[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_remat_must_be_a_bool():
    cfg = tiny_config("vac")
    del cfg.model["remat"]   # the config's own field is typed: a CLI string is refused there
    cfg.model.remat = "yes"
    with pytest.raises(ConfigError, match="config.model.remat"):
        configlib.validate(cfg)
