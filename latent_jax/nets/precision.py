"""Mixed precision for every method's networks: `config.model.compute_dtype`.

`MixedPrecision(module, dtype)` stands in for a Flax module wherever a method calls
``init`` / ``apply``: parameters, optimizer state and every non-parameter collection (BatchNorm
statistics, spectral-norm vectors) stay float32 in the player's state and in checkpoints; inside
``apply`` the parameters and the floating-point inputs are cast to `dtype`, so convolutions and
matmuls run in it, and the floating-point outputs are cast back to float32, so every loss is
computed in float32. Gradients flow through the casts to the float32 parameters. Flax's
BatchNorm computes its batch statistics in float32 whatever the input dtype
(``force_float32_reductions``); the updated statistics are cast back to their stored dtype.

A call without any floating-point array input (a module that only returns its parameters:
Lr-LiVAE's mixture means and variances, CCVAE's prior tables) runs in float32: casting such
parameters would only round them.

One set of parameters serves both precisions: a float32 checkpoint resumes in bfloat16 and the
other way round. float16 is refused (it needs loss scaling, which nothing here does).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_jax.errors import ConfigError
from latent_jax.nets import standin

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str, key: str = "config.model.compute_dtype"):
    """The dtype named `name` (float32 or bfloat16), or a ConfigError naming `key`."""
    try:
        return COMPUTE_DTYPES[str(name)]
    except KeyError:
        raise ConfigError(f"{key}: must be one of {', '.join(COMPUTE_DTYPES)}, got "
                          f"{name!r}") from None


def cast_floats(tree, dtype):
    """`tree` with its floating-point array leaves cast to `dtype` (others untouched)."""
    return jax.tree.map(lambda x: x.astype(dtype) if standin.is_float_array(x) else x, tree)


def _cast_like(tree, reference):
    return jax.tree.map(lambda x, r: x.astype(r.dtype) if standin.is_float_array(x) else x,
                        tree, reference)


class MixedPrecision(standin.ModuleStandIn):
    """A Flax module whose ``apply`` computes in `dtype` (see the module docstring); every other
    attribute (``init``, fields such as ``image_size``, methods passed as ``method=``) is the
    wrapped module's."""

    def __init__(self, module: nn.Module, dtype):
        super().__init__(module)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"MixedPrecision({self.module!r}, {jnp.dtype(self.dtype).name})"

    def apply(self, variables, *args, mutable=False, **kwargs):
        if not standin.has_float_array((args, kwargs)):
            return self.module.apply(variables, *args, mutable=mutable, **kwargs)
        cast_vars = {k: (cast_floats(v, self.dtype) if k == "params" else v)
                     for k, v in variables.items()}
        out = self.module.apply(cast_vars, *cast_floats(args, self.dtype), mutable=mutable,
                                **cast_floats(kwargs, self.dtype))
        if mutable is False:
            return cast_floats(out, jnp.float32)
        out, updated = out
        updated = {k: (_cast_like(v, variables[k]) if k in variables else
                       cast_floats(v, jnp.float32)) for k, v in updated.items()}
        return cast_floats(out, jnp.float32), updated


def wrap(module, dtype):
    """`module` itself for float32, else its MixedPrecision stand-in."""
    if jnp.dtype(dtype) == jnp.float32 or isinstance(module, MixedPrecision):
        return module
    return MixedPrecision(module, dtype)
