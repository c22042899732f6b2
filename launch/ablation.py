"""Ablation driver: trains several configs at identical compute and tabulates their reports.

    python launch/ablation.py --configs=configs/csvae.py:synthetic_glasses,configs/vae.py:synthetic_glasses \
        --workdir=runs/table4_glasses [--set=num_steps=500] [--columns=...] [--rerun]

Every config runs through `python -m latent_jax.main` (the shared trainer, then the shared
evaluation) in `<workdir>/<method>_<preset>`, with the same `--set` overrides, so all runs get
the same number of steps and the same batch unless a config differs on purpose. A run whose
`eval/latest.json` exists is not trained again (unless --rerun). The table, one row per run
with the wall time of its command, is printed and written to `<workdir>/table.md`.

Columns are `Header=metric` pairs over the report's headline metrics; `{label}` stands for the
run's first label. The default columns are CSVAE's Table 4 (paper 001): target accuracy (the
judge sees the added attribute), neutral accuracy (the judge no longer sees the removed one)
and final accuracy (both directions pooled), when evaluated on the label's subset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_COLUMNS = ("target=edit_success/{label}/add,neutral=edit_success/{label}/remove,"
                   "final=edit_success/{label}/pooled,recon MSE=recon_mse")


def run_name(spec: str) -> str:
    path, _, preset = spec.partition(":")
    base = os.path.splitext(os.path.basename(path))[0]
    return f"{base}_{preset}" if preset else base


def parse_columns(text: str) -> list[tuple[str, str]]:
    cols = []
    for item in text.split(","):
        header, sep, key = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--columns: {item!r} is not Header=metric")
        cols.append((header.strip(), key.strip()))
    return cols


def train_one(spec: str, workdir: str, overrides: list[str], rerun: bool) -> float | None:
    """Runs the trainer for one config; returns its wall time (None when reused)."""
    report = os.path.join(workdir, "eval", "latest.json")
    if os.path.exists(report) and not rerun:
        print(f"[ablation] {spec}: reusing {report}", flush=True)
        return None
    cmd = [sys.executable, "-m", "latent_jax.main", f"--config={spec}", f"--workdir={workdir}"]
    cmd += [f"--config.{o}" for o in overrides]
    print("[ablation] " + " ".join(cmd), flush=True)
    t0 = time.time()
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise SystemExit(f"[ablation] {spec} failed with status {res.returncode}")
    wall = time.time() - t0
    with open(os.path.join(workdir, "wall_seconds.txt"), "w") as f:
        f.write(f"{wall:.1f}\n")
    return wall


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    header = ["run", "method", "steps"] + [h for h, _ in columns] + ["wall (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [r["name"], r["method"], str(r["step"])]
        for _, key in columns:
            v = r["headline"].get(key.format(label=r["label"]))
            cells.append("-" if v is None else f"{100 * v:.2f}%" if "success" in key
                         else f"{v:.4f}")
        cells.append("-" if r["wall"] is None else f"{r['wall']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", required=True, help="comma-separated config[:preset] specs")
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run (repeatable)")
    p.add_argument("--columns", default=DEFAULT_COLUMNS)
    p.add_argument("--rerun", action="store_true", help="train again even if a report exists")
    args = p.parse_args(argv)
    columns = parse_columns(args.columns)
    rows = []
    for spec in [s for s in args.configs.split(",") if s]:
        workdir = os.path.join(args.workdir, run_name(spec))
        wall = train_one(spec, workdir, args.set, args.rerun)
        if wall is None and os.path.exists(os.path.join(workdir, "wall_seconds.txt")):
            with open(os.path.join(workdir, "wall_seconds.txt")) as f:
                wall = float(f.read())
        with open(os.path.join(workdir, "eval", "latest.json")) as f:
            report = json.load(f)
        run = report["run"]
        rows.append(dict(name=run_name(spec), method=run["method"], step=run["step"],
                         label=(run["label_names"] or [""])[0], headline=report["headline"],
                         wall=wall))
    text = table(rows, columns)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
