"""The exchange registry: the one place outside the exchange folders that imports them.

Built-in exchanges live in ``recorder/exchanges/<name>/`` and describe themselves in their
``spec`` module (an ``ExchangeSpec`` named ``SPEC``). More can be plugged in without
editing the recorder: ``RECORDER_EXCHANGES="name=package.module,..."`` names modules that
define ``SPEC`` (child processes inherit the variable, so collectors see them too).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from recorder.exchanges.base import ExchangeSpec

_BUILTIN = {"kraken": "recorder.exchanges.kraken.spec",
            "kucoin": "recorder.exchanges.kucoin.spec"}
PLUGINS_ENV = "RECORDER_EXCHANGES"
# The exchange of commands given no config (`recorder pairs`, `recorder token`).
DEFAULT_EXCHANGE = "kraken"
_loaded: dict[str, ExchangeSpec] = {}


def _modules() -> dict[str, str]:
    mods = {name: mod for name, mod in _BUILTIN.items() if _exists(mod)}
    for item in os.environ.get(PLUGINS_ENV, "").split(","):
        name, _, mod = item.strip().partition("=")
        if name and mod:
            mods[name.strip()] = mod.strip()
    return mods


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def names() -> tuple[str, ...]:
    """The exchanges this installation can record, built-in first."""
    return tuple(_modules())


def get(name: str) -> ExchangeSpec:
    """The spec of exchange ``name``; KeyError (naming the choices) if there is none."""
    spec = _loaded.get(name)
    if spec is not None:
        return spec
    module = _modules().get(name)
    if module is None:
        raise KeyError(f"{name!r} is not an exchange this recorder knows; allowed: "
                       + ", ".join(names()))
    spec = importlib.import_module(module).SPEC
    if not isinstance(spec, ExchangeSpec) or spec.name != name:
        raise TypeError(f"{module}.SPEC is not the ExchangeSpec of {name!r}")
    _loaded[name] = spec
    return spec
