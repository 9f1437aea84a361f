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


# what one unit of progress is, per kind of job (shown beside the counts)
UNITS = {"clean": "images", "corruption": "images x settings", "attack": "images x attack settings",
         "check": "images x check attacks",
         "diagnostics": "images", "shift": "images"}
LABELS = {"clean": "clean", "corruption": "corruptions", "attack": "attacks", "check": "attack checks",
          "diagnostics": "diagnostics",
          "shift": "shifts"}


class JobProgress:
    """One bar per kind of job (its own count, unit and ETA) whose text says what runs now."""

    def __init__(self, progress: Progress, totals: dict[str, int]):
        self.progress = progress
        self.tasks = {kind: progress.add_task(LABELS[kind], total=total, unit=UNITS[kind])
                      for kind, total in totals.items() if total}

    def advance(self, kind: str, n: int) -> None:
        if kind in self.tasks:
            self.progress.update(self.tasks[kind], advance=n)

    def show(self, kind: str, now: str) -> None:
        if kind in self.tasks:
            self.progress.update(self.tasks[kind], description=f"{LABELS[kind]}: {now}")
