"""KuCoin spot: public market data over the classic WebSocket API (bullet tokens, topics,
level2 synced from REST snapshots by sequence). ``spec`` describes it to the runtime."""
