"""``recorder compact``: a partition's small files rewritten into one large file, swapped in
at once (docs/storage.md, "Compaction").

For each partition (table, exchange, date) with at least ``min_files`` published files:

1. read them in name order (rows keep their order: a file's rows stay together, files in
   the order readers sort them) and write one file, ``<first>-<last>-compacted-<id>-0001``,
   whose footer names the files it replaces (``market_recorder.replaces``); publish it
   (no-clobber link on disk; one atomic PUT/COPY on a store). From that moment readers of
   the Hive layout read it *instead of* its inputs (sinks/compacted.py): never both,
   never neither;
2. with a table catalog: one Iceberg commit that removes the inputs and adds the output
   (an overwrite snapshot, retried when another host appended meanwhile), so Iceberg
   readers switch in one step too;
3. delete the inputs.

A crash after 1 leaves both on disk (readers still see only the output); the next run
finishes 2 and 3 for it before it compacts anything else. Only published files are
touched: the journal and the files being written are not ``*.parquet`` names in the
partition. With a catalog, files not committed yet (still queued) are left alone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.analysis.sql import writer_of_file
from recorder.core.location import parse_store_url
from recorder.core.schema import TABLES, arrow_schema

log = logging.getLogger("recorder")

MiB = 1 << 20
ROW_GROUP_ROWS = 100_000

Progress = Callable[[int, int, str], None]


@dataclass
class Partition:
    table: str
    exchange: str
    date: str
    files: list[str]  # rel paths (table/exchange=/date=/name), name order
    bytes: int = 0
    # The collector that wrote the files (recorder.analysis.sql.writer_of_file): each
    # writer's files are compacted apart, so redundant hosts' rows stay told apart.
    writer: str = ""

    @property
    def rel(self) -> str:
        return f"{self.table}/exchange={self.exchange}/date={self.date}"


@dataclass
class Result:
    partition: Partition
    output: str | None = None  # rel path of the compacted file
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    finished_leftovers: list[str] = field(default_factory=list)


# -- where the files are ---------------------------------------------------------------------


class Local:
    """A data directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def list(self, table: str) -> list[tuple[str, int]]:
        from recorder.analysis.dataset import parquet_files

        out = []
        for p in parquet_files(self.root, table):
            try:
                out.append((p.relative_to(self.root).as_posix(), p.stat().st_size))
            except FileNotFoundError:
                continue
        return out

    def all_names(self, partition_rel: str) -> list[str]:
        folder = self.root / partition_rel
        return sorted(p.name for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def open(self, rel: str) -> Any:
        return open(self.root / rel, "rb")

    def metadata(self, rel: str) -> dict[str, str]:
        from sinks.parquet_format import read_file_metadata

        return read_file_metadata(self.root / rel)

    def publish(self, tmp: Path, partition_rel: str, name: str) -> str:
        from sinks.finalize import publish_file

        final = publish_file(tmp, self.root / partition_rel, name)
        return final.relative_to(self.root).as_posix()

    def delete(self, rels: list[str]) -> None:
        from sinks.layout import fsync_dir

        folders = set()
        for rel in rels:
            (self.root / rel).unlink(missing_ok=True)
            folders.add((self.root / rel).parent)
        for folder in folders:
            fsync_dir(folder)

    def temp_dir(self, partition_rel: str) -> Path:
        folder = self.root / partition_rel
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class Store:
    """An object store prefix (``s3://bucket/prefix``)."""

    def __init__(self, url: str) -> None:
        from sinks.layout import host_name
        from sinks.object_store import S3Store

        self.s3 = S3Store(parse_store_url(url), host=host_name())
        self.base = self.s3.store.key()

    def _rel(self, key: str) -> str:
        return key[len(self.base) + 1:]

    def list(self, table: str) -> list[tuple[str, int]]:
        import pyarrow.fs as pafs

        from recorder.analysis.dataset import store_files

        keys = [str(k) for k in store_files(self.s3, table)]
        infos = self.s3.fs.get_file_info(keys) if keys else []
        return [(self._rel(i.path), i.size) for i in infos if i.type == pafs.FileType.File]

    def all_names(self, partition_rel: str) -> list[str]:
        table = partition_rel.split("/", 1)[0]
        prefix = f"{self.base}/{partition_rel}/"
        return sorted(k[len(prefix):] for k in self.s3.parquet_files(table)
                      if k.startswith(prefix))

    def open(self, rel: str) -> Any:
        return self.s3.fs.open_input_file(self.s3.store.key(rel))

    def metadata(self, rel: str) -> dict[str, str]:
        return self.s3.file_metadata(self.s3.store.key(rel))

    def publish(self, tmp: Path, partition_rel: str, name: str) -> str:
        return self.s3.upload(tmp, f"{partition_rel}/{name}").rel

    def delete(self, rels: list[str]) -> None:
        for rel in rels:
            self.s3.delete(rel)

    def temp_dir(self, partition_rel: str) -> Path:
        return Path(tempfile.gettempdir())


def location(data: Path | str) -> Local | Store:
    return Store(str(data)) if parse_store_url(data) is not None else Local(Path(data))


# -- planning --------------------------------------------------------------------------------


def plan(where: Local | Store, *, tables: list[str] | None = None,
         exchange: str | None = None, dates: list[str] | None = None,
         before: str | None = None, min_files: int = 2,
         committed: Callable[[str], set[str]] | None = None) -> list[Partition]:
    """Partitions worth compacting: ``min_files`` published files or more (compacted files
    included: a late file joins the last compaction's output). ``committed(table)``: the
    rel paths the catalog has (files not in it yet are left alone)."""
    out: dict[tuple[str, str, str, str], Partition] = {}
    for table in tables or list(TABLES):
        have = committed(table) if committed else None
        for rel, size in where.list(table):
            parts = rel.split("/")
            ex, date = parts[1].removeprefix("exchange="), parts[2].removeprefix("date=")
            if exchange and ex != exchange:
                continue
            if dates and date not in dates:
                continue
            if before and date >= before:
                continue
            if have is not None and rel not in have:
                continue
            writer = writer_of_file(parts[-1])
            p = out.setdefault((table, ex, date, writer),
                               Partition(table, ex, date, [], writer=writer))
            p.files.append(rel)
            p.bytes += size
    for p in out.values():
        p.files.sort(key=lambda r: r.rsplit("/", 1)[1])
    return [p for _, p in sorted(out.items()) if len(p.files) >= min_files]


# -- rewriting ---------------------------------------------------------------------------------


def _target_schema(table: str, schemas: list[pa.Schema]) -> pa.Schema:
    """Every column the inputs have, in the project's order (then any a newer version
    added), with the project's types where it knows the column."""
    known = {f.name: f for f in arrow_schema(table)}
    names: list[str] = [n for n in known if any(n in s.names for s in schemas)]
    extra = {}
    for s in schemas:
        for f in s:
            if f.name not in known and f.name not in extra:
                extra[f.name] = f
    return pa.schema([known[n] for n in names] + list(extra.values()))


def _batches(where: Local | Store, rel: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    with where.open(rel) as f:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=65_536):
            cols = []
            for field_ in schema:
                i = batch.schema.get_field_index(field_.name)
                col = batch.column(i) if i >= 0 else pa.nulls(batch.num_rows, field_.type)
                cols.append(col if col.type == field_.type else col.cast(field_.type))
            yield pa.RecordBatch.from_arrays(cols, schema=schema)


def rewrite(where: Local | Store, p: Partition, tmp: Path, compaction_id: str,
            row_group_rows: int = ROW_GROUP_ROWS) -> tuple[str, int]:
    """Write ``p``'s files, in order, into ``tmp``; (the output's name, rows)."""
    from sinks.compacted import REPLACES_KEY, SOURCE_PREFIX
    from sinks.layout import fsync_file, parquet_name
    from sinks.parquet_format import file_metadata, parquet_writer

    schemas = []
    for rel in p.files:
        with where.open(rel) as f:
            schemas.append(pq.read_schema(f))
    schema = _target_schema(p.table, schemas)
    # compacted-<id>-<writer>-0: the writer survives (sql.writer_of_source reads it back).
    source = f"{SOURCE_PREFIX}{compaction_id}" + (f"-{p.writer}-0" if p.writer else "")
    names = [r.rsplit("/", 1)[1] for r in p.files]
    meta = file_metadata(p.table, exchange=p.exchange, date=p.date, source=source, seq="1",
                         **{REPLACES_KEY: json.dumps(names)})
    rows = 0
    lo = hi = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    writer = parquet_writer(tmp, p.table, meta, schema)
    try:
        for rel in p.files:
            for batch in _batches(where, rel, schema):
                if "ts_recv" in schema.names and batch.num_rows:
                    mm = pc.min_max(batch.column("ts_recv").cast(pa.int64()))
                    if mm["min"].is_valid:
                        lo = mm["min"].as_py() if lo is None else min(lo, mm["min"].as_py())
                        hi = mm["max"].as_py() if hi is None else max(hi, mm["max"].as_py())
                pending.append(batch)
                pending_rows += batch.num_rows
                rows += batch.num_rows
                while pending_rows >= row_group_rows:
                    t = pa.Table.from_batches(pending, schema)
                    writer.write_table(t.slice(0, row_group_rows), row_group_size=row_group_rows)
                    rest = t.slice(row_group_rows)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema),
                               row_group_size=row_group_rows)
    finally:
        writer.close()
    fsync_file(tmp)
    if lo is None:  # no ts_recv at all: the day itself
        from datetime import UTC, datetime

        lo = int(datetime.strptime(p.date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1e6)
        hi = lo
    return parquet_name(lo, hi, source, 1), rows


# -- the catalog's side -------------------------------------------------------------------------


class CatalogSwap:
    """Iceberg's half of a compaction: one overwrite commit per partition."""

    def __init__(self, target: Any) -> None:
        from sinks.catalog import Tables

        self.target = target
        self.tables = Tables(target)

    def committed(self, table: str) -> set[str]:
        tbl = self.tables.table(table)
        rels = (self.target.rel_of(u) for u in self.tables.referenced(tbl))
        return {r for r in rels if r}

    def swap(self, p: Partition, inputs: list[str], output: str | list[str],
             attempts: int = 10) -> None:
        """Remove ``inputs`` (those the table has) and add ``output`` (one file, or one per
        writer) in one snapshot; done already (a crash after the commit) is fine."""
        from pyiceberg.exceptions import CommitFailedException
        from pyiceberg.io.pyarrow import parquet_file_to_data_file

        from sinks.catalog import partition_filter

        outputs = [output] if isinstance(output, str) else output
        out_uris = [self.target.file_uri(o) for o in outputs]
        for attempt in range(attempts):
            tbl = self.tables.table(p.table)
            refs = self.tables.referenced(tbl, partition_filter(p.exchange, p.date))
            old = [refs[u] for u in (self.target.file_uri(r) for r in inputs) if u in refs]
            if all(u in refs for u in out_uris) and not old:
                return
            try:
                with tbl.transaction() as tx:
                    props = {"market_recorder.compacted": str(len(old))}
                    with tx.update_snapshot(snapshot_properties=props).overwrite() as ow:
                        for df in old:
                            ow.delete_data_file(df)
                        for u in out_uris:
                            if u not in refs:
                                ow.append_data_file(parquet_file_to_data_file(
                                    tbl.io, tx.table_metadata, u))
                return
            except CommitFailedException:
                time.sleep(min(5.0, 0.1 * 2 ** attempt))
        raise CommitFailedException(f"{p.rel}: compaction not committed after {attempts} "
                                    "attempts")


# -- the whole run ---------------------------------------------------------------------------


@contextmanager
def _lock(where: Local | Store) -> Iterator[None]:
    """One compaction of a data directory at a time (a store: one compacting host, see
    docs/storage.md)."""
    if not isinstance(where, Local):
        yield
        return
    path = where.root / ".compact.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another `recorder compact` is running on {where.root}") \
                from None
        yield
    finally:
        os.close(fd)


def finish_leftovers(where: Local | Store, p: Partition, swap: CatalogSwap | None) -> list[str]:
    """Inputs of an earlier compaction of this partition still there (it stopped between
    publishing and deleting): commit its swap if the catalog lacks it, then delete them."""
    from sinks.compacted import is_compacted, replaces_of

    names = where.all_names(p.rel)
    done = []
    for name in names:
        if not is_compacted(name):
            continue
        left = [f"{p.rel}/{n}" for n in replaces_of(where.metadata(f"{p.rel}/{name}"))
                if n in names]
        if not left:
            continue
        if swap is not None:
            swap.swap(p, left, f"{p.rel}/{name}")
        where.delete(left)
        done += left
    return done


def compact(data: Path | str, *, tables: list[str] | None = None, exchange: str | None = None,
            dates: list[str] | None = None, before: str | None = None, min_files: int = 2,
            catalog: Any = None, dry_run: bool = False,
            progress: Progress | None = None) -> list[Result]:
    """Compact every matching partition of ``data`` (a directory or ``s3://...``);
    ``catalog``: the dataset's ``sinks.catalog.Target`` (None: the Hive layout only).
    ``dry_run``: only say what would be compacted."""
    where = location(data)
    swap = CatalogSwap(catalog) if catalog is not None else None
    scope = {"tables": tables, "exchange": exchange, "dates": dates, "before": before}
    results: dict[tuple[str, str], Result] = {}
    with _lock(where):
        if not dry_run:
            for p in plan(where, min_files=1, **scope):
                left = finish_leftovers(where, p, swap)
                if left:
                    results[(p.rel, p.writer)] = Result(p, finished_leftovers=left)
        committed = swap.committed if swap is not None else None
        todo = plan(where, min_files=min_files, committed=committed, **scope)
        # A partition's writers are written apart but swapped in together: one commit.
        groups: dict[str, list[Partition]] = {}
        for p in todo:
            groups.setdefault(p.rel, []).append(p)
        for i, (rel, parts) in enumerate(groups.items()):
            if progress:
                progress(i, len(groups), rel)
            done = []
            for p in parts:
                r = results.setdefault((p.rel, p.writer), Result(p))
                r.partition, r.bytes_in = p, p.bytes
                done.append(r)
            if not dry_run:
                _compact_partition(where, parts, swap, done)
        if progress:
            progress(len(groups), len(groups), "done")
    return list(results.values())


def _compact_partition(where: Local | Store, parts: list[Partition],
                       swap: CatalogSwap | None, results: list[Result]) -> None:
    """Rewrite each writer's files of one partition, swap them all in at once (one commit
    with a catalog), then delete the inputs."""
    for p, r in zip(parts, results, strict=True):
        t0 = time.monotonic()
        cid = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        fd, name = tempfile.mkstemp(prefix=".compact-", suffix=".parquet.tmp",
                                    dir=where.temp_dir(p.rel))
        os.close(fd)
        tmp = Path(name)
        try:
            final_name, r.rows = rewrite(where, p, tmp, cid)
            r.bytes_out = tmp.stat().st_size
            r.output = where.publish(tmp, p.rel, final_name)
        finally:
            tmp.unlink(missing_ok=True)
        r.seconds = time.monotonic() - t0
    inputs = [f for p in parts for f in p.files]
    if swap is not None:
        swap.swap(parts[0], inputs, [r.output for r in results if r.output])
    where.delete(inputs)
    for p, r in zip(parts, results, strict=True):
        log.info("compacted %s (%s): %d files, %d rows, %.1f MB -> %.1f MB in %.1f s",
                 p.rel, p.writer or "one writer", len(p.files), r.rows, r.bytes_in / MiB,
                 r.bytes_out / MiB, r.seconds)


def sync_catalog(data: Path | str, target: Any,
                 tables: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """Create or grow the catalog's tables and add every published file of ``data`` they
    lack (a dataset recorded before the catalog was turned on; a file published just
    before a crash). table -> (files added, files in the table)."""
    swap = CatalogSwap(target)
    where = location(data)
    out = {}
    for table in tables or list(TABLES):
        files = [rel for rel, _ in where.list(table)]
        if not files:
            continue
        have = swap.committed(table)
        missing = [target.file_uri(r) for r in files if r not in have]
        added = swap.tables.append(table, missing) if missing else 0
        out[table] = (added, len(have) + added)
    return out
