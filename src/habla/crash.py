"""Kill points: named places where a test can kill the process like `kill -9` would.

`HABLA_KILL_AT="<point>[:<n>]"` makes the n-th arrival (default 1) at `killpoint("<point>")`
send SIGKILL to this process: no cleanup, no final save. tests/test_rerun.py kills every stage
at several points (early, mid-way, between a checkpoint save and the metrics write, inside an
atomic write) and checks that a rerun ends with complete, identical outputs. Unset (always,
outside tests), a kill point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "HABLA_KILL_AT"
_arrivals: Counter[str] = Counter()


def killpoint(name: str) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _arrivals[name] += 1
    if _arrivals[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
