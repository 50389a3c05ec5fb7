"""A live progress bar on stderr that disappears when nobody is watching.

The bar is drawn only when stderr is a terminal (and, for commands that write
their data to stdout, only when stdout is not that same terminal), so logs,
pipes and CI output never fill with escape codes.  Updates are throttled to a
few per second: the hot loops call :meth:`Bar.advance` per record.
"""

from __future__ import annotations

import time

from .common import stderr_is_tty, stdout_is_tty

_REFRESH_S = 0.1


class Bar:
    def __init__(self, description: str, total: float | None = None, *, unit: str = "records",
                 enabled: bool | None = None, data_on_stdout: bool = False) -> None:
        if enabled is None:
            enabled = stderr_is_tty() and not (data_on_stdout and stdout_is_tty())
        self.enabled = enabled
        self.description = description
        self.total = total
        self.unit = unit
        self._done = 0.0
        self._next = 0.0
        self._progress = None
        self._task = None

    def __enter__(self) -> "Bar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            columns = [TextColumn("[progress.description]{task.description}"), BarColumn()]
            if self.unit == "bytes":
                from rich.progress import DownloadColumn, TransferSpeedColumn
                columns += [DownloadColumn(), TransferSpeedColumn()]
            else:
                columns += [MofNCompleteColumn(), TaskProgressColumn()]
            columns += [TimeElapsedColumn(), TimeRemainingColumn()]
            self._progress = Progress(*columns, console=Console(stderr=True), transient=True,
                                      redirect_stdout=False, redirect_stderr=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, amount: float = 1) -> None:
        self._done += amount
        if self._progress is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + _REFRESH_S
            self._progress.update(self._task, completed=self._done)

    def set(self, completed: float) -> None:
        self.advance(completed - self._done)

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done)
            self._progress.stop()
