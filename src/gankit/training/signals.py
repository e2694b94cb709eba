"""Stopping a run cleanly: SIGINT (Ctrl+C) and SIGTERM ask the loop to stop after the
current step, save and say how to resume; a second Ctrl+C aborts at once."""

from __future__ import annotations

import signal
from contextlib import contextmanager


@contextmanager
def stop_requests():
    """A list that holds the signal numbers received while inside the block."""
    requested: list[int] = []

    def handler(signum, frame):
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: no signal handling, nothing to restore
        old = {}
    try:
        yield requested
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
