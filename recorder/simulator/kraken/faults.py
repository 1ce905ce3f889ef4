"""Fault injection: the rules, their validation, and the per-connection trigger state.

Faults come from CLI flags (applied to every connection, so a long run keeps exercising the
client's recovery) and from the control API (applied once to the connections open now, or
also to later ones with ``persistent``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENDPOINTS = ("ws_v1", "ws_v2", "ws_auth_v1", "ws_auth_v2")
DROP_MODES = ("abort", "close", "eof")
STATUSES = ("online", "maintenance", "cancel_only", "post_only")
KINDS = (
    "drop", "stall", "malformed", "corrupt_book", "status", "invalidate_tokens",
    "reject_subscribes", "rest_error", "clear",
)


class FaultError(ValueError):
    pass


@dataclass(slots=True)
class Rule:
    """A per-connection fault: fires once per connection it is armed on."""

    kind: str  # drop | stall | malformed | corrupt_book
    endpoint: str | None = None
    mode: str = "abort"
    code: int = 1000
    after_messages: int | None = None
    after_seconds: float | None = None
    seconds: float = 0.0  # stall length
    symbol: str | None = None

    def matches(self, endpoint: str) -> bool:
        return self.endpoint is None or self.endpoint == endpoint


@dataclass(slots=True)
class RestError:
    """The next ``count`` private REST calls (to ``path`` only, if given; -1 = until
    cleared) are answered with Kraken's error string ``error``."""

    error: str
    count: int
    path: str | None = None


@dataclass(slots=True)
class FaultState:
    persistent: list[Rule] = field(default_factory=list)
    reject_subscribes: int = 0
    rest_errors: list[RestError] = field(default_factory=list)

    def take_reject(self) -> bool:
        if self.reject_subscribes > 0:
            self.reject_subscribes -= 1
            return True
        return False

    def take_rest_error(self, path: str) -> str | None:
        for err in self.rest_errors:
            if err.path is None or err.path == path:
                if err.count > 0:
                    err.count -= 1
                if err.count == 0:
                    self.rest_errors.remove(err)
                return err.error
        return None


def parse_rest_error(spec: dict) -> RestError:
    """``{"kind": "rest_error", "error": "EAPI:Rate limit exceeded", "count": 1,
    "path": "/0/private/TradesHistory"}``"""
    error = spec.get("error", "EAPI:Rate limit exceeded")
    if not isinstance(error, str) or not error.startswith(("E", "W")):
        raise FaultError("error must be a Kraken error string such as EAPI:Invalid key")
    count = int(spec.get("count", 1))
    if count == 0 or count < -1:
        raise FaultError("count must be positive, or -1 for every call until cleared")
    path = spec.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/0/private/")):
        raise FaultError("path must be a private endpoint, /0/private/<Method>")
    return RestError(error, count, path)


def parse_rule(spec: dict) -> Rule:
    """Validate a control-API fault object for a per-connection kind."""
    kind = spec.get("kind")
    endpoint = spec.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise FaultError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    rule = Rule(kind=kind, endpoint=endpoint)
    if kind == "drop":
        rule.mode = spec.get("mode", "abort")
        if rule.mode not in DROP_MODES:
            raise FaultError(f"mode must be one of {', '.join(DROP_MODES)}")
        rule.code = int(spec.get("code", 1000))
    elif kind == "stall":
        rule.seconds = float(spec.get("seconds", 5.0))
    elif kind == "corrupt_book":
        rule.symbol = spec.get("symbol")
        if not isinstance(rule.symbol, str):
            raise FaultError("corrupt_book needs a symbol")
    elif kind != "malformed":
        raise FaultError(f"not a per-connection fault: {kind!r}")
    if spec.get("after_messages") is not None:
        rule.after_messages = int(spec["after_messages"])
    if spec.get("after_seconds") is not None:
        rule.after_seconds = float(spec["after_seconds"])
    return rule


MALFORMED_FRAME = b'{"channel":"book","type":"update","data":[{"symbol":'
