"""Stopping the command line on Ctrl-C and SIGTERM.

Python runs a signal's handler only between bytecodes, so a process blocked inside torch (joining
a torchrun launch whose other processes never come, or waiting in a collective for a process that
died) would never see the signal: not Ctrl-C, nor the SIGTERM torchrun sends when another process
fails. Such a process is ended by a watcher thread a grace period after the signal; one that takes
the signal in time stops as an interrupt, removing its partial output.
"""

from __future__ import annotations

import os
import signal
import threading
import time

GRACE_S = 10.0
_STOPS = (signal.SIGINT, signal.SIGTERM)


def handle_stops(prefix: str = "", grace_s: float = GRACE_S) -> None:
    """Raise ``KeyboardInterrupt`` on SIGTERM as on Ctrl-C, and end the process ``grace_s`` seconds
    after either if it is still running then, with exit code 128 + the signal's number and a line
    to stderr after ``prefix`` (such as ``"error: rank 1: "``). Call from the main thread, once."""
    signal.signal(signal.SIGTERM, _interrupt)
    read, write = os.pipe()
    os.set_blocking(write, False)
    # The C-level handler writes each signal's number here even while the main thread is blocked.
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    threading.Thread(target=_end_if_stuck, args=(read, prefix, grace_s), daemon=True,
                     name="wan_runtime stop watcher").start()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _end_if_stuck(read: int, prefix: str, grace_s: float) -> None:
    while (signum := os.read(read, 1)[0]) not in _STOPS:
        pass
    time.sleep(grace_s)
    name = signal.Signals(signum).name
    line = (f"{prefix}stopped by {name}, not taken within {grace_s:g} s while waiting inside torch (for the "
            "other processes of the launch?); if another process failed, its error is above\n")
    os.write(2, line.encode())
    os._exit(128 + signum)
