"""Compute accounting and budgets (latent_jax.compute): FLOPs per compiled step against a hand
count, budgets converted phase by phase, equal budgets giving equal compute, compute restored
on resume."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import pytest

import tiny
from test_method_contract import tiny_config
from latent_jax import compute, methods, train
from latent_jax.errors import ConfigError


def test_flops_of_a_dense_layer_match_a_hand_count_and_loops_are_flagged():
    x, w = jnp.ones((8, 16)), jnp.ones((16, 32))
    cost = compute.step_cost(jax.jit(lambda a, b: a @ b), x, w)
    assert cost.flops == 2 * 8 * 16 * 32 and not cost.has_loops
    looped = compute.step_cost(jax.jit(lambda a, b: jax.lax.fori_loop(
        0, 5, lambda i, h: h @ b[:, :16], a)), x, w)
    assert looped.has_loops        # XLA counts the body once: a FLOP budget refuses such a step


def test_a_budget_is_spent_phase_by_phase():
    """IntroVAC-like: phase 0 (cheap pre-training) until step 4, then phase 1 at 3x the cost."""
    steps, note = compute.steps_for_budget(
        "flops", 10.0, phase_of=lambda s: 0 if s < 4 else 1, boundaries=(4,),
        flops_per_step={0: 1.0, 1: 3.0}, images_per_step=8)
    assert steps == 6 and "4 steps of phase 0" in note and "2 steps of phase 1" in note
    steps, _ = compute.steps_for_budget("flops", 3.5, phase_of=lambda s: 0 if s < 4 else 1,
                                        boundaries=(4,), flops_per_step={0: 1.0, 1: 3.0},
                                        images_per_step=8)
    assert steps == 3
    assert compute.steps_for_budget("images", 100, phase_of=lambda s: 0, boundaries=(),
                                    flops_per_step={0: 1.0}, images_per_step=8)[0] == 12


def test_budget_config_errors_name_the_keys():
    c = tiny.config()
    c.budget.flops = 1e9
    c.num_steps = 5
    with pytest.raises(ConfigError, match="config.budget.flops and config.num_steps"):
        compute.budget_of(c)
    c.num_steps = 0
    c.budget.images = 100.0
    with pytest.raises(ConfigError, match="one budget"):
        compute.budget_of(c)
    c.budget.images = None
    c.budget.flops = -1.0
    with pytest.raises(ConfigError, match="positive"):
        compute.budget_of(c)


def test_a_budget_replaces_the_training_length_of_a_config_given_in_steps():
    """A config that sets its length as num_steps with num_epochs = 0 (the IFcVAEGAN presets)
    takes a budget in place of num_steps: validation asks for num_epochs only when neither
    num_steps nor a budget gives the length."""
    from latent_jax import configlib

    c = tiny.config()
    c.num_epochs, c.num_steps = 0.0, 0
    with pytest.raises(ConfigError, match="config.num_epochs"):
        configlib.validate(c)
    c.budget.flops = 1e9
    configlib.validate(c)


def _costs(name):
    cfg = tiny_config(name)
    exp = train.Experiment(cfg, "/nonexistent/unused")
    batch = exp.next_batch(train.data_lib.make_train_iterator(
        exp.data, global_batch_size=int(cfg.batch_size), seed=0))
    return exp.plan(exp.abstract_states(), batch)


def test_no_registered_methods_train_step_contains_a_loop():
    """So XLA's count is every FLOP the step runs (a loop's body would be counted once)."""
    for name in methods.registered_methods():
        for phase, cost in _costs(name).items():
            assert cost.flops > 0 and not cost.has_loops, (name, phase)


def _final_row(workdir):
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r for r in rows if "compute/flops" in r][-1]


def test_equal_flop_budgets_give_equal_compute_at_different_step_counts(tmp_path):
    """vac and lrlivae (several batches and players per step) on one FLOP budget: different
    step counts, FLOPs within one step's worth; a resumed run keeps counting from the
    checkpoint's compute."""
    costs = {n: max(c.flops for c in _costs(n).values()) for n in ("vac", "lrlivae")}
    budget = 6 * max(costs.values())
    rows = {}
    for name in costs:
        cfg = tiny_config(name, **{"num_steps": 0, "budget.flops": budget})
        workdir = str(tmp_path / name)
        train.train_and_evaluate(cfg, workdir)
        rows[name] = _final_row(workdir)
    steps = {n: r["step"] for n, r in rows.items()}
    assert steps["vac"] != steps["lrlivae"]
    for name, r in rows.items():
        assert budget - costs[name] < r["compute/flops"] <= budget, name
    assert abs(rows["vac"]["compute/flops"] - rows["lrlivae"]["compute/flops"]) <= max(
        costs.values())
    # Resume: the run cut after its next-to-last checkpoint and resumed ends with the same
    # count (the checkpoint carries the compute spent to reach it).
    import shutil

    workdir, cut = str(tmp_path / "vac"), str(tmp_path / "vac_cut")
    shutil.copytree(workdir, cut)
    ckpts = sorted(int(d) for d in os.listdir(os.path.join(cut, "checkpoints")) if d.isdigit())
    shutil.rmtree(os.path.join(cut, "checkpoints", str(ckpts[-1])))
    cfg = tiny_config("vac", **{"num_steps": 0, "budget.flops": budget})
    _, _, data_state = train.Experiment(cfg, cut).restore_newest()
    assert 0 < data_state["compute"]["flops"] < rows["vac"]["compute/flops"]
    train.train_and_evaluate(cfg, cut)
    assert _final_row(cut)["compute/flops"] == pytest.approx(rows["vac"]["compute/flops"])
    assert _final_row(cut)["compute/images"] == rows["vac"]["compute/images"]


def test_a_step_loaded_from_the_persistent_compilation_cache_costs_what_it_compiled_to():
    """The ablation driver shares JAX's persistent compilation cache between runs (the tests
    have one too, tests/conftest.py): a step loaded from it must report the FLOPs and loops
    that compiling it does, or a budget would buy a different number of steps on a cache
    hit."""
    from jax import monitoring

    assert jax.config.jax_compilation_cache_dir
    hits = []
    monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)

    def f(w, x):
        return jax.lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h @ w), x).sum()

    args = (jax.ShapeDtypeStruct((24, 24), jnp.float32), jax.ShapeDtypeStruct((5, 24), jnp.float32))
    compiled = compute.step_cost(jax.jit(f), *args)
    jax.clear_caches()          # the next compile must come from the disk cache
    before = len(hits)
    loaded = compute.step_cost(jax.jit(f), *args)
    assert len(hits) > before, "the second compilation was not a persistent-cache hit"
    assert loaded == compiled and compiled.flops > 0 and compiled.has_loops
