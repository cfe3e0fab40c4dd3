"""selfsup's messages about what a run is doing — a budget's plan, a resume, the side chosen for a folder — go
to the standard ``logging`` logger "selfsup" at INFO, not to print: an application that configures logging
routes or silences them (a handler or a level on "selfsup"). Otherwise — a plain script, a notebook, the CLI —
``console`` shows them on stdout while training runs, as the progress bar beside them."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

logger = logging.getLogger("selfsup")


class _Stdout(logging.Handler):
    """Writes to the sys.stdout of the moment (a redirected stream, a notebook's), not the one at creation."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout, flush=True)


@contextlib.contextmanager
def console() -> Iterator[None]:
    """Show selfsup's INFO messages on stdout inside the block — once: not also through the root logger's
    handlers. An application decides instead by giving the "selfsup" logger a handler of its own (then nothing
    changes here) or a level (then that level filters, e.g. WARNING silences them)."""
    if logger.handlers:
        yield
        return
    handler, before = _Stdout(), (logger.level, logger.propagate)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
