"""Part of the method contract (tests/test_method_contract.py), in a module of its own so that
a parallel test run (pytest-xdist, `--dist loadscope`) runs it beside the rest of the contract:
one step of every phase of every registered method on 8 simulated devices equals one on 1."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from test_method_contract import ENV, METHODS


def test_one_step_on_8_devices_matches_1_device_for_every_method(tmp_path):
    """Every phase of every method, from the same init and batch, on 8 simulated devices and
    on 1 (SGD for every player keeps the update linear in the gradient, so the comparison is at
    float tolerance)."""
    script = textwrap.dedent("""
        import os, sys
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_force_host_platform_device_count=8")
        import jax, numpy as np
        sys.path.insert(0, sys.argv[1])
        import test_method_contract as contract
        from latent_jax import methods, parallel, train
        from latent_jax.data import pipeline as data
        assert len(jax.devices()) == 8
        for name in methods.registered_methods():
            cfg0 = contract.tiny_config(name)
            players = methods.get_method(cfg0, data.get_data_spec(cfg0.data), 8).player_names()
            sgd = {f"optim.{p}.name": "sgd" for p in players}
            out, host_init = {}, None
            for n in (1, 8):
                cfg = contract.tiny_config(name, **{"parallel.num_devices": n}, **sgd)
                exp = train.Experiment(cfg, sys.argv[2])
                it = data.make_train_iterator(cfg.data, global_batch_size=cfg.batch_size,
                                              seed=cfg.seed)
                batch = exp.next_batch(it)
                if host_init is None:   # one init, replicated onto both meshes
                    host_init = jax.device_get(exp.init_states())
                init = jax.device_put(host_init, parallel.replicated(exp.mesh))
                phases = sorted({exp.method.phase(s) for s in range(int(cfg.num_steps))})
                for phase in phases:
                    rng = jax.random.fold_in(exp.base_key, phase)
                    states, metrics, _ = exp.step_fn(phase)(
                        jax.tree.map(lambda a: a.copy(), init), batch, rng)
                    out[n, phase] = (jax.device_get(metrics), jax.device_get(states))
            for phase in phases:
                (m8, s8), (m1, s1) = out[8, phase], out[1, phase]
                assert set(m8) == set(m1), name
                for k in m8:
                    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-4, atol=1e-5,
                                               err_msg=f"{name} phase {phase} {k}")
                for a, b in zip(jax.tree.leaves(s8), jax.tree.leaves(s1)):
                    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5,
                                               err_msg=f"{name} phase {phase}")
            print("DEVICES_OK", name, phases, flush=True)
        # A global batch that does not divide the 8 devices is refused by name.
        try:
            train.Experiment(contract.tiny_config("introvac", batch_size=12), sys.argv[2])
        except ValueError as e:
            assert "config.batch_size" in str(e), e
        else:
            raise AssertionError("batch 12 on 8 devices was accepted")
    """)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-c", script, tests_dir, str(tmp_path)],
                         capture_output=True, text=True, env=ENV, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert res.stdout.count("DEVICES_OK") == len(METHODS), res.stdout
