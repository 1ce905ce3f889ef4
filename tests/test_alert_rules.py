"""docs/alerts.yml: valid for Prometheus (promtool), unit-tested (docs/alerts.test.yml), every
rule documented in docs/operations.md, and written against metrics the recorder exports.
tests/promql.py (the evaluator the e2e tests fire the rules with) must agree with promtool on
the unit tests' series. Firing against the simulator's faults: tests/test_metrics_e2e.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.metrics_helpers import (
    RULES,
    rules,
)
from tests.promql import Store, alerts, evaluate

ROOT = Path(__file__).resolve().parents[1]
UNIT_TESTS = ROOT / "docs" / "alerts.test.yml"
# Rules on metrics no code exports yet: upload lag waits for S3 storage; `up` is
# Prometheus's own.
NOT_EXPORTED = {"up"}






def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        # A missing tool fails with the reason, never a silent skip.
        pytest.fail("promtool is missing: install Debian's prometheus package "
                    "(apt-get install -y prometheus; .ci/run does)")
    return path


def test_every_asked_for_alert_is_there_and_documented():
    names = {r["alert"] for r in rules()}
    assert {"RecorderNoData", "RecorderGap", "RecorderIntegrityFailures", "RecorderDiskLow",
            "RecorderUploadLag", "RecorderKeyRefused"} <= names
    ops = (ROOT / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", ops, re.M)}
    for r in rules():
        assert r["labels"]["severity"] in ("page", "warning")
        assert r["annotations"]["summary"]
        anchor = r["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"docs/operations.md has no section for {r['alert']}"


def test_rules_use_exported_metric_names():
    from tests.metrics_helpers import exposition_of_a_busy_job

    exported = {m.group(1) for m in re.finditer(r"^(\w+?)(?:_bucket|_count|_sum)?[{ ]",
                                                exposition_of_a_busy_job(), re.M)}
    for r in rules():
        used = set(re.findall(r"\b(recorder_\w+|up)\b(?=[{\[\s)]|$)", r["expr"]))
        assert used, r["expr"]
        missing = used - exported - NOT_EXPORTED
        assert not missing, f"{r['alert']} uses {missing}, which nothing exports"


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    unit = subprocess.run([promtool, "test", "rules", str(UNIT_TESTS)], capture_output=True,
                          text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_rule_has_a_unit_test():
    tested = {t["alertname"] for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for r in rules()}


def _series(text: str) -> tuple[str, dict]:
    m = re.fullmatch(r"(\w+)\{(.*)\}", text)
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
    return m.group(1), labels


def _seconds(text: str) -> float:
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u]
               for n, u in re.findall(r"(\d+)([smh])", text))


def test_the_evaluator_agrees_with_promtool_on_the_unit_tests():
    """tests/promql.py fires the rules in the e2e tests: on every series of
    docs/alerts.test.yml it finds exactly the alerts promtool is expected to."""
    by_name = {r["alert"]: r for r in rules()}
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        step = _seconds(case["interval"])
        store = Store()
        for s in case["input_series"]:
            name, labels = _series(s["series"])
            for i, value in enumerate(s["values"].split()):
                store.add(name, labels, i * step, float(value))
        for t in case["alert_rule_test"]:
            at = _seconds(t["eval_time"])
            got = alerts(by_name[t["alertname"]], store, at, step=step)
            want = [{**e["exp_labels"], "alertname": t["alertname"]} for e in t["exp_alerts"]]
            key = lambda d: sorted(d.items())  # noqa: E731
            assert sorted(got, key=key) == sorted(want, key=key), (t["alertname"], at)


def test_evaluator_basics():
    store = Store()
    store.add_scrape(0.0, 'x_total{a="1"} 0\nx_total{a="2"} 5\ny{a="1"} 2\n')
    store.add_scrape(10.0, 'x_total{a="1"} 3\nx_total{a="2"} 1\ny{a="1"} 4\n')
    inc = evaluate("increase(x_total[1m])", store, 10.0)
    assert inc == {frozenset({("a", "1")}): 3.0, frozenset({("a", "2")}): 1.0}  # a reset
    assert evaluate('x_total{a=~"1|3"} > 2', store, 10.0) == {
        frozenset({("a", "1"), ("__name__", "x_total")}): 3.0}
    assert evaluate("x_total / y", store, 10.0) == {frozenset({("a", "1")}): 0.75}
    assert evaluate('x_total{a!="1"}', store, 400.0) == {}  # past the 5 minute look-back


DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_imports_as_is():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + \
            p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("messages", "rows", "lag", "gaps", "integrity", "disk"):
        assert word in titles
    assert dash["templating"]["list"][0]["name"] == "exchange"


def test_grafana_queries_are_valid_promql_on_exported_metrics(tmp_path):
    from tests.metrics_helpers import exposition_of_a_busy_job

    exported = {m.group(1) for m in re.finditer(r"^(\w+?)(?:_bucket|_count|_sum)?[{ ]",
                                                exposition_of_a_busy_job(), re.M)}
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    for expr in exprs:
        for name in re.findall(r"\b(recorder_\w+)", expr):
            base = re.sub(r"_bucket$", "", name)
            assert base in exported, f"the dashboard uses {name}, which nothing exports"
    # promtool parses each query as a recording rule (Grafana's variables filled in).
    promtool = _promtool()
    concrete = [e.replace("$__rate_interval", "1m").replace('"$exchange"', '".*"')
                for e in exprs]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(concrete)]}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
