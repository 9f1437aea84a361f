"""One place that decides whether to show rich progress bars (never under --quiet or without a TTY)."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def show_progress(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Progress]:
    from rich.console import Console

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                        disable=not show_progress(quiet), transient=False)
    with progress:
        yield progress
