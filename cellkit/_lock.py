"""One writer per output: an advisory lock file beside the store.

`output_lock(path)` takes an exclusive ``flock`` on ``.<name>.lock`` next to ``path`` (not inside
it: the store itself may be replaced atomically) for as long as the run writes. A second run
into the same output waits up to ``wait`` seconds (``CELLKIT_LOCK_WAIT``, default 0) and then
refuses with `StoreLockedError` naming the output and the holder's process id. The kernel drops
the lock when its holder exits, even on ``kill -9``, so a stale lock file never blocks a rerun.
(``flock`` is per machine: on a shared file system, runs on different machines rely on the file
system's lock support.)
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputPathError, StoreLockedError


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path).resolve()
    return path.parent / f".{path.name}.lock"


@contextmanager
def output_lock(path: str | os.PathLike, wait: float | None = None):
    """Hold the lock of output ``path`` inside the ``with`` block (see the module docstring)."""
    if wait is None:
        wait = float(os.environ.get("CELLKIT_LOCK_WAIT", "0") or 0)
    lock = lock_path(path)
    for parent in (lock.parent, *lock.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputPathError(f"{parent} is a file, but the output {Path(path)} needs it to be a folder",
                                  "choose another output path")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")
    except OSError as err:  # name the output, not its lock file
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise StoreLockedError(
                        f"{Path(path)} is being written by another cellkit run (process {holder})",
                        "wait for it to finish (or stop it), then run the same command again; "
                        "CELLKIT_LOCK_WAIT=SECONDS waits instead of refusing") from None
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield lock
    finally:
        handle.close()  # releases the lock
