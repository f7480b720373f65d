"""Running one pipeline stage: what `python stages/<stage>.py` and `habla <stage>` both call.

In: a stage name and params.yaml (validated whole through the typed schema). Out: the stage's
files, a JSON summary line on stdout, and exit code 2 with a one-line message for any error
the user can fix. Kept small on purpose: a stage's code dependencies (dvc.yaml deps) are this
module's imports plus the stage module's, so nothing heavy or unrelated is imported here.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from habla import atomic, distributed, paths
from habla.config import PARAMS_FILE, load_params, record_reads
from habla.crash import killpoint
from habla.errors import HablaError

log = logging.getLogger("habla")
# Test hook: append the params keys each stage read to this JSONL file (tests/test_dvc_yaml.py)
TRACE_ENV = "HABLA_PARAMS_TRACE"


def _fail(name: str, message: str) -> None:
    print(f"habla {name}: {message}", file=sys.stderr)
    sys.exit(2)


def run_stage(name: str, params_file: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate params, run `habla.stages.<name>.run(params)`, print its summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    t0 = time.perf_counter()
    try:
        params = load_params(params_file)
        for out in paths.OUTPUTS.get(name, []):  # what a killed run of this stage was writing
            if out.is_dir():
                atomic.sweep(out)
            else:
                atomic.sweep_beside(out)
        killpoint("start")
        module = importlib.import_module(f"habla.stages.{name}")
        with record_reads() as reads:
            if getattr(module, "DISTRIBUTED", False):
                # train.processes > 1: the stage runs again under `accelerate launch`
                code = distributed.relaunch(params.train.processes, params.train.strategy)
                if code is not None:
                    if code != 0:
                        _fail(name, f"{params.train.processes} processes under accelerate "
                                    f"launch ended with exit code {code} (see above)")
                    return {}
            summary = module.run(params) or {}
    except (HablaError, FileNotFoundError) as exc:
        _fail(name, str(exc))
    if not distributed.is_main():
        return summary  # the main process reports for all of them
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": name, "cwd": os.getcwd(),
                                "params": sorted(reads)}) + "\n")
    summary = {"stage": name, "seconds": round(time.perf_counter() - t0, 2), **summary}
    line = json.dumps(summary, ensure_ascii=False, default=str)
    print(line, flush=True)
    try:  # the report's provenance; never a reason to fail a stage that succeeded
        atomic.write_text(paths.stage_log(name), line + "\n")
    except OSError as exc:
        log.warning("could not write %s: %s", paths.stage_log(name), exc)
    return summary
