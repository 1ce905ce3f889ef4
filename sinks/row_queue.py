"""A FIFO bounded by the number of rows it holds, not by items: chunks vary from one row
(a quiet table flushed on tick) to thousands, and memory follows rows."""

from __future__ import annotations

import threading
import time
from collections import deque


class RowQueue:
    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._items: deque[tuple[object, int]] = deque()
        self._rows = 0
        self._cond = threading.Condition()

    @property
    def rows(self) -> int:
        return self._rows

    def put(self, item: object, rows: int = 0, timeout: float | None = None) -> float:
        """Append ``item``; block while it would push the queue past ``max_rows``.

        An item bigger than the whole bound is let in once the queue is empty, so nothing
        can wait forever. Returns the seconds spent blocked; raises TimeoutError."""
        started = time.monotonic()
        with self._cond:
            while self._rows and self._rows + rows > self.max_rows:
                left = None if timeout is None else timeout - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise TimeoutError("queue full")
                self._cond.wait(left)
            self._items.append((item, rows))
            self._rows += rows
            self._cond.notify_all()
        return time.monotonic() - started

    def get(self, timeout: float | None = None) -> object | None:
        """The oldest item, or None if none arrived within ``timeout``."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            item, rows = self._items.popleft()
            self._rows -= rows
            self._cond.notify_all()
            return item
