"""Compute accounting and budgets: the unit in which methods are compared.

- `step_cost(jitted, *abstract_args)`: FLOPs and bytes accessed of one compiled train step, from
  XLA's cost analysis of the compiled program (counted once per compilation; the compilation is
  shared with the jitted function's own, so it costs no second compile). XLA counts the body of
  a `while` loop (`lax.fori_loop`, `lax.scan`) once, not once per iteration: `has_loops` says
  when a step contains one (the random-bit generator's own loops, integer work, excepted), and
  the trainer refuses a FLOP budget for such a step rather than undercount it. No train step here has one (Lr-LiVAE's n_gm GM steps are unrolled; a test
  checks every registered method).
- `Compute`: cumulative FLOPs, images and device-seconds (the wall time of the logging
  intervals times the number of devices), logged as `compute/*` and saved with every
  checkpoint (restored on resume). FLOPs are the whole step's on the global batch, the same on
  any mesh (`train.Experiment.step_cost`: XLA reports one device's share of a partitioned
  program), so a FLOP budget buys the same steps on 1 device, on 8, or on several hosts;
  device-seconds are what the mesh occupied, and do grow with it.
- `steps_for_budget`: `config.budget.flops | images | steps` -> a step count, phase by phase
  (IntroVAC's cheaper pre-training phase costs what it costs), with a sentence saying what was
  chosen and why. Schedules and phase boundaries given in epochs stay absolute (epochs of data),
  whatever the budget: a smaller budget ends earlier in the same schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import jax
import ml_collections

from latent_jax.errors import ConfigError

BUDGET_KINDS = ("flops", "images", "steps")


_RNG_LOOPS = ("threefry", "jit(_uniform)", "random_bits", "jit(_randint)")


@dataclasses.dataclass(frozen=True)
class StepCost:
    flops: float
    bytes_accessed: float
    has_loops: bool


def step_cost(jitted, *abstract_args) -> StepCost:
    """The cost of one call of `jitted` on arguments of these shapes (`jax.ShapeDtypeStruct`s
    or arrays)."""
    return compiled_cost(jitted.lower(*abstract_args).compile())


def compiled_cost(compiled) -> StepCost:
    """The cost of one call of a compiled program (`jitted.lower(...).compile()`)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):   # older JAX: one dict per computation
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    # The random-bit generator's loops (threefry inside jax.random's samplers: integer work)
    # do not count.
    loops = [line for line in (compiled.as_text() or "").splitlines()
             if " while(" in line and not any(s in line for s in _RNG_LOOPS)]
    return StepCost(flops=float(analysis.get("flops", 0.0)),
                    bytes_accessed=float(analysis.get("bytes accessed", 0.0)),
                    has_loops=bool(loops))


@dataclasses.dataclass
class Compute:
    """Compute spent so far (cumulative over resumes)."""

    flops: float = 0.0
    images: float = 0.0
    device_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"flops": self.flops, "images": self.images,
                "device_seconds": self.device_seconds}

    def metrics(self) -> dict:
        return {f"compute/{k}": v for k, v in self.as_dict().items()}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Compute":
        d = d or {}
        return cls(**{k: float(d.get(k, 0.0)) for k in ("flops", "images", "device_seconds")})


def budget_of(config: ml_collections.ConfigDict) -> tuple[str, float] | None:
    """(kind, amount) of `config.budget`, or None; a ConfigError for two budgets, a budget with
    `num_steps`, or a non-positive amount."""
    budget = config.get("budget", None)
    if budget is None:
        return None
    unknown = sorted(set(budget.keys()) - set(BUDGET_KINDS) - {"device_seconds"})
    if unknown:
        raise ConfigError(f"config.budget.{unknown[0]}: unknown budget; use one of "
                          f"{', '.join(BUDGET_KINDS)}")
    if budget.get("device_seconds", None) is not None:
        raise ConfigError("config.budget.device_seconds: not supported (wall time on shared "
                          "machines is not reproducible); use config.budget.flops")
    given = [(k, budget.get(k)) for k in BUDGET_KINDS if budget.get(k, None) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise ConfigError(f"config.budget: give one budget, got {', '.join(k for k, _ in given)}")
    kind, amount = given[0]
    if not math.isfinite(float(amount)) or float(amount) <= 0:
        raise ConfigError(f"config.budget.{kind}: must be positive, got {amount!r}")
    if int(config.num_steps) > 0:
        raise ConfigError(f"config.budget.{kind} and config.num_steps: give one of them (the "
                          "budget sets the number of steps)")
    return kind, float(amount)


def steps_for_budget(kind: str, amount: float, *, phase_of: Callable[[int], int],
                     boundaries: Sequence[int], flops_per_step: Mapping[int, float],
                     images_per_step: int) -> tuple[int, str]:
    """The number of steps a budget buys, and a sentence saying how it was chosen. A FLOP budget
    is spent phase by phase (a phase's steps cost that phase's FLOPs) and stops at the last
    whole step it affords."""
    if kind == "steps":
        steps = int(amount)
        return steps, f"budget {steps} steps"
    if kind == "images":
        steps = int(amount // images_per_step)
        return steps, (f"budget {amount:.4g} images at {images_per_step} images per step: "
                       f"{steps} steps")
    edges = sorted(b for b in set(boundaries) if b > 0)
    steps, spent, parts = 0, 0.0, []
    starts = [0] + edges
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        cost = float(flops_per_step[phase_of(start)])
        if cost <= 0:
            raise ConfigError(f"config.budget.flops: phase {phase_of(start)}'s step has no "
                              "counted FLOPs")
        affordable = int((amount - spent) // cost)
        n = affordable if end is None else min(end - start, affordable)
        n = max(n, 0)
        steps += n
        spent += n * cost
        if n:
            parts.append(f"{n} steps of phase {phase_of(start)} at {cost:.4g} FLOPs")
        if end is None or n < end - start:
            break
    return steps, (f"budget {amount:.4g} FLOPs: " + (", ".join(parts) or "not one step") +
                   f" ({spent:.4g} FLOPs)")


def abstract(tree, sharding=None):
    """`jax.ShapeDtypeStruct`s of a tree of arrays, with their shardings or with `sharding`."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=sharding or getattr(a, "sharding", None)), tree)
