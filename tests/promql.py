"""A small evaluator of the PromQL the alert rules use, over scraped samples.

Enough to judge docs/alerts.yml against real scrapes without a Prometheus server: vector
selectors with label matchers (``=``, ``!=``, ``=~``, ``!~``), range selectors inside
``increase``/``rate``/``changes``, arithmetic between two vectors with the same labels or a
vector and a number, and comparisons with a number (as filters). Instant selectors look
back 5 minutes, like Prometheus. ``increase`` is the sum of the rises within the window (a
drop is a counter reset), without Prometheus's extrapolation to the window's edges: it is
positive exactly when the counter rose within the window. ``promtool test rules``
(tests/test_alert_rules.py) checks the rules with the real engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

LOOKBACK = 300.0
Labels = frozenset  # of (name, value)

_TOKEN = re.compile(r"""\s*(?:
    (?P<dur>\[\s*\d+[smhd]\s*\])
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<id>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/<>(){},=])
)""", re.VERBOSE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMPARE = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__,
            "==": float.__eq__, "!=": float.__ne__}
_ARITH = {"+": float.__add__, "-": float.__sub__, "*": float.__mul__,
          "/": lambda a, b: a / b if b else float("nan")}


@dataclass
class Store:
    """Samples per series: (name, labels) -> [(time, value)], in time order."""

    series: dict[tuple[str, Labels], list[tuple[float, float]]] = field(default_factory=dict)

    def add_scrape(self, at: float, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                self.series.setdefault(key, []).append((at, float(s.value)))

    def add(self, name: str, labels: dict, at: float, value: float) -> None:
        self.series.setdefault((name, frozenset(labels.items())), []).append((at, value))


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse {expr[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, expr: str) -> None:
        self.toks = _tokens(expr)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ValueError(f"expected {value!r}, got {tok}")
        self.i += 1
        return tok

    def parse(self):  # noqa: ANN201 - an AST of tuples
        node = self.compare()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()}")
        return node

    def compare(self):  # noqa: ANN201
        left = self.additive()
        tok = self.peek()
        if tok and tok[1] in _COMPARE:
            self.take()
            return ("cmp", tok[1], left, self.additive())
        return left

    def additive(self):  # noqa: ANN201
        node = self.multiplicative()
        while (tok := self.peek()) and tok[1] in "+-" and tok[0] == "op":
            self.take()
            node = ("arith", tok[1], node, self.multiplicative())
        return node

    def multiplicative(self):  # noqa: ANN201
        node = self.atom()
        while (tok := self.peek()) and tok[1] in "*/" and tok[0] == "op":
            self.take()
            node = ("arith", tok[1], node, self.atom())
        return node

    def atom(self):  # noqa: ANN201
        kind, value = self.take()
        if kind == "num":
            return ("num", float(value))
        if value == "(":
            node = self.compare()
            self.take(")")
            return node
        if kind != "id":
            raise ValueError(f"unexpected {value!r}")
        nxt = self.peek()
        if nxt and nxt[1] == "(":  # a function of one range vector
            self.take("(")
            arg = self.atom()
            self.take(")")
            if value not in ("increase", "rate", "changes"):
                raise ValueError(f"function {value} is not supported")
            return ("func", value, arg)
        matchers = []
        if nxt and nxt[1] == "{":
            self.take("{")
            while self.peek()[1] != "}":
                _, label = self.take()
                _, op = self.take()
                _, text = self.take()
                matchers.append((label, op, text[1:-1].encode().decode("unicode_escape")))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
        nxt = self.peek()
        if nxt and nxt[0] == "dur":
            self.take()
            inner = nxt[1].strip("[] ")
            return ("range", value, matchers, float(inner[:-1]) * _UNITS[inner[-1]])
        return ("sel", value, matchers)


def _match(labels: Labels, matchers: list) -> bool:
    d = dict(labels)
    for label, op, text in matchers:
        v = d.get(label, "")
        if (op == "=" and v != text) or (op == "!=" and v == text) or \
                (op == "=~" and not re.fullmatch(text, v)) or \
                (op == "!~" and re.fullmatch(text, v)):
            return False
    return True


def _strip(labels: Labels) -> Labels:
    return frozenset((k, v) for k, v in labels if k != "__name__")


def evaluate(expr: str, store: Store, at: float):  # noqa: ANN201 - dict or float
    """The value of ``expr`` at time ``at``: {labels: value} for a vector, or a float."""
    return _eval(_Parser(expr).parse(), store, at)


def _eval(node, store: Store, at: float):  # noqa: ANN001, ANN202
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "sel":
        _, name, matchers = node
        out = {}
        for (n, labels), samples in store.series.items():
            if n != name or not _match(labels, matchers):
                continue
            recent = [(t, v) for t, v in samples if at - LOOKBACK < t <= at]
            if recent:
                out[labels | {("__name__", name)}] = recent[-1][1]
        return out
    if kind == "func":
        _, func, arg = node
        if arg[0] != "range":
            raise ValueError(f"{func} needs a range vector")
        _, name, matchers, window = arg
        out = {}
        for (n, labels), samples in store.series.items():
            if n != name or not _match(labels, matchers):
                continue
            inside = [v for t, v in samples if at - window < t <= at]
            if len(inside) < 2:
                continue
            rises = changes = 0.0
            for a, b in zip(inside, inside[1:], strict=False):
                rises += b - a if b >= a else b
                changes += b != a
            if func == "increase":
                out[labels] = rises
            elif func == "rate":
                out[labels] = rises / window
            else:
                out[labels] = changes
        return out
    if kind in ("cmp", "arith"):
        _, op, left, right = node
        a, b = _eval(left, store, at), _eval(right, store, at)
        fn = _COMPARE.get(op) or _ARITH[op]
        if isinstance(a, float) and isinstance(b, float):
            return float(fn(a, b))
        if isinstance(b, float):
            if kind == "cmp":
                return {k: v for k, v in a.items() if fn(v, b)}
            return {_strip(k): fn(v, b) for k, v in a.items()}
        if isinstance(a, float):
            if kind == "cmp":
                return {k: v for k, v in b.items() if fn(a, v)}
            return {_strip(k): fn(a, v) for k, v in b.items()}
        right_by = {_strip(k): v for k, v in b.items()}
        out = {}
        for k, v in a.items():
            other = right_by.get(_strip(k))
            if other is None:
                continue
            if kind == "cmp":
                if fn(v, other):
                    out[k] = v
            else:
                out[_strip(k)] = fn(v, other)
        return out
    raise ValueError(f"cannot evaluate {node}")


def alerts(rule: dict, store: Store, at: float, step: float = 1.0) -> list[dict]:
    """The labels of each alert of ``rule`` firing at ``at``: its expression true at every
    evaluation (each ``step`` seconds) over its ``for`` duration."""
    hold = _duration(rule.get("for", "0s"))
    result = evaluate(rule["expr"], store, at)
    firing = []
    for labels in result:
        t = at - hold
        ok = True
        while hold and t < at:
            if _strip(labels) not in {_strip(k) for k in evaluate(rule["expr"], store, t)}:
                ok = False
                break
            t += step
        if ok:
            firing.append({**dict(_strip(labels)), **rule.get("labels", {}),
                           "alertname": rule["alert"]})
    return firing


def _duration(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+)([smhd])", str(text)):
        total += int(number) * _UNITS[unit]
    return total
