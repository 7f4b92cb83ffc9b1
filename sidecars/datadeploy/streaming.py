"""Reading a download while it is still being written, so extraction overlaps the transfer.

The downloader appends to ``<sha256>.part`` and reports through :class:`Progress`; a
:class:`Follower` reads the same file from the start and blocks until more bytes are there.
Extraction therefore runs beside the download (sum of the two times becomes the larger one).
Nothing is trusted earlier for it: the tree is extracted into a fresh, unpublished directory with
every entry checked, and it is published only after the download completed and the whole
archive's sha256 matched.

If the download has to start over (the server ignored ``Range``), the bytes already read are no
longer the file's: the follower raises :class:`Restarted`, and the caller extracts again from
the finished download.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from autocrane import errors

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class Restarted(errors.AutocraneError):
    """The file being followed was truncated and rewritten from the start."""


class Cancelled(errors.AutocraneError):
    """The reader gave up (e.g. a hostile entry); the download should stop."""


class Progress:
    """Bytes written so far, and whether the writer has finished, shared under one condition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.written = 0
        self.done = False
        self.failed = False
        self.generation = 0
        self.cancelled = False

    def advance(self, written: int) -> None:
        """The file now holds ``written`` bytes. Raises :class:`Cancelled` if the reader gave up."""
        with self._cond:
            if self.cancelled:
                raise Cancelled("extraction stopped")
            self.written = written
            self._cond.notify_all()

    def restart(self) -> None:
        with self._cond:
            self.generation += 1
            self.written = 0
            self._cond.notify_all()

    def finish(self, failed: bool) -> None:
        with self._cond:
            self.done, self.failed = True, failed
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()

    def wait_for(self, position: int, generation: int) -> int:
        """Block until more than ``position`` bytes exist or the writer finished; return bytes available."""
        with self._cond:
            self._cond.wait_for(lambda: self.written > position or self.done or self.generation != generation)
            if self.generation != generation:
                raise Restarted("the download started over")
            if self.failed and self.written <= position:
                raise Restarted("the download failed")
            return self.written


class Follower(io.RawIOBase):
    """A read-only stream over ``path`` that waits for the writer instead of hitting EOF."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self._progress = progress
        self._generation = progress.generation
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        available = self._progress.wait_for(self._position, self._generation)
        count = min(len(view), available - self._position)
        if count <= 0:
            return 0  # the writer finished: end of file
        got = os.preadv(self._fd, [view[:count]], self._position)
        self._position += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
