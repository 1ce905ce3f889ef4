"""How every recorder process writes its log: one line per record on stderr."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, default: int = logging.INFO) -> None:
    """Log at ``level`` (a name: debug, info, warning, ...; ``default`` if unknown) to
    stderr."""
    logging.basicConfig(level=getattr(logging, level.upper(), default),
                        format=LOG_FORMAT, stream=sys.stderr)
