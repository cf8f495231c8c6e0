"""Progress reporting shared by the library, the pipeline and the CLI.

Long functions take ``progress=``: None/False (silent), True or ``"tqdm"`` (a ``tqdm.auto`` bar,
right for notebooks), ``"rich"`` (a rich bar with ETA on stderr), or a callable
``progress(n_done, n_total)``. `progress_bar` turns any of these into a context manager yielding
``update(n_done, n_total=None)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Progress = bool | str | Callable[[int, int], None] | None


def rich_columns():
    """Columns of cellkit's rich bars: description, bar, n/total, elapsed, ETA."""
    from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn())


@contextmanager
def progress_bar(progress: Progress, description: str, total: int | None = None,
                 console=None) -> Iterator[Callable[..., None]]:
    """Yield ``update(n_done, n_total=None)`` for ``progress`` (see the module docstring)."""
    if progress is None or progress is False:
        yield lambda done, total=None: None
    elif callable(progress):
        yield lambda done, total_=None: progress(done, total_ if total_ is not None else total)
    elif progress is True or progress == "tqdm":
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=description, unit="")
        state = {"n": 0}

        def update(done: int, total_: int | None = None):
            if total_ is not None and total_ != bar.total:
                bar.total = total_
            bar.update(done - state["n"])
            state["n"] = done

        try:
            yield update
        finally:
            bar.close()
    elif progress == "rich":
        from rich.progress import Progress as RichProgress

        with RichProgress(*rich_columns(), console=console, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done, total_=None: bar.update(task, completed=done,
                                                       **({"total": total_} if total_ is not None else {}))
    else:
        raise ValueError(f"progress must be None, True, 'tqdm', 'rich' or a callable, got {progress!r}")
