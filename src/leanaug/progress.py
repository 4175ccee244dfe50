"""One progress display for every long loop: a rich bar on a terminal, plain lines elsewhere.

rich draws nothing while a job runs when its output is a file or a pipe (a batch job, a
``nohup``, ``| tee``), so a user watching a log saw nothing until the end. Here the same
:class:`Progress` prints a plain line instead, at most every
``$LEANAUG_PROGRESS_EVERY`` seconds (default 30) per task and once when a task completes::

    distilling: 20/120 (17 %), 0:01:02 elapsed, about 0:05:10 left | loss 0.4125 alpha 0.0204

Progress goes to stderr: stdout carries results.

Examples
--------
>>> import io
>>> from rich.console import Console
>>> log = io.StringIO()
>>> with Progress(console=Console(file=log), every=0) as bar:
...     task = bar.add_task("refits", total=2)
...     bar.advance(task)
...     bar.advance(task)
>>> print(log.getvalue().splitlines()[-1].split(",")[0])
refits: 2/2 (100 %)
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _RichProgress

from leanaug.errors import LeanaugError

EVERY_ENV = "LEANAUG_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0

_STDERR = Console(stderr=True)


def plain_every() -> float:
    """Seconds between plain progress lines, from ``$LEANAUG_PROGRESS_EVERY`` (default 30)."""
    text = os.environ.get(EVERY_ENV, "")
    if not text:
        return DEFAULT_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise LeanaugError(f"${EVERY_ENV}={text!r}: expected a number of seconds >= 0")
    return value


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress(_RichProgress):
    """A rich progress display that prints plain lines when its console is no terminal.

    ``columns`` default to :func:`default_columns`; the console to stderr. ``every``:
    seconds between lines of one task (default :func:`plain_every`); a line is also
    printed when a task reaches its total. On a terminal it is rich's live bar. A
    description ``"name | detail"`` prints as ``name: 3/10 ... | detail``.
    """

    def __init__(
        self, *columns: str | ProgressColumn, every: float | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("console", _STDERR)
        self.enabled = not kwargs.get("disable", False)
        self.plain = self.enabled and not kwargs["console"].is_terminal
        if self.plain:  # rich's own non-terminal output is one bar at the very end: replaced
            kwargs["disable"] = True
        super().__init__(*(columns or default_columns()), **kwargs)
        self.every = plain_every() if every is None else float(every)
        self._start: dict[TaskID, tuple[float, float]] = {}
        self._last: dict[TaskID, float] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._start[task_id] = (time.monotonic(), float(self._tasks[task_id].completed))
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._line(task_id)

    def _line(self, task_id: TaskID) -> None:
        if not self.plain:
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        done = task.total is not None and task.completed >= task.total
        if not done and now - self._last.get(task_id, -float("inf")) < self.every:
            return
        if done and self._last.get(task_id) == float("inf"):
            return  # the completion line was printed already
        self._last[task_id] = float("inf") if done else now
        t0, c0 = self._start.get(task_id, (now, 0.0))
        text = f"{task.completed:g}"
        if task.total:
            text += f"/{task.total:g} ({100 * task.completed / task.total:.0f} %)"
        text += f", {_clock(now - t0)} elapsed"
        rate = (task.completed - c0) / max(now - t0, 1e-9)
        if task.total and not done and rate > 0:
            text += f", about {_clock((task.total - task.completed) / rate)} left"
        name, _, detail = task.description.partition(" | ")
        line = f"{name}: {text}" + (f" | {detail}" if detail else "")
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def default_columns() -> tuple[ProgressColumn, ...]:
    """Description, bar, ``n/total``, elapsed and remaining time."""
    return (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def note(message: str, enabled: bool = True) -> None:
    """One line on stderr for a run's user, e.g. what a resumed run resumed from."""
    if enabled:
        _STDERR.print(message, markup=False, highlight=False, soft_wrap=True)
