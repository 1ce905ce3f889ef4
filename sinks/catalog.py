"""An opt-in Apache Iceberg table catalog over the recorded files (docs/storage.md, "Table
catalog").

The Hive layout stays what it is; the catalog only *references* its files. Each finished
(or, with an object store, uploaded) Parquet file is added to the table of its name with
pyiceberg's ``add_files``: its footer is read for the statistics, nothing is rewritten. So
every engine that reads Iceberg (Spark, Trino, DuckDB, pyiceberg) sees one consistent set of
files, committed one snapshot at a time, and ``recorder compact`` can swap small files for
large ones in one commit.

- Which catalog: ``sqlite`` (one machine: ``<data>/_catalog/catalog.db``), any SQLAlchemy
  URI (``sqlite:////abs/catalog.db``, ``postgresql://user@host/db`` for many machines; a
  password comes from ``PGPASSWORD`` or ``~/.pgpass``, never from the URI), or an
  ``http(s)://`` Iceberg REST catalog (a token from ``RECORDER_CATALOG_TOKEN``).
- Where: the table metadata goes under ``_catalog/<table>/`` beside the tables, on disk or
  under the ``s3://`` prefix. A dataset has a catalog when its local root (the data
  directory, or the spool of a store) holds ``_catalog/catalog.json`` naming it: every
  writer in that root then commits (docs/storage.md says who writes it).
- Tables follow ``recorder.core.schema`` at run time: a table is created from
  ``arrow_schema()`` and grows by the columns a newer schema (or a file written by a newer
  version on another host) has. Partitioned like the Hive layout: ``exchange`` (identity)
  and ``date`` (``day(ts_recv)``: files never span UTC midnight).
- Commits race between hosts: pyiceberg retries a commit that lost (``CommitFailedException``)
  on the refreshed table; this module retries again around it, with backoff.

Only pyiceberg and pyarrow beyond the core; imported only by a process that has a catalog.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recorder.core.location import StoreURL, read_marker
from recorder.core.schema import TABLES, arrow_schema

log = logging.getLogger("sinks")

CATALOG_DIR = "_catalog"  # beside the tables: settings, SQLite file, Iceberg metadata
SETTINGS = "catalog.json"
NAMESPACE = "recorder"
CATALOG_NAME = "recorder"
TOKEN_ENV = "RECORDER_CATALOG_TOKEN"
# Manifests merged as they accumulate (one commit per hourly file would otherwise leave one
# manifest per file, and every commit's duplicate check reads them all); old metadata files
# pruned.
TABLE_PROPERTIES = {
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    "commit.retry.num-retries": "8",
    "market_recorder.layout": "hive exchange=/date=",
}
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


class CatalogError(ValueError):
    """A catalog setting that cannot work (what is wrong and what is allowed)."""


# -- settings ----------------------------------------------------------------------------------


def check_uri(value: str) -> str:
    """The catalog setting as given, checked: ``sqlite``, a SQLAlchemy URI (sqlite,
    postgresql...) or an ``http(s)://`` REST catalog. Raises CatalogError saying what is
    allowed; a password in the URI is refused (it would land in files and logs)."""
    text = value.strip()
    if text == "sqlite":
        return text
    u = urlsplit(text)
    scheme = u.scheme.split("+", 1)[0]
    if scheme in ("http", "https"):
        if not u.netloc:
            raise CatalogError(f"{value!r}: a REST catalog URL needs a host")
    elif scheme in _SQL_SCHEMES:
        if scheme == "sqlite" and not text.startswith("sqlite:///"):
            raise CatalogError(f"{value!r}: use sqlite:////absolute/path.db (or just sqlite)")
    else:
        raise CatalogError(f"{value!r} is not a catalog; allowed: sqlite, "
                           "sqlite:////path/catalog.db, postgresql://user@host/db, "
                           "http(s)://rest-catalog")
    if u.password:
        raise CatalogError("the catalog URI holds a password; leave it out and set it in the "
                           "environment (PGPASSWORD or ~/.pgpass for PostgreSQL, "
                           f"{TOKEN_ENV} for a REST catalog)")
    return text


def settings_path(root: Path) -> Path:
    return Path(root) / CATALOG_DIR / SETTINGS


def read_settings(root: Path) -> str | None:
    """The catalog a data directory (or spool) commits to, None without one."""
    try:
        raw = json.loads(settings_path(root).read_text())
        return check_uri(raw["catalog"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_settings(root: Path, uri: str) -> None:
    """Turn the catalog on for every writer of ``root`` (atomic; idempotent). A root with
    another catalog already is refused: its table would lose files."""
    uri = check_uri(uri)
    have = read_settings(root)
    if have == uri:
        return
    if have is not None:
        raise CatalogError(f"{root} commits to the catalog {have!r} already (in "
                           f"{settings_path(root)}); edit or remove that file to change it")
    path = settings_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SETTINGS}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"catalog": uri}) + "\n")
    os.replace(tmp, path)


# -- where ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A dataset's catalog: ``uri`` (resolved), ``warehouse`` (Iceberg metadata),
    ``base`` (what a file's path under the data root is prefixed with in the table)."""

    uri: str
    warehouse: str
    base: str
    root: Path  # the local root (data directory or spool)
    store: StoreURL | None

    def file_uri(self, rel: str) -> str:
        return f"{self.base}/{rel.strip('/')}"

    def rel_of(self, file_uri: str) -> str | None:
        prefix = self.base + "/"
        return file_uri[len(prefix):] if file_uri.startswith(prefix) else None

    def shown(self) -> str:
        """The catalog for messages: never a password (there is none to show, see
        check_uri) and the REST URL without its query."""
        u = urlsplit(self.uri)
        return f"{u.scheme}://{u.netloc}{u.path}"


def target_for(root: Path, uri: str, store: StoreURL | None = None) -> Target:
    """The catalog of the dataset whose local root is ``root`` (for a store: its spool, and
    ``store`` the store; by default the spool's marker says)."""
    root = Path(root).resolve()
    uri = check_uri(uri)
    if store is None:
        store = read_marker(root)
    if uri == "sqlite":
        uri = f"sqlite:///{root / CATALOG_DIR / 'catalog.db'}"
    elif uri.startswith(("postgresql://", "postgres://")):
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]  # the driver the extra brings
    if store is not None:
        base = f"s3://{store.key()}"
    else:
        base = f"file://{root}"
    return Target(uri, f"{base}/{CATALOG_DIR}", base, root, store)


def target_of_root(root: Path) -> Target | None:
    """The catalog ``root``'s settings name, None without one."""
    uri = read_settings(root)
    return target_for(root, uri) if uri else None


# -- the tables ---------------------------------------------------------------------------------


def iceberg_arrow_schema(schema: Any) -> Any:
    """``schema`` with the types Iceberg has: unsigned 32-bit (the book checksum) becomes
    64-bit (Iceberg has no unsigned types; Parquet readers widen the file's values)."""
    import pyarrow as pa

    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_unsigned_integer(t):
            t = pa.int64()
        fields.append(pa.field(f.name, t, nullable=True))
    return pa.schema(fields)


def _io_properties(target: Target, env: dict[str, str] | None = None) -> dict[str, str]:
    """pyiceberg's file IO: pyarrow's, and for a store the same AWS environment the
    uploader uses (passed explicitly: not every client reads AWS_ENDPOINT_URL)."""
    props = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if target.store is None:
        return props
    from sinks.object_store import endpoint_from_env

    env = os.environ if env is None else env
    endpoint = endpoint_from_env(env)
    if endpoint:
        props["s3.endpoint"] = endpoint
    for var, key in (("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
                     ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
                     ("AWS_SESSION_TOKEN", "s3.session-token")):
        if env.get(var):
            props[key] = env[var]
    props["s3.region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    return props


def open_catalog(target: Target, env: dict[str, str] | None = None) -> Any:
    """The pyiceberg catalog of ``target`` (a SQL or a REST catalog)."""
    try:
        from pyiceberg.catalog.rest import RestCatalog
        from pyiceberg.catalog.sql import SqlCatalog
    except ImportError:
        raise CatalogError("a table catalog needs pyiceberg: pip install "
                           "'market-recorder[catalog]'") from None
    env = os.environ if env is None else env
    props = _io_properties(target, env)
    if target.uri.startswith(("http://", "https://")):
        if env.get(TOKEN_ENV):
            props["token"] = env[TOKEN_ENV]
        return RestCatalog(CATALOG_NAME, uri=target.uri, warehouse=target.warehouse, **props)
    if target.uri.startswith("sqlite:///"):
        Path(target.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            return SqlCatalog(CATALOG_NAME, uri=target.uri, warehouse=target.warehouse, **props)
        except Exception as e:  # noqa: BLE001 - sqlalchemy's errors; re-raised below
            # Two hosts creating the catalog's own tables at once: one loses the race
            # (a unique violation on PostgreSQL); the tables exist when it tries again.
            if attempt == 2 or "already exists" not in str(e) and "Integrity" not in \
                    type(e).__name__:
                raise
            time.sleep(0.2 * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _partition_spec(schema: Any) -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform, IdentityTransform

    return PartitionSpec(
        PartitionField(schema.find_field("exchange").field_id, 1000, IdentityTransform(),
                       "exchange"),
        PartitionField(schema.find_field("ts_recv").field_id, 1001, DayTransform(), "date"))


class Tables:
    """The dataset's Iceberg tables: created on first use, grown with the schema."""

    def __init__(self, target: Target, env: dict[str, str] | None = None) -> None:
        self.target = target
        self.catalog = open_catalog(target, env)
        self._io: Any = None
        self._env = env

    def exists(self, uri: str) -> bool:
        """Is the data file ``uri`` there? (An unreachable store raises OSError.)"""
        if uri.startswith("file://"):
            return Path(uri.removeprefix("file://")).exists()
        if self._io is None:
            from pyiceberg.io import load_file_io

            self._io = load_file_io(_io_properties(self.target, self._env), uri)
        return self._io.new_input(uri).exists()

    def identifier(self, table: str) -> str:
        return f"{NAMESPACE}.{table}"

    def table(self, table: str, file_schemas: Iterable[Any] = ()) -> Any:
        """The Iceberg table of ``table``, created if missing; columns of the project's
        schema (or of ``file_schemas``: files from a newer version) that it lacks are
        added first."""
        from pyiceberg.exceptions import (
            NamespaceAlreadyExistsError,
            NoSuchTableError,
            TableAlreadyExistsError,
        )
        from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
        from pyiceberg.schema import assign_fresh_schema_ids

        if table not in TABLES:
            raise CatalogError(f"no table {table!r}; tables: {', '.join(TABLES)}")
        want = iceberg_arrow_schema(arrow_schema(table))
        try:
            tbl = self.catalog.load_table(self.identifier(table))
        except NoSuchTableError:
            try:
                self.catalog.create_namespace(NAMESPACE)
            except NamespaceAlreadyExistsError:
                pass
            except Exception:
                # Two hosts creating it at once: a SQL catalog's loser fails on the unique
                # key (IntegrityError), not with NamespaceAlreadyExistsError.
                if (NAMESPACE,) not in set(self.catalog.list_namespaces()):
                    raise
            schema = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(want))
            try:
                tbl = self.catalog.create_table(
                    self.identifier(table), schema=schema,
                    partition_spec=_partition_spec(schema),
                    location=f"{self.target.warehouse}/{table}", properties=TABLE_PROPERTIES)
            except TableAlreadyExistsError:  # another process created it meanwhile
                tbl = self.catalog.load_table(self.identifier(table))
            except Exception as e:
                try:  # the same race on a SQL catalog's unique key
                    tbl = self.catalog.load_table(self.identifier(table))
                except NoSuchTableError:
                    raise e from None

        have = set(tbl.schema().column_names)
        extra = [iceberg_arrow_schema(s) for s in file_schemas]
        missing = [f for s in (want, *extra) for f in s if f.name not in have]
        if missing:
            tbl = self._grow(table, tbl, missing)
        return tbl

    def _grow(self, table: str, tbl: Any, fields: list[Any]) -> Any:
        """Add ``fields`` (new nullable columns, at the end) in one schema commit, retried
        when another host changed the table first."""
        import pyarrow as pa
        from pyiceberg.exceptions import CommitFailedException

        for attempt in range(10):
            have = set(tbl.schema().column_names)
            new = pa.schema([f for f in dict((f.name, f) for f in fields).values()
                             if f.name not in have])
            if not len(new):
                return tbl
            try:
                with tbl.update_schema() as update:
                    update.union_by_name(new)
                log.info("catalog: %s gained column(s) %s", table, ", ".join(new.names))
                return self.catalog.load_table(self.identifier(table))
            except CommitFailedException:
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
                tbl = self.catalog.load_table(self.identifier(table))
        raise CommitFailedException(f"could not add columns to {table}")

    def referenced(self, tbl: Any, row_filter: Any = None) -> dict[str, Any]:
        """file path -> DataFile of every live data file (optionally of some partitions)."""
        from pyiceberg.expressions import AlwaysTrue

        scan = tbl.scan(row_filter=row_filter if row_filter is not None else AlwaysTrue())
        return {task.file.file_path: task.file for task in scan.plan_files()}

    def append(self, table: str, file_uris: list[str], attempts: int = 10) -> int:
        """Add these finished files to ``table`` in one commit (no data rewritten); files
        the table has already (an earlier attempt that committed, then crashed) are left
        out. Returns how many were added. Raises on a failure that retrying here cannot
        fix (the caller retries later); a lost race is retried here."""
        import pyarrow.parquet as pq
        from pyiceberg.exceptions import CommitFailedException

        uris = sorted(set(file_uris))
        if not uris:
            return 0
        schemas = []
        io = None
        for attempt in range(attempts):
            tbl = self.table(table, schemas)
            io = io or tbl.io
            try:
                tbl.add_files(uris, check_duplicate_files=True,
                              snapshot_properties={"market_recorder.files": str(len(uris))})
                return len(uris)
            except CommitFailedException:
                time.sleep(min(5.0, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0))
            except ValueError as e:
                text = str(e)
                if "already referenced" in text:
                    have = self.referenced(tbl)
                    uris = [u for u in uris if u not in have]
                    if not uris:
                        return 0
                elif "more columns" in text and not schemas:
                    # A file from a newer version: its columns join the table first.
                    for u in uris:
                        with io.new_input(u).open() as f:
                            schemas.append(pq.read_schema(f))
                else:
                    raise
        raise CommitFailedException(f"{table}: {len(uris)} file(s) not committed after "
                                    f"{attempts} attempts (other writers kept winning)")


# -- partitions -------------------------------------------------------------------------------

_PART = re.compile(r"(?:^|/)(?P<table>[^/]+)/exchange=(?P<exchange>[^/]+)/date=(?P<date>[^/]+)/")


def partition_of(rel_or_uri: str) -> tuple[str, str, str] | None:
    """(table, exchange, date) of a file path in the Hive layout."""
    m = _PART.search(rel_or_uri)
    return (m["table"], m["exchange"], m["date"]) if m else None


def partition_filter(exchange: str, date: str) -> Any:
    """A row filter selecting one Hive partition's files in the Iceberg table."""
    from datetime import UTC, datetime, timedelta

    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    lo, hi = day.isoformat(), (day + timedelta(days=1)).isoformat()
    return And(EqualTo("exchange", exchange),
               And(GreaterThanOrEqual("ts_recv", lo), LessThan("ts_recv", hi)))
