"""Device mesh and shardings (multi-host start-up and agreement: `latent_jax.multihost`).

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


def make_mesh(num_devices: int | None = None, local: bool = False) -> Mesh:
    """The `data` mesh over every device of every process (the first `num_devices` if given),
    or with `local` over this process's devices only (host work: evaluation, figures)."""
    devices = jax.local_devices() if local else jax.devices()
    if num_devices:
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def local_part(mesh: Mesh) -> Mesh:
    """The mesh of this process's devices of `mesh` (`mesh` itself with one process)."""
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if len(local) == mesh.devices.size:
        return mesh
    return Mesh(np.asarray(local), (DATA_AXIS,))


def to_local(tree, local_mesh: Mesh):
    """Replicated global arrays -> the same values replicated over `local_mesh` (this process's
    devices), without copying: what host work computes on, so that it needs no other process.
    Arrays that are already this process's are returned as they are."""
    def one(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return a
        if not a.is_fully_replicated:
            raise ValueError(f"to_local: an array sharded as {a.sharding} is not replicated")
        return _replicated_from_own_shards(a, local_mesh, local_mesh)

    return jax.tree.map(one, tree)


def to_global(tree, mesh: Mesh):
    """Arrays replicated over this process's devices of `mesh` -> global arrays replicated
    over `mesh` (every process passes its own copy of the same values; nothing is sent)."""
    local = local_part(mesh)
    if local is mesh:
        return tree
    return jax.tree.map(lambda a: _replicated_from_own_shards(a, local, mesh), tree)


def _replicated_from_own_shards(a: jax.Array, own: Mesh, onto: Mesh) -> jax.Array:
    """`a`'s copies on this process's devices `own` (one per device, no copy made), as an
    array replicated over `onto`."""
    shards = {s.device: s.data for s in a.addressable_shards}
    return jax.make_array_from_single_device_arrays(
        a.shape, replicated(onto), [shards[d] for d in own.devices.flat])


def replicate_host_value(value, mesh: Mesh) -> jax.Array:
    """A host value that every process holds (the step, the base key) as an array replicated
    over `mesh`: Orbax saves only global arrays when there are several processes."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, replicated(mesh), lambda index: value[index])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate_tree(tree, mesh: Mesh):
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def shard_batch(batch: dict, mesh: Mesh, *, stacked: bool = False) -> dict:
    """Host-local batch (this process's rows) -> global arrays sharded along `data`. With
    `stacked`, batches of several steps stacked on a leading axis ([n, rows, ...]): sharded
    along `data` on axis 1 (each step's rows), replicated along the steps."""
    sharding = NamedSharding(mesh, P(None, DATA_AXIS) if stacked else P(DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}


def check_batch_divisible(global_batch_size: int, mesh: Mesh, key: str = "config.batch_size"):
    n = mesh.devices.size
    if global_batch_size % n:
        raise ConfigError(f"{key}: global batch {global_batch_size} is not divisible by the "
                         f"{n} devices of the mesh")
    processes = len({d.process_index for d in mesh.devices.flat})
    if global_batch_size % processes:
        raise ConfigError(f"{key}: global batch {global_batch_size} is not divisible by the "
                         f"{processes} processes")
