"""habla's error types: every error a user can cause derives from `HablaError`.

A foundation module (it imports nothing from habla): stages, library and the CLI raise these,
and the CLI turns any `HablaError` into a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations


class HablaError(Exception):
    """An error the user can fix: the message says what, where and how."""


class StageError(HablaError, RuntimeError):
    """A stage that cannot go on; the message says what and where."""


def describe(exc: BaseException) -> str:
    """'<ExceptionType>: <first line of its message>' (the type alone when the message is
    empty): how a one-line error quotes an exception raised by a library."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
