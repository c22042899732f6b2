"""What the stand-ins for a Flax module (`nets.precision.MixedPrecision`,
`nets.remat.Rematerialized`) share: ``init`` and every attribute are the wrapped module's, only
``apply`` changes; and the test for "this call has a floating-point array input", without which
neither has anything to do."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def is_float_array(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)


def has_float_array(tree) -> bool:
    return any(is_float_array(x) for x in jax.tree.leaves(tree))


class ModuleStandIn:
    """Forwards ``init`` and every attribute (fields such as ``image_size``, methods passed as
    ``method=``) to the wrapped module; subclasses define ``apply``. Wrappers nest: each one's
    ``apply`` calls the next one's."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["module"], name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.module!r})"

    def init(self, rngs, *args, **kwargs):
        return self.module.init(rngs, *args, **kwargs)   # the module's own (float32) parameters
