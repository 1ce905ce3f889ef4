"""Losses the sink cannot store as events rows itself (its writer died, close gave up on a
full disk, the process died while the disk was full) are stored by the next start."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import duckdb
import pytest

from sinks import incidents, journal, writer
from sinks.incidents import SIZE, IncidentFile, take_abandoned
from sinks.parquet_sink import ParquetSink, SinkError
from tests.rows import row, us

T0 = us("2026-11-22T04:00:00Z")


def events(root: Path) -> list[tuple[str, dict, int]]:
    con = duckdb.connect()
    rows = con.sql(f"select kind, detail, epoch_us(ts_recv) from "
                   f"read_parquet('{root}/events/**/*.parquet') order by ts_recv").fetchall()
    return [(k, json.loads(d), ts) for k, d, ts in rows]


def trades(n: int, start: int = 0) -> list[tuple]:
    now = time.time_ns() // 1000
    return [row("trades", ts_recv=now + i, price="1", qty="1", trade_id=start + i)
            for i in range(n)]


class Boom(BaseException):
    """Not an Exception: nothing in the writer catches it (as a bug in a C extension)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_writer_death_becomes_an_event_at_the_next_start(tmp_path: Path, monkeypatch) -> None:
    def broken(self, *args):
        raise Boom("journal exploded")

    monkeypatch.setattr(writer.Writer, "_batch", broken)
    sink = ParquetSink(tmp_path, "kraken", source="dies-1", flush_rows=10)
    t_before = time.time_ns() // 1000
    with pytest.raises(SinkError, match="writer thread has stopped"):
        for _ in range(100):  # the first chunk kills the writer; a later one notices
            sink.write("trades", trades(10))
            time.sleep(0.01)
    assert sink.close(5) is False
    path = tmp_path / ".journal" / f"dies-1{incidents.SUFFIX}"
    assert path.exists() and b"sink_writer_died" in path.read_bytes()
    monkeypatch.undo()

    ParquetSink(tmp_path, "kraken", source="next-2").close()
    assert not path.exists()
    assert [e[0] for e in events(tmp_path)] == ["sink_writer_died"]
    ((kind, detail, ts),) = events(tmp_path)
    assert "journal exploded" in detail["error"] and detail["source"] == "dies-1"
    assert detail["rows_held"] >= 0
    assert t_before <= ts <= time.time_ns() // 1000  # when it happened, not when stored


def test_close_on_a_disk_that_stays_full_is_reported_next_start(tmp_path: Path,
                                                               monkeypatch) -> None:
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".arrows"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    sink = ParquetSink(tmp_path, "kraken", source="full-1", journal_interval=0.05,
                       retry_interval=0.05)
    monkeypatch.setattr(journal.os, "pwrite", pwrite)
    sink.write("trades", trades(40))
    sink.tick()
    time.sleep(0.1)
    sink.tick()
    deadline = time.monotonic() + 5
    while sink.stats()["write_error"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.close(timeout=0.5) is False  # the disk stays full: give up
    monkeypatch.undo()
    # Space is back: the abandoned sink's threads finish (the next start would skip its
    # still-locked segment until then).
    sink._writer.join(10)
    sink._publisher.join(10)
    assert not sink._writer.is_alive() and not sink._publisher.is_alive()

    ParquetSink(tmp_path, "kraken", source="next-2").close()
    got = {k: (d, ts) for k, d, ts in events(tmp_path)}
    assert "No space left" in got["sink_write_error"][0]["error"]
    incomplete = got["sink_close_incomplete"][0]
    # The 40 trades and the sink's own sink_write_error row (stored from the incident).
    assert incomplete["rows_not_journaled"] == 41 and incomplete["source"] == "full-1"
    assert got["sink_write_error"][1] <= got["sink_close_incomplete"][1]
    assert list((tmp_path / ".journal").glob("*.incidents")) == []


def test_a_live_sinks_incidents_are_left_alone(tmp_path: Path) -> None:
    live = IncidentFile(tmp_path, "live-1")
    live.record("write_error", "sink_write_error", {"error": "x" * 10_000}, 1)
    assert live.path.stat().st_size == SIZE  # never grows: no free space needed
    assert take_abandoned(tmp_path) == []
    live.release()  # the process died
    ((source, found),) = take_abandoned(tmp_path)
    assert source == "live-1" and found[0].kind == "sink_write_error"
    assert len(found[0].detail["error"]) < 400
    assert not live.path.exists()


def test_a_reused_source_inherits_the_dead_processes_incidents(tmp_path: Path) -> None:
    old = IncidentFile(tmp_path, "job-public-7")
    old.record("writer_died", "sink_writer_died", {"error": "boom"}, T0)
    old.release()
    # Same source (a pid reused after a restart), recovery off: still reported.
    ParquetSink(tmp_path, "kraken", source="job-public-7", recover_on_start=False).close()
    ((kind, detail, ts),) = events(tmp_path)
    assert (kind, detail["error"], ts) == ("sink_writer_died", "boom", T0)


def test_taken_over_incidents_stay_on_disk_until_their_rows_are_journaled(tmp_path: Path):
    """The next start reads a dead sink's incidents; until their events rows are journaled
    they live on in its own incident file, so dying again right then loses nothing."""
    dead = IncidentFile(tmp_path, "dead-1")
    dead.record("writer_died", "sink_writer_died", {"error": "boom"}, T0)
    dead.release()  # the process is gone; its file stays
    sink = ParquetSink(tmp_path, "kraken", source="next-2", journal_interval=60)
    own = tmp_path / ".journal" / f"next-2{incidents.SUFFIX}"
    assert not (tmp_path / ".journal" / f"dead-1{incidents.SUFFIX}").exists()
    assert b"sink_writer_died" in own.read_bytes(), "carried until journaled"
    sink.close()
    assert not own.exists()
    assert [(k, d["source"]) for k, d, _ in events(tmp_path)] == [("sink_writer_died",
                                                                   "dead-1")]


def test_taken_over_incidents_are_cleared_once_journaled(tmp_path: Path):
    dead = IncidentFile(tmp_path, "dead-1")
    dead.record("writer_died", "sink_writer_died", {"error": "boom"}, T0)
    dead.release()
    sink = ParquetSink(tmp_path, "kraken", source="next-2", journal_interval=0.1)
    own = tmp_path / ".journal" / f"next-2{incidents.SUFFIX}"
    deadline = time.monotonic() + 10
    while b"sink_writer_died" in own.read_bytes():
        assert time.monotonic() < deadline, "the carried incident was never cleared"
        time.sleep(0.05)
    assert own.exists(), "the sink is still running"
    sink.close()
    assert [k for k, _, _ in events(tmp_path)] == ["sink_writer_died"]
