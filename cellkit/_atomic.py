"""Write files so that a reader never sees a half-written one, and never replace what is not ours.

`atomic_path` writes beside the target and moves the result into place on success. What may be
replaced: a file by a file; a folder by a folder only when the folder is empty or is cellkit's
output of the same kind (a Zarr group / AnnData whose ``format`` or ``encoding-type`` attribute
matches the new one). A folder where a file is expected, or the reverse, is an `OutputPathError`
naming it, raised before any work when the caller says which ``kind`` it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputPathError


def store_kind(path: str | os.PathLike) -> str | None:
    """The ``format`` (or AnnData ``encoding-type``) recorded in a Zarr folder's root attributes, or None."""
    path = Path(path)
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta = path / name
        if meta.is_file():
            try:
                attrs = json.loads(meta.read_text())
            except (OSError, ValueError):
                return None
            attrs = attrs.get(key, {}) if key else attrs
            if isinstance(attrs, dict):
                return attrs.get("format") or attrs.get("encoding-type")
    return None


def check_output(path: str | os.PathLike, kind: str = "file", store: str | None = None) -> Path:
    """Refuse an output ``path`` that cellkit must not replace; return it.

    kind
        ``"file"``: an existing folder at ``path`` is an error. ``"dir"``: an existing file is an
        error, and so is a non-empty folder that is not a store of kind ``store`` (when given).
    """
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise OutputPathError(f"{path} is a folder, but a file is written there",
                              "give a file path (cellkit never replaces a folder by a file)")
    if kind == "dir":
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"{path} is a file, but a folder (store) is written there",
                                  "give another path (cellkit never replaces a file by a folder)")
        if path.is_dir() and store is not None and any(path.iterdir()) and store_kind(path) != store:
            raise OutputPathError(f"{path} is a folder that is not a {store} store",
                                  "give a new path; cellkit only replaces its own output of the same kind")
    return path


def _replaceable(path: Path, target: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if target.is_dir() != (path.is_dir() and not path.is_symlink()):
        check_output(path, "dir" if target.is_dir() else "file")
    if path.is_dir() and not path.is_symlink() and any(path.iterdir()):
        old, new = store_kind(path), store_kind(target)
        if old is None or old != new:
            raise OutputPathError(f"{path} is a folder that is not a {new or 'cellkit'} store",
                                  "give a new path; cellkit only replaces its own output of the same kind")


@contextmanager
def atomic_path(path: str | os.PathLike, kind: str | None = None, store: str | None = None):
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    Works for files and for folders (a Zarr store, say). On error the temporary path is
    removed and ``path`` is left as it was. ``kind`` (``"file"`` / ``"dir"``) and ``store``
    check the target up front (`check_output`); whatever they say, an existing target is
    replaced only by the same kind of thing (see the module docstring), else `OutputPathError`.
    """
    path = Path(path)
    if kind is not None:
        check_output(path, kind, store)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:  # name the output, not our temporary folder
        raise OSError(err.errno, err.strerror, str(path)) from None
    target = tmp / path.name
    try:
        yield target
        _replaceable(path, target)
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)  # moved aside first: the swap never leaves nothing at path
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
