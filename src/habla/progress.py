"""Progress bars with an ETA for the long loops of a stage, drawn by `rich` on stderr.

In: a description, a total, and `advance()` calls (or an iterable to `track`). Out: one live
line (done/total, elapsed, time left) while a person watches a terminal; nothing at all when
stderr is a file or a pipe (DVC logs, CI), so logs stay clean. `HABLA_PROGRESS=0` turns bars
off in a terminal too, `HABLA_PROGRESS=1` forces them on.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import IO, Protocol, TypeVar

ENV = "HABLA_PROGRESS"
T = TypeVar("T")


def duration_text(seconds: float) -> str:
    """A duration as people read it: "41.0 s", "5 min 12 s", "2 h 01 min"."""
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else \
        f"{minutes // 60} h {minutes % 60:02d} min"


class Bar(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def close(self) -> None: ...


class _Quiet:
    def advance(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


def enabled(stream: IO[str] | None = None) -> bool:
    """Whether bars are drawn: HABLA_PROGRESS=1/0 decides, else whether stderr is a terminal."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class _Rich:
    """A live rich progress line; log records print above it while it runs."""

    def __init__(self, description: str, total: float | None, unit: str, completed: float,
                 stream: IO[str] | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._real = stream if stream is not None else sys.stderr
        console = Console(file=self._real, force_terminal=True if stream is not None else None)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=completed)
        # Log handlers hold the real stderr: point them at rich's proxy (sys.stderr while the
        # bar is live) so their lines print above the bar instead of through it.
        self._moved = [h for h in logging.getLogger().handlers
                       if isinstance(h, logging.StreamHandler) and h.stream is self._real]
        for handler in self._moved:
            handler.setStream(sys.stderr)
        # an exception that skips close() must not leave the terminal without its cursor
        atexit.register(self.close)
        self._open = True

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for handler in self._moved:
            handler.setStream(self._real)
        self._progress.stop()
        atexit.unregister(self.close)


def start(description: str, total: float | None, unit: str = "", completed: float = 0,
          stream: IO[str] | None = None, show: bool = True) -> Bar:
    """A bar for `total` units (None: unknown, no ETA), starting at `completed` (a resumed
    run); `advance(n)` moves it, `close()` removes it. Quiet unless `enabled()` (and `show`:
    False for the other processes of a multi-GPU run)."""
    if not show or not enabled(stream):
        return _Quiet()
    return _Rich(description, total, unit, completed, stream)


@contextmanager
def bar(description: str, total: float | None, unit: str = "", completed: float = 0,
        stream: IO[str] | None = None, show: bool = True) -> Iterator[Bar]:
    """`start` as a context manager: the bar is removed when the block ends."""
    shown = start(description, total, unit, completed, stream, show)
    try:
        yield shown
    finally:
        shown.close()


def track(items: Iterable[T], description: str, total: float | None = None, unit: str = "",
          weight: Callable[[T], float] | None = None, stream: IO[str] | None = None,
          show: bool = True) -> Iterator[T]:
    """Yield from `items`, advancing a bar once each item's work is done: by one, or by
    `weight(item)` (e.g. the clips in a batch). `total` defaults to len(items)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with bar(description, total, unit, stream=stream, show=show) as shown:
        for item in items:
            yield item
            shown.advance(weight(item) if weight is not None else 1)
