"""Running one pipeline stage: what `python stages/<stage>.py` and `habla <stage>` both call.

In: a stage name and params.yaml (validated whole through the typed schema). Out: the stage's
files, a JSON summary line on stdout followed by one line in words (what came in, what went
out, what was rejected, how long it took), and exit code 2 with a one-line message for any
error the user can fix. Kept small on purpose: a stage's code dependencies (dvc.yaml deps) are
this module's imports plus the stage module's, so nothing heavy or unrelated is imported here.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from habla import atomic, distributed, paths
from habla.config import PARAMS_FILE, load_params, record_reads
from habla.crash import killpoint
from habla.errors import HablaError
from habla.progress import duration_text

log = logging.getLogger("habla")
# Test hook: append the params keys each stage read to this JSONL file (tests/test_dvc_yaml.py)
TRACE_ENV = "HABLA_PARAMS_TRACE"


def _quiet_libraries() -> None:
    """No deprecation chatter and no "Loading weights" bars from the model libraries inside a
    stage: their bars follow HF_HUB_DISABLE_PROGRESS_BARS, read when they are first imported.
    habla's own bars (habla.progress) are unaffected."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for lib in ("transformers", "peft", "accelerate", "huggingface_hub", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{lib}(\.|$)")


# ---------------------------------------------------------------- the line in words
def _rejected(s: Mapping[str, Any]) -> str:
    counts = s.get("rejects", s.get("rejected"))
    if isinstance(counts, Mapping):
        total = sum(v for v in counts.values() if isinstance(v, int))
        if not total:
            return "nothing rejected"
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return f"{total} rejected (" + ", ".join(f"{k} {v}" for k, v in top[:4]) + \
            (", ..." if len(top) > 4 else "") + ")"
    if isinstance(counts, int):
        return f"{counts} rejected" if counts else "nothing rejected"
    return ""


def _h(s: Mapping[str, Any], key: str) -> str:
    v = s.get(key)
    return f"{v:.2f} h" if isinstance(v, int | float) else "? h"


def _training(s: Mapping[str, Any]) -> str:
    best = s.get("best_val_loss")
    return (f"{s.get('steps', '?')} steps on {s.get('train_clips', s.get('clips', '?'))} clips"
            + (f", best validation loss {best:.4f}" if isinstance(best, float) else ""))


# stage -> what came in and went out, from its summary dict
_IN_OUT: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "download": lambda s: f"{s.get('recordings', '?')} recordings ({_h(s, 'hours')}) in "
                          "data/raw",
    "segment": lambda s: f"{s.get('recordings_in', '?')} recordings ({_h(s, 'hours_in')}) in, "
                         f"{s.get('clips_out', '?')} clips ({_h(s, 'hours_kept')}) out",
    "transcribe": lambda s: f"{s.get('clips_in', '?')} clips ({_h(s, 'hours_in')}) in, "
                            f"{s.get('clips_kept', '?')} labelled ({_h(s, 'hours_kept')}) out",
    "timestamps": lambda s: f"{s.get('clips_in', '?')} clips in, {s.get('clips_kept', '?')} "
                            f"aligned ({_h(s, 'hours_kept')}, {s.get('words', '?')} words) out",
    "tokenize": lambda s: f"train/val/test {s.get('clips_train', '?')}/{s.get('clips_val', '?')}"
                          f"/{s.get('clips_test', '?')} clips, vocabulary "
                          f"{s.get('vocab_size', '?')}",
    "phase1": _training,
    "phase2": _training,
    "pretrain": _training,
    "merge": lambda s: f"merged into {s.get('out', '?')}, largest difference to the adapter "
                       f"model {s.get('parity_max_abs_diff', float('nan')):.2g} on "
                       f"{s.get('parity_utterances', '?')} utterances",
    "evaluate": lambda s: f"{s.get('utterances', '?')} test sentences: CER base "
                          f"{s.get('cer_base', float('nan')):.3f} -> fine-tuned "
                          f"{s.get('cer_finetuned', float('nan')):.3f}, "
                          + (f"MCD {s['mcd_base']:.1f} -> {s['mcd_finetuned']:.1f}"
                             if "mcd_base" in s else  # an ASR model is scored by its WER
                             f"WER {s.get('wer_base', float('nan')):.3f} -> "
                             f"{s.get('wer_finetuned', float('nan')):.3f}")
                          + f"; report {s.get('report', '?')}",
}


def human_line(name: str, summary: Mapping[str, Any]) -> str:
    """One sentence after the JSON summary: in, out, rejected, time taken."""
    try:
        what = _IN_OUT[name](summary) if name in _IN_OUT else "done"
    except (TypeError, ValueError):  # a summary of another shape: say what is certain
        what = "done"
    parts = [what, _rejected(summary)]
    if isinstance(summary.get("seconds"), int | float):
        parts.append(f"took {duration_text(float(summary['seconds']))}")
    return f"habla {name}: " + "; ".join(p for p in parts if p) + "."


def _fail(name: str, message: str) -> None:
    print(f"habla {name}: {message}", file=sys.stderr)
    sys.exit(2)


def run_stage(name: str, params_file: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate params, run `habla.stages.<name>.run(params)`, print its summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    _quiet_libraries()
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
    except OSError as exc:  # a read-only folder, a full disk: the system's words, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(name, f"{where}{exc.strerror or exc} (fix it and rerun the stage)")
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
    print(human_line(name, summary), flush=True)
    try:  # the report's provenance; never a reason to fail a stage that succeeded
        atomic.write_text(paths.stage_log(name), line + "\n")
    except OSError as exc:
        log.warning("could not write %s: %s", paths.stage_log(name), exc)
    return summary
