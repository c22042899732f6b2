"""Errors that are the user's to fix, reported by `latent_jax.main` as one line without a
traceback. Everything else (a shape bug in a method, a library failure) keeps its traceback.

`ConfigError` is also a `ValueError`, so code that catches `ValueError` around config handling
keeps working; `main` catches `UserError` only, not `ValueError`.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a bad config, flag, path, or workdir state."""


class ConfigError(UserError, ValueError):
    """A bad config value, flag or input; the message names the key or flag."""


class NoCheckpointError(UserError, FileNotFoundError):
    """The workdir holds no (restorable) checkpoint."""


class WorkdirLockedError(UserError):
    """Another job holds the workdir."""


class IncompatibleCheckpointError(UserError):
    """The workdir's checkpoint was written with a config that the run cannot continue."""


class DiskFullError(UserError):
    """No space left for a checkpoint; the last complete one is kept."""
