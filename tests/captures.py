"""Readers for the real Kraken captures in ../shared/data/kraken (never copied here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kraken"


def cryptofeed_frames(name: str) -> Iterator[str]:
    """Received frames of a cryptofeed capture: lines '<epoch>: <json>' (sent lines skipped)."""
    for line in (DATA / "cryptofeed" / name).read_text().splitlines():
        if not line.strip() or line.startswith("wss://"):
            continue
        yield line.split(": ", 1)[1]


def sdk_v1_frames() -> Iterator[str]:
    doc = json.loads((DATA / "python-kraken-sdk" / "orderbook-v1.json").read_text())
    for msg in doc["init"] + doc["updates"]:
        yield json.dumps(msg, separators=(",", ":"))


def flashbook_frames() -> Iterator[str]:
    for line in (DATA / "flashbook" / "live-btc-eth.ndjson").read_text().splitlines():
        if line.strip():
            yield line
