"""Device mesh, shardings and multi-host start-up.

One mesh axis, `data`, over every device of every host. Parameters and optimizer states are
replicated; batches are sharded along their leading axis. One `jax.jit` step; XLA inserts the
gradient all-reduce. BatchNorm statistics computed inside the step are therefore statistics of
the global batch (synchronised BatchNorm).
"""

from __future__ import annotations

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from latent_jax.errors import ConfigError

DATA_AXIS = "data"


def maybe_initialize_distributed(config) -> None:
    """Starts jax.distributed when the config asks for it (never on a plain single host).

    `config.parallel.distributed`: False (default), True (auto-detected cluster: TPU pods,
    SLURM, ...), or explicit `coordinator_address`/`num_processes`/`process_id`.
    """
    par = config.parallel
    if not par.distributed:
        return
    kwargs = {}
    if par.get("coordinator_address"):
        kwargs = dict(coordinator_address=par.coordinator_address,
                      num_processes=int(par.num_processes), process_id=int(par.process_id))
    jax.distributed.initialize(**kwargs)


def make_mesh(num_devices: int | None = None) -> Mesh:
    devices = jax.devices()
    if num_devices:
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate_tree(tree, mesh: Mesh):
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host-local batch (this process's rows) -> global arrays sharded along `data`."""
    sharding = data_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}


def check_batch_divisible(global_batch_size: int, mesh: Mesh, key: str = "config.batch_size"):
    n = mesh.devices.size
    if global_batch_size % n:
        raise ConfigError(f"{key}: global batch {global_batch_size} is not divisible by the "
                         f"{n} devices of the mesh")
    if global_batch_size % jax.process_count():
        raise ConfigError(f"{key}: global batch {global_batch_size} is not divisible by the "
                         f"{jax.process_count()} processes")
