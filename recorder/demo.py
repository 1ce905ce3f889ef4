"""`make demo`: record ~20 s of every public channel for two pairs from the local simulator,
then print what was recorded. Everything it starts, it stops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from recorder.analysis.query import connect
from recorder.simulator.testing import SimulatorProcess

PAIRS = '["BTC/USD", "ETH/USD"]'
SECONDS = float(os.environ.get("DEMO_SECONDS", "20"))
DATA = Path(os.environ.get("DEMO_DATA", "data/demo"))

HEADER = """
[exchange]
name = "kraken"
api = "v2"
url = "{url}"

[output]
path = "{data}"
"""

# Kraken v2 keeps one ticker stream per symbol and connection (spread is the bbo one), so
# the ticker channel gets a second config, hence a second connection.
CONFIGS = {
    "demo-public.toml": (("trade", ""), ("book", "depth = 10"), ("spread", ""),
                         ("ohlc", "interval = 1")),
    "demo-ticker.toml": (("ticker", ""),),
}


def config_text(subscriptions: tuple[tuple[str, str], ...], url: str, data: Path) -> str:
    text = HEADER.format(url=url, data=data)
    for channel, extra in subscriptions:
        text += f'\n[[subscribe]]\nchannel = "{channel}"\nsymbols = {PAIRS}\n{extra}\n'
    return text


SUMMARY = """
SELECT 'trades' AS "table", symbol, count(*) AS "rows", min(ts_recv) AS first, max(ts_recv) AS last
  FROM trades GROUP BY symbol
UNION ALL SELECT 'book', symbol, count(*), min(ts_recv), max(ts_recv) FROM book GROUP BY symbol
UNION ALL SELECT 'spread', symbol, count(*), min(ts_recv), max(ts_recv) FROM spread GROUP BY symbol
UNION ALL SELECT 'ohlc', symbol, count(*), min(ts_recv), max(ts_recv) FROM ohlc GROUP BY symbol
UNION ALL SELECT 'ticker', symbol, count(*), min(ts_recv), max(ts_recv) FROM ticker GROUP BY symbol
ORDER BY 1, 2
"""

VWAP = """
SELECT symbol, count(*) AS trades, sum(qty) AS volume,
       round(sum(price * qty) / sum(qty), 2) AS vwap, min(price) AS low, max(price) AS high
  FROM trades GROUP BY symbol ORDER BY symbol
"""

BOOK = """
SELECT symbol, count(DISTINCT update_id) AS updates,
       count(DISTINCT update_id) FILTER (WHERE verified) AS checksums_verified,
       count(DISTINCT update_id) FILTER (WHERE NOT verified) AS checksum_failures
  FROM book GROUP BY symbol ORDER BY symbol
"""


def main() -> int:
    if "DEMO_DATA" not in os.environ and DATA.exists():
        shutil.rmtree(DATA)  # the demo's own folder: each run starts from nothing
    DATA.mkdir(parents=True, exist_ok=True)
    print("starting the Kraken simulator (synthetic BTC/USD and ETH/USD) ...", flush=True)
    with SimulatorProcess(["--pairs", "BTC/USD,ETH/USD"]) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        url = sim.urls["ws_v2"]
        print(f"simulator: {url}", flush=True)
        configs = []
        for name, subscriptions in CONFIGS.items():
            path = Path(tmp) / name
            path.write_text(config_text(subscriptions, url, DATA.resolve()))
            configs.append(str(path))
        print(f"recording every public channel for {SECONDS:.0f} s into {DATA} ...",
              flush=True)
        cmd = [sys.executable, "-m", "recorder", "run", *configs, "--duration", str(SECONDS),
               "--log-level", "warning"]
        code = subprocess.call(cmd)
        if code != 0:
            print(f"recorder exited with {code}", file=sys.stderr)
            return code
    con = connect(DATA)
    print("\nrows recorded per table and symbol:")
    con.sql(SUMMARY).show()
    print("trades: volume and VWAP (exact decimals):")
    con.sql(VWAP).show()
    print("book updates and their checksums:")
    con.sql(BOOK).show()
    print(f"query it yourself:  .venv/bin/recorder query \"SELECT * FROM trades LIMIT 5\" "
          f"--data {DATA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
