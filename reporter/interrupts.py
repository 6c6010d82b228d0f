"""Interrupts that must not be lost: Ctrl-C (SIGINT) and a CI timeout's SIGTERM.

Python prints and then ignores a KeyboardInterrupt that lands inside a finalizer or a weakref callback
(seen while WeasyPrint renders), and the run would go on to write its outputs. So the handler also
records the signal, and the output stage calls `check()` before it commits any file.
"""

from __future__ import annotations

import signal
from typing import Any

_received: list[int] = []


def _handler(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM through the recording handler (main thread only; elsewhere a no-op)."""
    _received.clear()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handler)
    except ValueError:  # not the main thread: leave Python's defaults
        pass


def received() -> int | None:
    """The first signal recorded since install(), or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived, even one whose exception was swallowed."""
    if _received:
        raise KeyboardInterrupt
