"""What a server wrote to its log while a test ran: client mistakes must leave no traceback there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def no_traceback(log: Path) -> Iterator[None]:
    """Asserts that nothing written to ``log`` inside the block holds a traceback. The session server's
    log is shared by every test, so only what this block added is read."""
    start = log.stat().st_size
    yield
    with log.open("rb") as fh:
        fh.seek(start)
        added = fh.read().decode(errors="replace")
    assert "Traceback" not in added, added[-4000:]
