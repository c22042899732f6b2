"""Rematerialisation for every method's networks: `config.model.remat`.

`Rematerialized(module)` stands in for a Flax module wherever a method calls ``apply``: the
call runs under `jax.checkpoint`, so the backward pass keeps only the network's inputs and
parameters and recomputes its activations, instead of holding every layer's activations
from the forward pass until the gradient is taken. That trades one more forward pass of each
network (about a third more compute in a VAE step) for the activation memory, which is what
limits the batch of the 128x128 nets on one accelerator. Nothing else changes: the same
parameters, state, checkpoints and (up to floating-point reassociation) the same numbers;
``init`` and every attribute are the wrapped module's. A call without a floating-point array
input (a module that only returns its parameters) has no activations worth dropping and runs
as it is.
"""

from __future__ import annotations

import jax

from latent_jax.nets import standin


class Rematerialized(standin.ModuleStandIn):
    """A Flax module whose ``apply`` runs under `jax.checkpoint` (see the module docstring)."""

    def apply(self, variables, *args, **kwargs):
        if not standin.has_float_array((args, kwargs)):
            return self.module.apply(variables, *args, **kwargs)
        # Arrays are the checkpointed function's arguments; everything else (train=, mutable=,
        # method=, rngs' structure) is static and closed over.
        leaves, treedef = jax.tree.flatten((args, kwargs))
        is_array = [isinstance(x, jax.Array) for x in leaves]
        static = [None if a else x for x, a in zip(leaves, is_array)]

        def call(variables, arrays):
            it = iter(arrays)
            full = [next(it) if a else s for a, s in zip(is_array, static)]
            a, kw = jax.tree.unflatten(treedef, full)
            return self.module.apply(variables, *a, **kw)

        return jax.checkpoint(call)(variables, [x for x, a in zip(leaves, is_array) if a])


def wrap(module, remat: bool):
    """`module` itself unless `remat`, else its Rematerialized stand-in."""
    if not remat or isinstance(module, Rematerialized):
        return module
    return Rematerialized(module)
