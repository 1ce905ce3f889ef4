"""Give freed heap memory back to the operating system.

glibc's malloc keeps the pages of freed small blocks in its heap; Python's objects and
Arrow's buffers (the system allocator, see recorder/__init__.py) both come from it. After
a burst of rows (a busy minute, or a whole `--speed max` run at a stop) the rows are freed
but their pages stay mapped, and building a Parquet file then adds its own buffers on top.
Trimming first keeps a collector's peak to what it actually holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc = None


def _load() -> object:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc


def trim() -> bool:
    """Release free heap pages (glibc's ``malloc_trim``); False where there is none."""
    lib = _load()
    if not lib:
        return False
    return bool(lib.malloc_trim(0))
