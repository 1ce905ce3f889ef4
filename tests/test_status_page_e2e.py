"""The live status page in a real headless browser (Debian's chromium, over the DevTools
protocol: tests/cdp.py): it renders every collector's state, rates and events and the
coverage chart, refreshes by itself, and shows a gap as it happens, without a reload.
Screenshots are taken before and after the gap (printed paths, in the test's temp folder)."""

from __future__ import annotations

import json
import struct

import pytest

from recorder.simulator.testing import SimulatorProcess
from tests.cdp import Browser, find_chromium
from tests.e2e import _config, _state, wait_until
from tests.metrics_helpers import recorder_run


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "8", "--rate", "300"], capture_stderr=True) as s:
        yield s


@pytest.fixture(scope="module")
def chromium():
    if find_chromium() is None:
        # A missing browser fails with the reason, never a silent skip.
        pytest.fail("chromium is missing: install Debian's chromium package "
                    "(apt-get install -y chromium; .ci/run does)")


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def _row(key: str) -> str:
    return f"document.querySelector('#collectors tr[data-collector={json.dumps(key)}]')"


def test_the_status_page_shows_a_gap_as_it_happens(sim, chromium, tmp_path):
    data = tmp_path / "data"
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="page")
    with recorder_run(tmp_path, cfg, data) as (proc, port):
        wait_until(lambda: _state(data, "page-public").get("state") == "running", 30,
                   "the collector")
        url = f"http://127.0.0.1:{port}/"
        with Browser() as b:
            b.open(url)
            assert b.eval("document.title") == "market-recorder: status"
            row = _row("page-public")
            b.wait_for(f"{row} && {row}.dataset.connected === '1' && "
                       f"/trades \\d/.test({row}.innerText)", what="a connected collector")
            cells = b.eval(f"Array.from({row}.cells).map(c => c.innerText)")
            assert cells[:3] == ["page-public", "kraken", "running"]
            assert b.eval(f"{row}.dataset.gaps") == "0"
            b.wait_for("Number(document.body.dataset.refreshes || 0) >= 2",
                       what="the page to refresh itself")
            # Rates once two samples exist; the last message a moment ago.
            b.wait_for(f"{row}.cells[7].innerText !== '-'", what="a message rate")
            assert float(b.eval(f"{row}.cells[7].innerText").replace(",", "")) > 0
            assert b.eval(f"{row}.cells[9].innerText").endswith(" s")
            assert b.eval("document.querySelector('#events tr[data-kind=\"connected\"]') "
                          "!== null")
            # The coverage chart (made by a child process) has loaded as an image.
            b.wait_for("(() => { const i = document.querySelector('img.coverage'); "
                       "return i && i.complete && i.naturalWidth > 300; })()", timeout=60,
                       what="the coverage chart")
            before = b.screenshot(tmp_path / "status-page.png")
            width, height = _png_size(before)
            assert width >= 1000 and height >= 500 and before.stat().st_size > 20_000

            sim.control.drop(endpoint="ws_v2")
            # The same page, not reloaded: its script fetched the gap.
            b.wait_for(f"{row}.dataset.gaps === '1'", what="the gap on the page")
            b.wait_for("document.querySelector('#events tr[data-kind=\"disconnected\"]') "
                       "!== null", what="the disconnected event")
            text = b.eval("document.getElementById('live').innerText")
            assert "disconnected" in text
            assert b.eval(f"{row}.className") in ("gap", "bad")  # marked (bad: reconnecting)
            assert b.eval(f"{row}.cells[12].innerText").endswith(" ago")
            assert b.eval("performance.getEntriesByType('navigation').length") == 1
            assert b.eval("document.URL") == url
            kind_cell = b.eval("document.querySelector('#events tr[data-kind=\"disconnected\"]"
                               " td:nth-child(3)').className")
            assert kind_cell == "kind-gap"
            b.wait_for(f"{row}.dataset.connected === '1'", what="the reconnect on the page")
            after = b.screenshot(tmp_path / "status-page-after-gap.png")
            _png_size(after)
            print(f"\nscreenshots: {before} {after}")
    assert proc.returncode == 0
