"""Cooperative interruption of long work (evaluations, judge training) by SIGTERM / SIGINT.

While an evaluation runs, the trainer's signal handler only records the signal here; every
long loop (each progress-bar update, each evaluation batch, each chunk of judge or MS-SSIM
work) calls :func:`check`, which raises :class:`Interrupted`. The handler does not raise
itself: Python runs a handler between two bytecodes of whatever is executing, and an exception
raised while a garbage-collector callback, a weakref finaliser or a ``__del__`` runs is printed
as "Exception ignored in ... Traceback" and dropped (JAX's ``_xla_gc_callback`` and
``WeakValueDictionary``'s ``remove`` are such callbacks). A signal is therefore never lost and
never prints a traceback; it is acted on within one batch.
"""

from __future__ import annotations

import contextlib


class Interrupted(BaseException):
    """A signal arrived while interruptible work ran. A BaseException, like KeyboardInterrupt:
    it can land inside any library's ``except Exception`` (a cache read, a data reader), which
    must not swallow it."""


_armed = False
_pending = ""


@contextlib.contextmanager
def armed():
    """Inside this block a signal recorded by :func:`request` interrupts the work."""
    global _armed
    previous, _armed = _armed, True
    try:
        check()
        yield
    finally:
        _armed = previous


def is_armed() -> bool:
    return _armed


def request(signal_name: str):
    """Records that `signal_name` arrived (called from a signal handler)."""
    global _pending
    _pending = signal_name or "a signal"


def clear():
    global _pending
    _pending = ""


def check():
    """Raises `Interrupted` if a signal arrived and interruptible work is running."""
    if _armed and _pending:
        raise Interrupted(_pending)
