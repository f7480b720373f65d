"""The `download` stage: every source in `params.download.sources` into data/raw/.

Params in; data/raw/<source>/ audio, data/raw/manifest.jsonl (one Record per recording),
data/raw/rejects.jsonl and data/raw/summary.json (per source: files in, recordings kept,
hours, rejects per reason, warnings) out. data/raw is rebuilt from scratch on every run.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

from habla import paths
from habla.config import Params
from habla.errors import StageError
from habla.manifest import Rejects, write_json, write_manifest
from habla.sources import run_source

log = logging.getLogger("habla.download")

RAW_DIR = paths.RAW


def run(params: Params, raw_dir: Path = RAW_DIR) -> dict:
    sources = params.download.sources
    names = Counter(src.name for src in sources)
    clashes = sorted(n for n, c in names.items() if c > 1)
    if clashes:
        raise StageError(f"params.yaml: download.sources: source names must be unique; "
                         f"repeated: {', '.join(clashes)} (set `name:` on each source)")
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    raw_dir.mkdir(parents=True)

    records, rejects, per_source = [], Rejects("download"), {}
    for src in sources:
        log.info("source '%s' (%s)", src.name, src.kind)
        result = run_source(src, raw_dir, seed=params.seed, workers=params.download.workers)
        records.extend(result.records)
        rejects.extend(result.rejects.items)
        per_source[src.name] = {"kind": src.kind, **result.summary()}
        for warning in result.warnings:
            log.warning("%s: %s", src.name, warning)
    if not records:
        raise StageError(f"no usable recordings from any source; see {raw_dir / 'rejects.jsonl'}"
                         f" ({rejects.counts()})")
    write_manifest(raw_dir / "manifest.jsonl", records)
    rejects.write(raw_dir / "rejects.jsonl")
    summary = {
        "recordings": len(records),
        "hours": round(sum(r.duration for r in records) / 3600, 4),
        "rejects": rejects.counts(),
        "sources": per_source,
    }
    write_json(raw_dir / "summary.json", summary)
    return {k: summary[k] for k in ("recordings", "hours", "rejects")}
