"""A local, Kraken-compatible exchange for tests, demos and benchmarks (``recorder simulate``).

Serves WebSocket API v1 and v2 (public and private) and a REST subset from either a synthetic,
seeded market or a replayed capture, with faults on demand. See docs/simulator.md.
"""
