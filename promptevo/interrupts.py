"""Ctrl-C and SIGTERM that always stop the command, with one clean line.

A KeyboardInterrupt raised while a library runs a finalizer or a callback can be swallowed
(Python prints "Exception ignored in ..." and carries on), which during model loading let a run
start anyway. The handlers here also record the request, and `check()` raises it again at the
next safe point (after loading, at every stage of the loop)."""

from __future__ import annotations

import os
import signal
import sys
import threading

_requested = threading.Event()


class Terminated(KeyboardInterrupt):
    """The process was asked to stop with SIGTERM."""


def _on_sigint(signum, frame):
    _requested.set()
    raise KeyboardInterrupt


# After SIGTERM the process is gone within this many seconds, even when the stop is swallowed or
# a long C call (a model load) holds the interpreter: the store commits whole rounds in
# transactions, so ending the process loses nothing that was saved.
TERM_GRACE_S = float(os.environ.get("PROMPTEVO_TERM_GRACE_S", "10"))


def _exit_if_still_running() -> None:
    if _requested.is_set():
        sys.stderr.write(f"stopped (SIGTERM, after a {TERM_GRACE_S:.0f} s grace); finished work is saved\n")
        sys.stderr.flush()
        os._exit(143)


def _on_sigterm(signum, frame):
    first = not _requested.is_set()
    _requested.set()
    if first:
        watchdog = threading.Timer(TERM_GRACE_S, _exit_if_still_running)
        watchdog.daemon = True
        watchdog.start()
    raise Terminated


def _unraisable(hook):
    def quiet(unraisable):  # the stop is recorded and re-raised by check(); no stray fragment
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        hook(unraisable)

    return quiet


def install() -> None:
    """Install the handlers (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _requested.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if not getattr(sys.unraisablehook, "_promptevo", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)
        sys.unraisablehook._promptevo = True  # type: ignore[attr-defined]


def check() -> None:
    """Raise the stop that was asked for, if a library swallowed it."""
    if _requested.is_set():
        raise KeyboardInterrupt
