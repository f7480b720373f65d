"""Where and how a run was made, for the report's header: everything here changes between
reruns of the same pipeline, so the report marks it `data-volatile`.

In: the project folder (git, params.yaml, logs/*.json that habla.runner and training write).
Out: a dict: commit, date, params.yaml against the committed one, package versions, machine,
and how long each stage took.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from habla import paths
from habla.report.compare import flatten

PIPELINE = ("download", "segment", "transcribe", "timestamps", "tokenize", "pretrain", "phase1",
            "phase2", "merge", "evaluate")
PACKAGES = ("habla", "torch", "torchaudio", "transformers", "peft", "accelerate", "ctranslate2",
            "faster-whisper", "numpy", "jiwer", "dvc")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def params_diff(root: Path) -> list[tuple[str, Any, Any]] | None:
    """(key, committed, now) for each params.yaml value that differs from HEAD's params.yaml
    (what `dvc exp run -S` changed); None when there is no committed params.yaml to compare."""
    committed = _git(root, "show", f"HEAD:{paths.PARAMS.as_posix()}")
    path = root / paths.PARAMS
    if committed is None or not path.is_file():
        return None
    # read as plain YAML: the schema is not involved (no stage reads these params here)
    old = flatten(yaml.safe_load(committed) or {})
    new = flatten(yaml.safe_load(path.read_text("utf-8")) or {})
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def packages() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """CPU, core count and GPU (asked of torch only when the process already loaded it)."""
    gpu = "none"
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken driver must not cost the report
        gpu = "unknown"
    return {"cpu": _cpu_model(), "cores": str(os.cpu_count()), "gpu": gpu,
            "system": f"{platform.system()} {platform.release()}"}


def stage_times(root: Path, running: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One entry per stage that left logs/<stage>.json (training: also its per-step log), in
    pipeline order; `running` adds stages still in progress (evaluate, while it writes)."""
    out = []
    for stage in PIPELINE:
        entry: dict[str, Any] = {"stage": stage}
        log = root / paths.stage_log(stage)
        try:
            entry["seconds"] = float(json.loads(log.read_text("utf-8"))["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if running and stage in running:
            entry["seconds"] = float(running[stage])
            entry["note"] = "this run, up to the report"
        steps = root / paths.training_log(stage)
        try:
            data = json.loads(steps.read_text("utf-8"))
            rows = data.get("steps") or []
            entry["steps"] = len(rows)
            if rows:
                entry["s_per_step"] = sum(r["s_per_step"] for r in rows) / len(rows)
            if data.get("resumed_from_step") is not None:
                entry["note"] = f"resumed from step {data['resumed_from_step']}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if len(entry) > 1:
            out.append(entry)
    return out


def collect(root: Path = Path("."), running: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything the report's provenance header shows."""
    head = _git(root, "rev-parse", "HEAD")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    commit = head.strip() if head else None
    if commit and dirty:
        commit += " (with uncommitted changes)"
    return {
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "params_diff": params_diff(root),
        "packages": packages(),
        "machine": machine(),
        "stages": stage_times(root, running),
    }
