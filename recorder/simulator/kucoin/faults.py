"""Fault injection for the KuCoin simulator: rules, their validation, and global fault state.

Per-connection rules (``drop``, ``stall``, ``skip_level2``, ``malformed``, ``limit_error``)
fire once on each connection they are armed on: now, after a number of messages, or after some
seconds; from CLI flags they are armed on every connection. Global faults change what the
simulator does for the next requests or connections (``slow_welcome``, ``rest_error``,
``reject_subscribes``, ``max_connection_age``, ``invalidate_tokens``, ``key``, ``limits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recorder.simulator.kucoin.auth import ERRORS

DROP_MODES = ("abort", "close", "eof")
RULE_KINDS = ("drop", "stall", "skip_level2", "malformed", "limit_error")
GLOBAL_KINDS = (
    "slow_welcome", "rest_error", "reject_subscribes", "max_connection_age",
    "invalidate_tokens", "key", "limits", "clear",
)
MALFORMED_FRAME = b'{"topic":"/market/level2:BTC-USDT","type":"message","subject":"trade.l2upd'


class FaultError(ValueError):
    pass


@dataclass(slots=True)
class Rule:
    kind: str
    private: bool | None = None  # only connections made with a private (True) / public token
    mode: str = "abort"
    code: int = 1000
    after_messages: int | None = None
    after_seconds: float | None = None
    seconds: float = 0.0  # stall length
    symbol: str | None = None

    def matches(self, private: bool) -> bool:
        return self.private is None or self.private == private


@dataclass(slots=True)
class RestError:
    code: str
    count: int  # requests left to fail; -1 = until cleared
    path: str | None = None  # only this path (e.g. /api/v1/bullet-public)

    def applies(self, path: str) -> bool:
        return self.path is None or self.path == path


@dataclass(slots=True)
class FaultState:
    persistent: list[Rule] = field(default_factory=list)
    reject_subscribes: int = 0
    slow_welcome: float = 0.0  # seconds before the welcome
    slow_welcome_count: int = 0  # connections left to delay; -1 = every one
    rest_errors: list[RestError] = field(default_factory=list)

    def take_reject(self) -> bool:
        if self.reject_subscribes > 0:
            self.reject_subscribes -= 1
            return True
        return False

    def take_welcome_delay(self) -> float:
        if self.slow_welcome_count == 0 or self.slow_welcome <= 0:
            return 0.0
        if self.slow_welcome_count > 0:
            self.slow_welcome_count -= 1
        return self.slow_welcome

    def take_rest_error(self, path: str) -> str | None:
        for err in self.rest_errors:
            if err.applies(path):
                if err.count > 0:
                    err.count -= 1
                if err.count == 0:
                    self.rest_errors.remove(err)
                return err.code
        return None


def parse_rule(spec: dict) -> Rule:
    """Validate a control-API object of a per-connection kind."""
    kind = spec.get("kind")
    private = spec.get("private")
    if private is not None and not isinstance(private, bool):
        raise FaultError("private must be true, false or null")
    rule = Rule(kind=str(kind), private=private)
    if kind == "drop":
        rule.mode = spec.get("mode", "abort")
        if rule.mode not in DROP_MODES:
            raise FaultError(f"mode must be one of {', '.join(DROP_MODES)}")
        rule.code = int(spec.get("code", 1000))
    elif kind == "stall":
        rule.seconds = float(spec.get("seconds", 5.0))
        if not rule.seconds > 0:
            raise FaultError("stall needs seconds > 0")
    elif kind == "skip_level2":
        rule.symbol = spec.get("symbol")
        if not isinstance(rule.symbol, str) or not rule.symbol:
            raise FaultError("skip_level2 needs a symbol")
    elif kind not in ("malformed", "limit_error"):
        raise FaultError(f"unknown fault kind {kind!r}: one of "
                         f"{', '.join(RULE_KINDS + GLOBAL_KINDS)}")
    if spec.get("after_messages") is not None:
        rule.after_messages = int(spec["after_messages"])
        if rule.after_messages < 0:
            raise FaultError("after_messages must not be negative")
    if spec.get("after_seconds") is not None:
        rule.after_seconds = float(spec["after_seconds"])
        if rule.after_seconds < 0:
            raise FaultError("after_seconds must not be negative")
    return rule


def parse_rest_error(spec: dict) -> RestError:
    code = str(spec.get("code", "429000"))
    if code not in ERRORS:
        raise FaultError(f"rest_error code must be one of {', '.join(sorted(ERRORS))}")
    count = int(spec.get("count", 1))
    if count == 0 or count < -1:
        raise FaultError("count must be positive, or -1 for every request until cleared")
    path = spec.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise FaultError("path must start with /")
    return RestError(code, count, path)
