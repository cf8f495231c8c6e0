"""Errors cellkit expects, and how each becomes one line for a user.

`CellkitError` is the base of errors about the user's input or environment; `OutputPathError`
covers output paths that cannot be written safely. `describe(err)` turns any *expected* failure
(these, the library's own input errors, ``OSError`` such as a full disk or a read-only folder,
corrupt Zarr / HDF5 / TIFF files, a ``ValueError`` from one of the library's own checks) into
``(message, hint)``, or returns None for an unexpected one
(a bug), which the CLI reports with a pointer to the log holding its traceback.
Messages name files, fields and options; they never quote file contents.
"""

from __future__ import annotations

import errno
import linecache
import os
import re
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


class CellkitError(Exception):
    """A failure caused by the input or the environment, with what to do about it (``hint``)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class OutputPathError(CellkitError, FileExistsError):
    """An output path holds something cellkit must not replace (a folder where a file is
    expected, the reverse, or data that is not cellkit's output of the same kind)."""


class UnreadableFileError(CellkitError, OSError):
    """A file cellkit should read is truncated, damaged or of another kind."""


class StaleOutputError(CellkitError, ValueError):
    """A file derived from another output no longer matches it (its upstream was replaced)."""


class DuplicateIdError(CellkitError, ValueError):
    """The same cell (obs name) appears more than once where each must count once."""


class StoreLockedError(CellkitError, RuntimeError):
    """Another cellkit run is writing the same output."""


class DistributedOutputError(CellkitError, RuntimeError):
    """A distributed run finished but its outputs are not complete where the client expects them."""


_OS_HINTS = {
    errno.ENOSPC: "free some disk space (or write elsewhere) and run the same command again",
    errno.EDQUOT: "free some space in your quota and run the same command again",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another output path",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EEXIST: "choose another path or remove it yourself",
}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expected_types() -> tuple[type, ...]:
    """The library's own input-error classes (imported lazily: no import loops, no heavy imports)."""
    import importlib

    found = []
    for module, name in [("cellkit.io.plate_index", "PlateIndexError"), ("cellkit.io.images", "ImageReadError"),
                         ("cellkit.io.cells", "IncompleteStoreError"), ("cellkit.io.profiles", "ProfileTableError"),
                         ("cellkit.extract.plan", "ExtractInputError"), ("cellkit.pp", "ControlError"),
                         ("cellkit.models.checkpoint", "ChannelMismatchError"),
                         ("cellkit.models.checkpoint", "IncompleteModelError"),
                         ("cellkit.models.hf", "MissingModelError"),
                         ("cellkit.segment.cellpose_backend", "WeightsNotFoundError"),
                         ("cellkit.segment.cellpose_backend", "ModelArchitectureError"),
                         ("cellkit.datasets.bbbc021", "FetchError"), ("pandas.errors", "ParserError"),
                         ("pandas.errors", "EmptyDataError"), ("yaml", "YAMLError")]:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _corrupt_file(err: BaseException) -> tuple[str, str] | None:
    """Damaged Zarr chunks, truncated HDF5 / TIFF files: one line naming the file when known."""
    text = str(err)
    name = type(err).__name__
    lowered = text.lower()
    if "blosc" in lowered or "decompress" in lowered or "codec" in lowered and "error" in lowered:
        return (f"a compressed chunk could not be decoded ({name}); the store is damaged",
                "delete the damaged store and write it again")
    if name in ("TiffFileError",) or "not a tiff" in lowered:
        return "a file is not a readable TIFF image", "check the image paths in the plate index"
    if ("unable to open file" in lowered or "truncated file" in lowered or "file signature not found" in lowered
            or "bad object header" in lowered or "unable to synchronously open" in lowered):
        return ("an HDF5 (.h5ad) file is truncated or damaged", "write it again (rerun the command that made it)")
    return None


def is_corrupt(err: BaseException) -> bool:
    """True for a damaged chunk / truncated file error that carries no file name."""
    return not isinstance(err, CellkitError) and _corrupt_file(err) is not None


def raised_by_cellkit(err: BaseException) -> bool:
    """True for a ``ValueError`` that cellkit's own code raised with a ``raise`` statement: one of the
    library's input and option checks (a message written for the user), not a bug inside cellkit (an unpacking
    or conversion error in a cellkit line that is not a ``raise``) nor one from a library it calls."""
    tb = err.__traceback__
    if not isinstance(err, ValueError) or tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not Path(filename).resolve().is_relative_to(_PACKAGE):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise ")


def describe(err: BaseException) -> tuple[str, str] | None:
    """``(message, hint)`` for an expected failure, None for an unexpected one (a bug)."""
    if isinstance(err, CellkitError):  # our own messages: never file contents, may list many problems
        return _one_line(err, 4000), err.hint
    if isinstance(err, MemoryError):
        return "out of memory", "process fewer fields at a time (fewer workers) or use a larger machine"
    if isinstance(err, OSError) and err.errno in _OS_HINTS:
        where = err.filename if err.filename is not None else ""
        reason = err.strerror or os.strerror(err.errno)
        message = f"{where}: {reason}" if where else _one_line(err)
        return _one_line(message), _OS_HINTS[err.errno]
    corrupt = _corrupt_file(err)
    if corrupt is not None:
        return corrupt
    expected = _expected_types()
    if expected and isinstance(err, expected) or raised_by_cellkit(err):
        return _one_line(err), ""
    if isinstance(err, (UnicodeDecodeError,)):
        return f"a text file is not valid UTF-8 ({err.reason} at byte {err.start})", "save it as UTF-8 text"
    if isinstance(err, OSError):
        return _one_line(err), ""
    return None


_BYTES = re.compile(r"""b(['"]).*?(?<!\\)\1""")


def weights_reason(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to load it unsafely."""
    import pickle

    if isinstance(err, pickle.UnpicklingError):
        return "it holds Python objects other than weights (refused; nothing in it was run)"
    if isinstance(err, (EOFError, RuntimeError)) and ("zip" in str(err).lower() or isinstance(err, EOFError)):
        return "it is truncated or not a torch file"
    return f"{type(err).__name__}: {reason(err, 100)}"


def reason(err: BaseException, limit: int = 160) -> str:
    """Why a file could not be read, without any of its bytes: the exception's message with byte
    strings (``b'...'``, as TIFF and image readers quote a file's first bytes) removed, one line."""
    text = _BYTES.sub("(file bytes not shown)", str(err)) or type(err).__name__
    return _one_line(text, limit)


def debug_requested() -> bool:
    """True when ``CELLKIT_DEBUG`` is set to something other than empty / 0 / false."""
    return os.environ.get("CELLKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
