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
                        TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=Console(stderr=True),
                        disable=not show_progress(quiet), transient=False)
    with progress:
        yield progress


class JobProgress:
    """One bar per kind of job (its own count, unit and ETA) whose text says what runs now. ``bars``: kind ->
    (its label, what one step counts, total steps)."""

    def __init__(self, progress: Progress, bars: dict[str, tuple[str, str, int]]):
        self.progress = progress
        self.labels = {kind: label for kind, (label, _, _) in bars.items()}
        self.tasks = {kind: progress.add_task(label, total=total, unit=unit)
                      for kind, (label, unit, total) in bars.items() if total}

    def advance(self, kind: str, n: int) -> None:
        if kind in self.tasks:
            self.progress.update(self.tasks[kind], advance=n)

    def show(self, kind: str, now: str) -> None:
        if kind in self.tasks:
            self.progress.update(self.tasks[kind], description=f"{self.labels[kind]}: {now}")
