"""Progress where no terminal is: plain lines, and what a resumed run resumed from."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from leanaug.errors import LeanaugError
from leanaug.progress import EVERY_ENV, Progress, plain_every


def _lines(every: float, steps: int = 4, terminal: bool = False) -> list[str]:
    log = io.StringIO()
    console = Console(file=log, force_terminal=terminal, width=200)
    with Progress(console=console, every=every) as bar:
        task = bar.add_task("refits", total=steps)
        for k in range(steps):
            bar.update(task, advance=1, description=f"refits | loss {k}")
    return log.getvalue().splitlines()


def test_plain_lines_when_the_output_is_no_terminal() -> None:
    lines = _lines(every=0)
    assert len(lines) == 4
    assert lines[0].startswith("refits: 1/4 (25 %), 0:00:00 elapsed, about 0:00:00 left")
    assert lines[0].endswith("| loss 0")
    assert lines[-1].startswith("refits: 4/4 (100 %), 0:00:00 elapsed | loss 3")
    assert "left" not in lines[-1]


def test_lines_are_spaced_but_the_end_is_always_printed() -> None:
    lines = _lines(every=3600)
    assert [line.split(",")[0] for line in lines] == ["refits: 1/4 (25 %)", "refits: 4/4 (100 %)"]


def test_a_terminal_gets_the_live_bar_not_lines() -> None:
    assert not any(line.startswith("refits: ") for line in _lines(every=0, terminal=True))


def test_disabled_prints_nothing() -> None:
    log = io.StringIO()
    with Progress(console=Console(file=log), every=0, disable=True) as bar:
        bar.advance(bar.add_task("x", total=2), 2)
    assert log.getvalue() == ""


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVERY_ENV, "5")
    assert plain_every() == 5.0
    monkeypatch.setenv(EVERY_ENV, "soon")
    with pytest.raises(LeanaugError, match="LEANAUG_PROGRESS_EVERY"):
        plain_every()
