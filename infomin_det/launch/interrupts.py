"""Ctrl-C and SIGTERM held off while jobs are being started, so that no job starts unrecorded.

A SIGINT / SIGTERM that lands between two ``submit`` calls would otherwise unwind the submitter
with a job already running and neither its id in the registry nor a handle for the caller to
cancel it. Inside :func:`deferred_interrupts` such a signal is recorded, not acted on; when the
block ends the previous handlers come back and each recorded signal is raised again, once, so it
takes effect exactly where it would have, only later. The signal mask is left alone (a child
started inside the block inherits the mask, and a job must stay cancellable).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends (no-op off the main thread, where Python cannot
    install handlers, and where a handler not set from Python could not be put back). Nested blocks
    pass the signal outwards: it acts when the outermost ends."""
    if threading.current_thread() is not threading.main_thread() or any(signal.getsignal(s) is None for s in HELD):
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)
