"""Method registry. Importing this package registers every method module."""

from latent_jax.methods import ccvae  # noqa: F401  (registers 'ccvae', 'diva', 'm2')
from latent_jax.methods import introvac  # noqa: F401  (registers 'introvac', 'vac')
from latent_jax.methods import csvae  # noqa: F401  (registers 'csvae', 'vae', 'condvae', 'condvae_info')
from latent_jax.methods.base import (Method, PlayerState, get_method, method_class,  # noqa: F401
                                     register, registered_methods)
