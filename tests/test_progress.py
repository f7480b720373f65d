"""Progress bars: drawn in a terminal, silent in logs and pipes; log lines print above them."""

from __future__ import annotations

import io
import logging
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import habla
from habla import progress

SRC = str(Path(habla.__file__).parents[1])
DEMO = ("import logging, time\nfrom habla import progress\nlogging.basicConfig(level=20)\n"
        "for i in progress.track(range(3), 'demo work', unit='clips'):\n"
        "    time.sleep(0.2)\n    logging.getLogger('x').info('item %d', i)\n"
        "with progress.bar('steps', 4, 'steps', completed=2) as b:\n    b.advance(2)\n")


def _run(stderr_tty: bool, **env: str) -> str:
    """DEMO's stderr, as a terminal (a pseudo-terminal) or as a pipe shows it."""
    full = {k: v for k, v in os.environ.items() if k != progress.ENV}
    full.update({"PYTHONPATH": SRC, "TERM": "xterm", **env})
    if not stderr_tty:
        done = subprocess.run([sys.executable, "-c", DEMO], capture_output=True, text=True,
                              timeout=60, env=full, check=True)
        return done.stderr
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", DEMO], stderr=child,
                            stdout=subprocess.DEVNULL, env=full)
    os.close(child)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(main)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_a_terminal_gets_a_bar_with_counts_and_an_eta():
    out = _run(stderr_tty=True)
    assert "demo work" in out and "/3" in out and "ETA" in out and "clips" in out
    assert "item 2" in out  # log lines still get through


def test_a_pipe_gets_only_the_log_lines():
    out = _run(stderr_tty=False)
    assert "demo work" not in out and "ETA" not in out and "\x1b" not in out
    assert [line for line in out.splitlines() if line] == [
        "INFO:x:item 0", "INFO:x:item 1", "INFO:x:item 2"]


def test_habla_progress_0_silences_a_terminal_too():
    out = _run(stderr_tty=True, HABLA_PROGRESS="0")
    assert "demo work" not in out and "item 2" in out


def test_track_yields_every_item_and_a_quiet_bar_writes_nothing(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    stream = io.StringIO()
    assert list(progress.track(iter("abc"), "x", total=3, stream=stream)) == ["a", "b", "c"]
    with progress.bar("y", 2, stream=stream) as b:
        b.advance()
    assert stream.getvalue() == "" and not progress.enabled(stream)


def test_log_handlers_point_back_at_stderr_after_a_bar(monkeypatch):
    monkeypatch.setenv(progress.ENV, "1")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        b = progress.start("work", 2, stream=stream)
        b.advance(2)
        b.close()
        b.close()  # twice is harmless
        assert handler.stream is stream
        assert "work" in stream.getvalue()
    finally:
        root.removeHandler(handler)
