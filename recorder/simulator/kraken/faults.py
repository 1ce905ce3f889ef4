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
    "reject_subscribes", "clear",
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
class FaultState:
    persistent: list[Rule] = field(default_factory=list)
    reject_subscribes: int = 0

    def take_reject(self) -> bool:
        if self.reject_subscribes > 0:
            self.reject_subscribes -= 1
            return True
        return False


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
