"""Method registry. Importing this package imports every module in it, and each module
registers its methods (`base.register`), so a new method is a new module here plus a config:
no list to edit."""

import importlib
import pkgutil

from latent_jax.methods.base import (Method, PlayerState, get_method, method_class,  # noqa: F401
                                     register, registered_methods)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
