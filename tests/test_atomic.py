"""Atomic writes and the sweep of what a killed writer left: only dead writers' files go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from habla import atomic


def _leftover(folder: Path, final: str, pid: int | None) -> Path:
    tail = f".{pid}.tmp" if pid is not None else ".tmp"
    path = folder / f".{final}.k3j9x0ab{tail}"
    path.write_text("half")
    return path


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)  # exited and reaped: no process has it (until reused)


def test_a_killed_writers_file_is_swept_and_a_running_writers_file_is_kept(tmp_path):
    dead = _leftover(tmp_path, "a.json", _dead_pid())
    legacy = _leftover(tmp_path, "b.json", None)  # written before names carried the pid
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = _leftover(tmp_path, "c.json", sleeper.pid)
        mine = _leftover(tmp_path, "d.json", os.getpid())
        assert atomic.sweep(tmp_path) == 2
        assert not dead.exists() and not legacy.exists()
        assert running.exists() and mine.exists()
        assert atomic.sweep_beside(tmp_path / "c.json") == 0 and running.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert atomic.sweep_beside(tmp_path / "c.json") == 1 and not running.exists()


def test_a_sweep_while_another_process_writes_does_not_break_its_write(tmp_path):
    """The race of several processes (train.processes > 1) at a stage's start: one sweeps
    the folder the other is writing into, between the write and the rename."""
    target = tmp_path / "config.json"
    with atomic.atomic_target(target) as tmp:
        tmp.write_text("{}")
        assert tmp.name.endswith(f".{os.getpid()}.tmp")
        swept = subprocess.run([sys.executable, "-c", "import sys; from habla import atomic; "
                                "print(atomic.sweep(sys.argv[1]))", str(tmp_path)],
                               capture_output=True, text=True, check=True)
        assert swept.stdout.strip() == "0" and tmp.exists()
    assert target.read_text() == "{}" and not list(tmp_path.glob(".*.tmp"))
