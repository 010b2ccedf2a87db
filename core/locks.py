"""The one file lock of the suite: an exclusive advisory lock (``fcntl.flock``) on a file.

Used wherever processes on one machine (or on an NFS share that supports ``flock``) must take turns:
one ``reproduce`` per table and profile, the drivers of a study on a journal storage. The OS
releases the lock when its holder dies, however it dies, so a killed process never leaves a stale
lock behind. The holder writes ``pid <n>`` into the file, so that a refused caller can say who
holds it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

__all__ = ["FileLock"]


class FileLock:
    """An exclusive lock on ``path`` (created with its folder when missing).

    ``acquire(blocking=False)`` returns False instead of waiting; ``with FileLock(path):`` waits.
    Each acquisition opens the file anew, so two acquisitions exclude each other also within one
    process; it is not re-entrant (callers serialise their own threads and never nest).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: Any = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (waiting for it when ``blocking``); False when it is held elsewhere and
        ``blocking`` is off."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            handle.close()
            if blocking:
                raise
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        """Give the lock back (nothing when it is not held)."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def holder(self) -> str:
        """What the holder wrote (``pid <n>``), or "" when unknown."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
