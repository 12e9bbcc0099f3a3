"""One batch run per output folder: an advisory lock on ``OUT/.batch.lock`` held for the run.

The operating system drops the lock when its process ends, however it ends (SIGKILL included), so
a crashed run never blocks the next one. Where ``fcntl`` is missing (Windows) no lock is taken."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".batch.lock"


class FolderBusy(ValueError):
    """Another batch run is writing into the same output folder."""


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock for the ``with`` block, or raise :class:`FolderBusy` at once."""
    try:
        import fcntl
    except ImportError:  # no advisory locks here
        yield
        return
    path = Path(out_dir) / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise FolderBusy(f"{out_dir} is in use by another emolens batch run ({holder}); wait for it to "
                             "finish or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
