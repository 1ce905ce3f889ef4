"""Keep optional heavy packages out of a process that never uses them.

pyarrow imports pandas, when it is installed, the first time it converts a Python object
(``pa.array(list)``, ``pa.scalar(...)``: its pandas shim checks whether the object is a
pandas one). A collector converts Python lists all day and never needs pandas, yet would
carry its ~40 MB of RSS for the whole capture. Refusing the import makes pyarrow (and DuckDB,
which the private stream's de-duplication uses) treat pandas as not installed.

numpy likewise: pyarrow (since 16) and DuckDB run without it, and importing pyarrow loads it
when it is installed (15 MB of a collector's RSS, its BLAS library included). Nothing a
collector runs (conversion to Arrow, IPC journal, Parquet, S3, the table catalog) uses it.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Sequence

COLLECTOR_UNNEEDED = ("pandas", "numpy")


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is kept out of this process (set "
                                      f"{ALLOW_ENV}={fullname.partition('.')[0]} to allow it)",
                                      name=fullname)
        return None


# A comma-separated list of the names above a process may import after all (an exchange
# plugin that needs numpy, say).
ALLOW_ENV = "RECORDER_COLLECTOR_IMPORTS"


def keep_out(names: Sequence[str] = COLLECTOR_UNNEEDED) -> None:
    """Make ``import name`` fail in this process (for names not imported yet and not
    allowed by ``$RECORDER_COLLECTOR_IMPORTS``)."""
    allowed = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",")}
    names = [n for n in names if n not in sys.modules and n not in allowed]
    if names and not any(isinstance(f, _Refuse) for f in sys.meta_path):
        sys.meta_path.insert(0, _Refuse(names))
