"""The simulator registry: the one place outside the simulator's exchange folders that imports
them (``recorder simulate --exchange NAME`` and the test helper dispatch here)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from recorder.simulator.kraken.tokens import DEMO_API_KEY, DEMO_API_SECRET

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "SIM_KEY_ENV", "SIM_PASSPHRASE_ENV",
           "SIM_SECRET_ENV", "foreign_options", "names", "run"]

# Where the key pair can come from without showing on a command line (SimulatorProcess uses
# them: a process title is readable by every local user).
SIM_KEY_ENV = "RECORDER_SIM_API_KEY"
SIM_SECRET_ENV = "RECORDER_SIM_API_SECRET"
SIM_PASSPHRASE_ENV = "RECORDER_SIM_API_PASSPHRASE"  # KuCoin

_CLIS = {"kraken": "recorder.simulator.kraken.cli", "kucoin": "recorder.simulator.kucoin.cli"}
# Options of the shared ``recorder simulate`` command that only one simulator reads; the other
# refuses them when they are given. (--api-passphrase is not among them: it may come from the
# environment of a Kraken run too.)
ONLY = {
    "kraken": ("trade_snapshot_v1", "maintenance_after_seconds", "maintenance_seconds"),
    "kucoin": ("ping_interval", "ping_timeout", "max_connection_age", "slow_welcome",
               "rest_error"),
}


def foreign_options(exchange: str, options: dict, command: Callable) -> list[str]:
    """Options given a value other than their default that only another simulator reads."""
    params = inspect.signature(command).parameters
    return [f"--{n.replace('_', '-')}" for other, names in ONLY.items() if other != exchange
            for n in names if n in options and options[n] != params[n].default]


def names() -> tuple[str, ...]:
    return tuple(_CLIS)


def run(exchange: str, options: dict, command: Callable) -> int:
    """Serve the simulator of ``exchange`` with the shared command's ``options``."""
    return importlib.import_module(_CLIS[exchange]).run(options, command)
