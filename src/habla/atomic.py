"""Atomic file writes that honour the umask: a killed stage never leaves half a file under
its final name, and what habla writes is as readable as what any ordinary tool writes.

`tempfile.mkstemp` creates files with mode 0600 whatever the umask; `atomic_target` fixes the
mode to 0666 & ~umask (as `open()` would) before renaming into place.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from habla.crash import killpoint

_UMASK: int | None = None


def umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


TMP_SUFFIX = ".tmp"  # every temporary name: .<final name>.<random>[<suffix>].<pid>.tmp
_PID = re.compile(r"\.(\d+)" + re.escape(TMP_SUFFIX) + "$")


@contextmanager
def atomic_target(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically with
    ordinary permissions, on any error `path` is untouched. A kill (SIGKILL) can leave the
    temporary file behind: `sweep` removes such leftovers from folders a stage keeps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=f"{suffix}.{os.getpid()}{TMP_SUFFIX}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        killpoint("atomic")  # written, not yet in place
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _abandoned(leftover: Path) -> bool:
    """True unless the temporary file's writer (the pid in its name) is still running: with
    train.processes > 1 every process sweeps at its start, and one process must not remove
    the file another is writing at that moment (its rename would fail)."""
    found = _PID.search(leftover.name)
    if found is None:
        return True  # not a name this version makes: nobody is writing it
    try:
        os.kill(int(found.group(1)), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OverflowError, OSError):
        return False  # another user's live process, or a pid the system cannot check
    return False  # running (this process included)


def sweep(folder: str | Path, recursive: bool = True) -> int:
    """Remove temporary files a killed run left in `folder` (a persistent output or cache);
    returns how many. Only names `atomic_target` makes are touched, and only those whose
    writer is no longer running."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = folder.rglob(f".*{TMP_SUFFIX}") if recursive else folder.glob(f".*{TMP_SUFFIX}")
    removed = 0
    for leftover in found:
        if leftover.is_file() and _abandoned(leftover):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def sweep_beside(path: str | Path) -> int:
    """Remove the temporary files a killed run left while writing the file `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    removed = 0
    for leftover in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        if _abandoned(leftover):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
