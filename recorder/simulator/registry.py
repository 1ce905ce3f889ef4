"""The simulator registry: the one place outside the simulator's exchange folders that imports
them (``recorder simulate --exchange NAME`` and the test helper dispatch here)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from recorder.simulator.kraken.tokens import DEMO_API_KEY, DEMO_API_SECRET

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "SIM_KEY_ENV", "SIM_PASSPHRASE_ENV",
           "SIM_SECRET_ENV", "names", "run"]

# Where the key pair can come from without showing on a command line (SimulatorProcess uses
# them: a process title is readable by every local user).
SIM_KEY_ENV = "RECORDER_SIM_API_KEY"
SIM_SECRET_ENV = "RECORDER_SIM_API_SECRET"
SIM_PASSPHRASE_ENV = "RECORDER_SIM_API_PASSPHRASE"  # KuCoin

_CLIS = {"kraken": "recorder.simulator.kraken.cli", "kucoin": "recorder.simulator.kucoin.cli"}


def names() -> tuple[str, ...]:
    return tuple(_CLIS)


def run(exchange: str, options: dict, command: Callable) -> int:
    """Serve the simulator of ``exchange`` with the shared command's ``options``."""
    return importlib.import_module(_CLIS[exchange]).run(options, command)
