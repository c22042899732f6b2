"""Where a compiled step's time goes: XLA's operations, timed by JAX's profiler.

`op_times(fn, hlo_text, calls)` runs `fn()` `calls` times under `jax.profiler` and sums, per
operation of the compiled program (its optimised HLO, `compiled.as_text()`), the time the
profiler recorded for it (XLA:CPU reports every thunk it runs: a convolution, a dot, a fusion
of elementwise work, a YNNPACK call, a layout copy). Each operation gets a category from its
opcode, or from what its fused computation computes, and a direction from JAX's name stack
(`transpose(jvp(...))` marks the backward pass). `summary` turns them into the two markdown
tables that `launch/benchmark.py --profile` prints: time per category and the costliest
operations with their shapes.

Each operation's time is its wall time (a convolution itself runs on every core); XLA:CPU may
run independent operations at the same time, so their sum can exceed the wall time of a step:
shares are of the summed operation time. On accelerators the
profiler names device kernels, not HLO operations: nothing is matched there, and `op_times`
says so by returning no operation.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re
import tempfile
from typing import Callable, Mapping, Sequence

import jax

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\S+(?:\s*\{[^}]*\})?|\([^)]*\))\s+"
    r"(?P<opcode>[\w\-]+)\((?P<operands>[^)]*)\)(?P<attrs>.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%(?P<name>[\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_WINDOW = re.compile(r"window=\{([^}]*)\}")

# Opcodes that carry the arithmetic, in the order a fusion is named after them.
_HEAVY = ("convolution", "dot")
_LAYOUT = ("copy", "transpose", "reshape", "bitcast", "slice", "concatenate", "pad",
           "dynamic-slice", "dynamic-update-slice", "broadcast")


@dataclasses.dataclass(frozen=True)
class HloOp:
    name: str
    opcode: str
    shape: str
    operands: tuple[str, ...]
    calls: str | None
    op_name: str
    window: str


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One operation's time per call of the profiled function."""

    name: str
    category: str        # convolution, dot, elementwise/reduce, layout, other
    direction: str       # forward, backward, update (the optimizer, and any work outside the
                         # differentiated functions), or '' when unknown
    detail: str          # shapes (and window) of the heavy operation
    source: str          # JAX's name stack, shortened
    seconds: float


def parse_hlo(hlo_text: str) -> tuple[dict[str, HloOp], dict[str, list[HloOp]]]:
    """(instruction name -> HloOp, computation name -> its instructions) of an HLO module's
    text."""
    ops: dict[str, HloOp] = {}
    computations: dict[str, list[HloOp]] = collections.defaultdict(list)
    current = None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and "=" not in line.split("{")[0]:
            current = m.group("name")
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        attrs = m.group("attrs")
        calls = _CALLS.search(attrs)
        op_name = _OP_NAME.search(attrs)
        window = _WINDOW.search(attrs)
        operands = tuple(o.strip().lstrip("%").split(" ")[-1].lstrip("%")
                         for o in m.group("operands").split(",") if o.strip())
        op = HloOp(name=m.group("name"), opcode=m.group("opcode"),
                   shape=re.sub(r"\{[^}]*\}", "", m.group("shape")), operands=operands,
                   calls=calls.group(1) if calls else None,
                   op_name=op_name.group(1) if op_name else "",
                   window=window.group(1) if window else "")
        ops[op.name] = op
        if current is not None:
            computations[current].append(op)
    return ops, dict(computations)


def _heavy_inside(op: HloOp, computations: Mapping[str, list[HloOp]], depth: int = 0
                  ) -> HloOp | None:
    """The convolution or dot an operation computes (itself, or inside its fused computation)."""
    if op.opcode in _HEAVY:
        return op
    if op.calls and depth < 4:
        inner = computations.get(op.calls, [])
        for opcode in _HEAVY:
            for sub in inner:
                if sub.opcode == opcode:
                    return sub
        for sub in inner:
            found = _heavy_inside(sub, computations, depth + 1)
            if found is not None:
                return found
    return None


def _only_layout(op: HloOp, computations: Mapping[str, list[HloOp]]) -> bool:
    if op.opcode in _LAYOUT:
        return True
    inner = computations.get(op.calls or "", [])
    return bool(inner) and all(s.opcode in _LAYOUT + ("parameter", "constant") for s in inner)


def _direction(op_name: str) -> str:
    if not op_name:
        return ""
    if "transpose(" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    return "update"


def _source(op_name: str) -> str:
    """JAX's name stack without the outer `jit(...)` and the autodiff wrappers."""
    parts = [p for p in op_name.split("/") if p and not p.startswith("jit(")]
    parts = [re.sub(r"^(transpose\()?(jvp\()?", "", p).rstrip(")") for p in parts]
    return "/".join(p for p in parts if p)[-80:]


def describe(name: str, ops: Mapping[str, HloOp],
             computations: Mapping[str, list[HloOp]]) -> tuple[str, str, str, str]:
    """(category, direction, detail, source) of an operation of the compiled program."""
    op = ops[name]
    heavy = _heavy_inside(op, computations)
    if heavy is not None:
        operand_shapes = [ops[o].shape if o in ops else "?" for o in heavy.operands]
        detail = f"{' x '.join(operand_shapes)} -> {heavy.shape}"
        if heavy.window:
            detail += f" ({heavy.window})"
        label = heavy.op_name or op.op_name
        direction = _direction(label)
        if not direction and heavy.opcode == "convolution":
            # XLA rewrites a convolution's weight gradient (a convolution whose window is the
            # output gradient's map) into an operation without JAX's name stack; the forward
            # convolutions keep theirs.
            return heavy.opcode, "backward", detail, "(rewritten by XLA: a weight gradient)"
        return heavy.opcode, direction, detail, _source(label)
    inner = computations.get(op.calls or "", [])
    label = op.op_name or next((s.op_name for s in inner if s.op_name), "")
    if _only_layout(op, computations):
        return "layout", _direction(label), op.shape, _source(label)
    if op.opcode in ("fusion", "reduce") or inner or op.opcode in (
            "add", "multiply", "subtract", "divide", "exponential", "log", "tanh", "maximum",
            "select", "compare"):
        return "elementwise/reduce", _direction(label), op.shape, _source(label)
    return "other", _direction(label), f"{op.opcode} {op.shape}", _source(label)


def profile_events(fn: Callable[[], object], calls: int) -> dict[str, float]:
    """Event name -> seconds summed over `calls` calls of `fn` (which must block until its
    results are ready), from a `jax.profiler` trace of the host's threads."""
    from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        try:
            for _ in range(calls):
                fn()
        finally:
            jax.profiler.stop_trace()
        files = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        if not files:
            return {}
        data = ProfileData.from_file(files[0])
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                totals[event.name] += event.duration_ns * 1e-9
    return dict(totals)


def op_times(fn: Callable[[], object], hlo_text: str, calls: int) -> list[OpTime]:
    """Each operation of the compiled program `hlo_text` that the profiler saw while `fn` ran
    `calls` times, with its time per call, costliest first."""
    ops, computations = parse_hlo(hlo_text)
    events = profile_events(fn, calls)
    out = []
    for name, seconds in events.items():
        if name not in ops:
            continue   # the runtime's own events, Python's, another program's
        category, direction, detail, source = describe(name, ops, computations)
        out.append(OpTime(name, category, direction, detail, source, seconds / calls))
    return sorted(out, key=lambda o: -o.seconds)


def summary(times: Sequence[OpTime], step_seconds: float, top: int = 12) -> str:
    """Markdown: summed operation time per category and direction, then the `top` costliest
    operations."""
    total = sum(t.seconds for t in times)
    if not times or total <= 0:
        return "(the profiler reported no XLA operation: not an XLA:CPU run)\n"
    groups: dict[tuple[str, str], float] = collections.defaultdict(float)
    for t in times:
        groups[(t.category, t.direction or "-")] += t.seconds
    lines = [f"summed operation time {1e3 * total:.1f} ms per step against {1e3 * step_seconds:.1f}"
             " ms of wall time (independent operations may overlap)", "",
             "| category | pass | ms/step | share |", "|---|---|---|---|"]
    for (category, direction), s in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {category} | {direction} | {1e3 * s:.1f} | {100 * s / total:.0f} % |")
    lines += ["", "| operation | category | pass | ms/step | share | shapes | source |",
              "|---|---|---|---|---|---|---|"]
    for t in times[:top]:
        lines.append(f"| {t.name} | {t.category} | {t.direction or '-'} | {1e3 * t.seconds:.1f} | "
                     f"{100 * t.seconds / total:.0f} % | {t.detail} | {t.source} |")
    return "\n".join(lines) + "\n"
