"""cellkit's log: every module writes to ``logging.getLogger("cellkit")`` or a child (``cellkit.<module>``).

Nothing is shown unless a handler is attached: the CLI attaches one that prints (`to_console`), a pipeline
run adds its ``pipeline.log`` for the time it runs (`log_to`), notebooks may call
``logging.basicConfig(level=logging.INFO)``. ``progress=`` callbacks stay separate (counts, not messages).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Callable

LOGGER = logging.getLogger("cellkit")
LOGGER.addHandler(logging.NullHandler())
FILE_FORMAT = logging.Formatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``cellkit.<name>``; ``__name__`` of a cellkit module works as is)."""
    return logging.getLogger(name if name.startswith("cellkit") else f"cellkit.{name}")


class _CallableHandler(logging.Handler):
    def __init__(self, emit: Callable[[str], None]):
        super().__init__(logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        self._emit(record.getMessage())


def _ensure_info() -> None:
    if LOGGER.getEffectiveLevel() > logging.INFO:
        LOGGER.setLevel(logging.INFO)


_console: list[logging.Handler] = []


def to_console(emit: Callable[[str], None]) -> None:
    """Send cellkit's INFO messages to ``emit(message)`` from now on (the CLI's console); idempotent."""
    for handler in _console:
        LOGGER.removeHandler(handler)
    _console[:] = [_CallableHandler(emit)]
    LOGGER.addHandler(_console[0])
    _ensure_info()


@contextmanager
def log_to(path: str | os.PathLike):
    """Append cellkit's INFO messages, time-stamped, to the file ``path`` while inside the block."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(FILE_FORMAT)
    level = LOGGER.level
    LOGGER.addHandler(handler)
    _ensure_info()
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
        handler.close()
