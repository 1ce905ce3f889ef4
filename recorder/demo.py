"""`make demo`: record ~20 s of every public channel for two pairs from each local simulator
(Kraken and KuCoin, into one dataset), then print what was recorded. Everything it starts,
it stops."""

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

# KuCoin needs no WebSocket URL: every connect asks the REST endpoint for a bullet token.
KUCOIN_HEADER = """
[exchange]
name = "kucoin"
rest_url = "{url}"

[output]
path = "{data}"
"""
KUCOIN_PAIRS = '["BTC/USDT", "ETH/USDT"]'

# Kraken v2 keeps one ticker stream per symbol and connection (spread is the bbo one), so
# the ticker channel gets a second config, hence a second connection.
CONFIGS = {
    "demo-public.toml": (("trade", ""), ("book", "depth = 10"), ("spread", ""),
                         ("ohlc", "interval = 1")),
    "demo-ticker.toml": (("ticker", ""),),
}
# KuCoin: the full level2 book, synced from a REST snapshot by sequence.
KUCOIN_CONFIG = (("trade", ""), ("book", ""), ("spread", ""), ("ticker", ""),
                 ("ohlc", "interval = 1"))


def config_text(subscriptions: tuple[tuple[str, str], ...], url: str, data: Path,
                header: str = HEADER, pairs: str = PAIRS) -> str:
    text = header.format(url=url, data=data)
    for channel, extra in subscriptions:
        text += f'\n[[subscribe]]\nchannel = "{channel}"\nsymbols = {pairs}\n{extra}\n'
    return text


SUMMARY = """
SELECT 'trades' AS "table", exchange, symbol, count(*) AS "rows", min(ts_recv) AS first,
       max(ts_recv) AS last FROM trades GROUP BY ALL
UNION ALL SELECT 'book', exchange, symbol, count(*), min(ts_recv), max(ts_recv) FROM book
  GROUP BY ALL
UNION ALL SELECT 'spread', exchange, symbol, count(*), min(ts_recv), max(ts_recv) FROM spread
  GROUP BY ALL
UNION ALL SELECT 'ohlc', exchange, symbol, count(*), min(ts_recv), max(ts_recv) FROM ohlc
  GROUP BY ALL
UNION ALL SELECT 'ticker', exchange, symbol, count(*), min(ts_recv), max(ts_recv) FROM ticker
  GROUP BY ALL
ORDER BY 1, 2, 3
"""

VWAP = """
SELECT exchange, symbol, count(*) AS trades, sum(qty) AS volume,
       round(sum(price * qty) / sum(qty), 2) AS vwap, min(price) AS low, max(price) AS high
  FROM trades GROUP BY ALL ORDER BY exchange, symbol
"""

BOOK = """
SELECT exchange, symbol, count(DISTINCT update_id) AS updates,
       count(DISTINCT update_id) FILTER (WHERE verified) AS verified,
       count(DISTINCT update_id) FILTER (WHERE NOT verified) AS integrity_failures
  FROM book GROUP BY ALL ORDER BY exchange, symbol
"""


def main() -> int:
    if "DEMO_DATA" not in os.environ and DATA.exists():
        shutil.rmtree(DATA)  # the demo's own folder: each run starts from nothing
    DATA.mkdir(parents=True, exist_ok=True)
    print("starting the Kraken simulator (synthetic BTC/USD and ETH/USD) and the KuCoin "
          "simulator (BTC/USDT, ETH/USDT) ...", flush=True)
    with SimulatorProcess(["--pairs", "BTC/USD,ETH/USD"]) as sim, \
            SimulatorProcess(["--pairs", "BTC-USDT,ETH-USDT"], exchange="kucoin") as ksim, \
            tempfile.TemporaryDirectory() as tmp:
        url = sim.urls["ws_v2"]
        print(f"simulators: {url} and {ksim.urls['rest']}", flush=True)
        configs = []
        for name, subscriptions in CONFIGS.items():
            path = Path(tmp) / name
            path.write_text(config_text(subscriptions, url, DATA.resolve()))
            configs.append(str(path))
        path = Path(tmp) / "demo-kucoin.toml"
        path.write_text(config_text(KUCOIN_CONFIG, ksim.urls["rest"], DATA.resolve(),
                                    KUCOIN_HEADER, KUCOIN_PAIRS))
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
    print("book updates and their integrity (Kraken checksums, KuCoin sequences):")
    con.sql(BOOK).show()
    print(f"query it yourself:  .venv/bin/recorder query \"SELECT * FROM trades LIMIT 5\" "
          f"--data {DATA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
