"""The `download` stage: every source in `params.download.sources` into data/raw/.

Params in; data/raw/<source>/ audio, data/raw/manifest.jsonl (one Record per recording),
data/raw/rejects.jsonl and data/raw/summary.json (per source: files in, recordings kept,
hours, rejects per reason, warnings) out. data/raw is rebuilt from scratch on every run.
A source that fails as a whole (a checksum mismatch, a missing folder) is one reject
(`source_failed`) and the others go on; the stage fails only when no recording is left.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

from habla import paths
from habla.config import Params, Source
from habla.errors import HablaError, StageError
from habla.manifest import Rejects, clean_text, write_json, write_manifest
from habla.sources import run_source
from habla.sources.common import SourceResult

log = logging.getLogger("habla.download")

RAW_DIR = paths.RAW


def run(params: Params, raw_dir: Path = RAW_DIR) -> dict:
    sources = params.download.sources
    names = Counter(src.name for src in sources)
    clashes = sorted(n for n, c in names.items() if c > 1)
    if clashes:
        raise StageError(f"params.yaml: download.sources: source names must be unique; "
                         f"repeated: {', '.join(clashes)} (set `name:` on each source)")
    _check_local_paths(sources, raw_dir)
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    raw_dir.mkdir(parents=True)

    records, rejects, per_source, failed = [], Rejects("download"), {}, []
    for src in sources:
        log.info("source '%s' (%s)", src.name, src.kind)
        result = _run_one(src, raw_dir, params)
        records.extend(result.records)
        rejects.extend(result.rejects.items)
        per_source[src.name] = {"kind": src.kind, **result.summary()}
        for warning in result.warnings:
            log.warning("%s: %s", src.name, clean_text(warning))
        if result.failed:
            per_source[src.name]["failed"] = result.failed
            failed.append(f"source '{src.name}': {result.failed}")
    rejects.write(raw_dir / "rejects.jsonl")
    summary = {
        "recordings": len(records),
        "hours": round(sum(r.duration for r in records) / 3600, 4),
        "rejects": rejects.counts(),
        "sources": per_source,
    }
    write_json(raw_dir / "summary.json", summary)
    if not records:
        raise StageError("no usable recordings from any source"
                         + (f"; {'; '.join(failed)}" if failed else "")
                         + f" (rejects: {rejects.counts()}, see {raw_dir / 'rejects.jsonl'})")
    write_manifest(raw_dir / "manifest.jsonl", records)
    return {k: summary[k] for k in ("recordings", "hours", "rejects")}


def _check_local_paths(sources: list[Source], raw_dir: Path) -> None:
    """Refuse, before anything is deleted, a local source inside a folder the pipeline
    rebuilds (data/raw is emptied on every run: its recordings would be lost), or one that
    holds such a folder (the walk would read what download is writing)."""
    rebuilt = {out.resolve(): out for out in
               [raw_dir, *(out for outs in paths.OUTPUTS.values() for out in outs)]}
    for src in sources:
        if src.kind != "local":
            continue
        folder = Path(src.path).resolve()
        inside = [shown for out, shown in rebuilt.items()
                  if folder == out or out in folder.parents]
        if inside:
            raise StageError(
                f"params.yaml: download.sources: source '{src.name}': path '{src.path}' is "
                f"inside {inside[0]}, which the pipeline deletes and rebuilds: move the "
                "recordings to a folder of their own (e.g. recordings/) and point `path` "
                "there")
        holds = [shown for out, shown in rebuilt.items() if folder in out.parents]
        if holds:
            raise StageError(
                f"params.yaml: download.sources: source '{src.name}': path '{src.path}' holds "
                f"{holds[0]}, which the pipeline writes while it reads the source: point "
                "`path` at the recordings' own folder (e.g. recordings/)")


def _run_one(src: Source, raw_dir: Path, params: Params) -> SourceResult:
    """One source, isolated: if it fails as a whole, a `source_failed` reject (an error the
    user can fix) or `internal_error` (a bug) says why, its partial output is removed, and the
    other sources go on."""
    try:
        return run_source(src, raw_dir, seed=params.seed, workers=params.download.workers)
    except (HablaError, FileNotFoundError) as exc:
        reason, detail = "source_failed", str(exc)
    except Exception as exc:  # a bug must not cost the other sources their data
        log.exception("source '%s': unexpected error", src.name)
        reason, detail = "internal_error", f"{type(exc).__name__}: {exc}"
    log.error("source '%s' failed: %s", src.name, clean_text(detail))
    shutil.rmtree(raw_dir / src.name, ignore_errors=True)
    result = SourceResult(src.name, failed=clean_text(detail))
    result.rejects.add(src.name, reason, detail)
    return result
