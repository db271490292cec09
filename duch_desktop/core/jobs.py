"""Long-running work as generators.

Every long job in the core is a generator that yields :class:`Progress` events and
*returns* its result (``StopIteration.value``). The CLI, the GUI worker and tests all
drive the same generator; a cancel request is honoured between two yields by closing
the generator, which raises ``GeneratorExit`` at the yield point so that ``finally``
blocks commit or roll back cleanly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, TypeVar

R = TypeVar("R")


@dataclass
class Progress:
    """One progress report: ``done`` of ``total`` units of ``stage`` (total 0 = unknown)."""

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None


Job = Generator[Progress, None, R]


class Cancelled(Exception):
    """Raised by :func:`drive` when the caller asked to stop."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad option, missing weights).

    Its message is one plain sentence, shown as-is by the CLI and the GUI.
    """


def drive(
    job: Job[R],
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> R:
    """Run ``job`` to completion, reporting each event; return the job's result.

    ``should_cancel`` is polled after each event; when it answers True the generator is
    closed (its cleanup runs) and :class:`Cancelled` is raised.
    """
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)
        if should_cancel is not None and should_cancel():
            job.close()
            raise Cancelled(f"cancelled during {event.stage}")


class RateMeter:
    """Items per second over the whole run, for progress messages."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def rate(self, done: int) -> float:
        elapsed = time.perf_counter() - self.start
        return done / elapsed if elapsed > 0 else 0.0

    def eta(self, done: int, total: int) -> float | None:
        r = self.rate(done)
        return (total - done) / r if r > 0 and total else None
