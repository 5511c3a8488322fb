"""A process blocked inside torch, where Python cannot take a signal, still ends on Ctrl-C or
SIGTERM: once the grace period has passed, with the signal's exit code and a line saying why."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import cli_env
from tests.distributed.ranks import free_port

# Rank 0 of a launch of two whose other process never comes: blocked joining it.
_WAITING_ALONE = """
import signal
import warnings
import torch
from wan_runtime.distributed.launch import Launch
from wan_runtime.stop_signals import handle_stops

# Ctrl-C as a terminal's foreground process takes it (a process started in the background, as CI's,
# inherits SIGINT ignored, which handle_stops leaves so).
signal.signal(signal.SIGINT, signal.default_int_handler)
handle_stops("error: rank 0: ", grace_s=1)
warnings.simplefilter("always")
Launch(0, 2, 0).start(torch.device("cpu"), note_after_s=1)
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_process_waiting_for_the_others_ends_on_a_stop(stop):
    env = cli_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", RANK="0")
    process = subprocess.Popen([sys.executable, "-c", _WAITING_ALONE], env=env, stderr=subprocess.PIPE)
    told = b""
    while b"waited 1 s for the other processes" not in told:  # blocked in the rendezvous by now
        line = process.stderr.readline()
        assert line, told.decode()
        told += line
    assert b"(2 in all) at 127.0.0.1:" in told and b"start them all with torchrun" in told
    _wait_until_blocked(process.pid)
    process.send_signal(stop)
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 128 + stop, (told + rest).decode()
    assert rest.decode().strip().endswith(
        f"error: rank 0: stopped by {stop.name}, not taken within 1 s while waiting inside torch (for the "
        "other processes of the launch?); if another process failed, its error is above")


def _wait_until_blocked(pid: int, samples: int = 10) -> None:
    """Until the main thread of ``pid`` has slept ``samples`` times in a row, 50 ms apart: blocked in
    the rendezvous, past the Python code (imports included, slow on a loaded machine) that would
    take the signal itself."""
    asleep, deadline = 0, time.monotonic() + 60
    while asleep < samples:
        assert time.monotonic() < deadline, "the process never blocked"
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        asleep = asleep + 1 if state == "S" else 0
        time.sleep(0.05)
