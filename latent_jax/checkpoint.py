"""Orbax checkpoints of a training run: every player's state, the step, the RNG, the data
iterator position and the config.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. Saves are asynchronous (the train
loop goes on while the previous save is written); `close()` waits for them. A checkpoint is
only ever written from finite states (the trainer checks before saving), so the latest one is
always a good one to resume from.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, *, max_to_keep: int = 3, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=asynchronous,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "config"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None, config_json: str,
             force: bool = False) -> bool:
        """Saves asynchronously; returns whether a save was started."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            config=ocp.args.JsonSave(json.loads(config_json)),
        )
        return self._manager.save(step, args=args, force=force)

    def restore(self, target: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores `state` onto the structure, dtypes and shardings of `target`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            data=ocp.args.JsonRestore(),
        ))
        return step, restored["state"], dict(restored["data"] or {})

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        restored = self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))
        return dict(restored["config"])

    def reached_preemption(self, step: int) -> bool:
        """True on every host once a preemption notice arrived (multi-host TPU/GPU runs)."""
        return self._manager.reached_preemption(step)

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()
