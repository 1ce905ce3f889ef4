"""A local, KuCoin-compatible spot exchange (``recorder simulate --exchange kucoin``).

Serves the classic spot WebSocket API (bullet tokens, public topics, the private
``/spotMarket/tradeOrdersV2`` topic) and a REST subset, from a seeded synthetic market or a
replayed capture, with faults on demand. See docs/simulator-kucoin.md.

Nothing here imports the Kraken simulator or any recorder package outside ``recorder.simulator``
(its exchange-free core) and ``recorder.core.secrets`` (private files).
"""
