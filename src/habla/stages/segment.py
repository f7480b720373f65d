"""segment: data/raw/manifest.jsonl (recordings) -> data/clips/ (trimmed, normalised clips).

Writes data/clips/<recording>/<clip>.wav, manifest.jsonl (one Record per clip), rejects.jsonl
and summary.json. Each recording's result is kept in a marker (.segment.json) keyed by its
content and the params that shape output, so a rerun only processes what changed.
Each recording is cut in isolation: an unexpected error is an `internal_error` reject and a
worker that dies (a crash, the OOM killer) a `worker_crashed` one; neither is kept in a marker,
so the next run tries again. The stage fails only when no clip is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

import habla.audio
import habla.vad
from habla import paths, progress
from habla.audio import AudioError, normalise_loudness, probe, read_span, resample, write_wav
from habla.config import Params, SegmentParams
from habla.errors import StageError
from habla.manifest import (
    Record,
    Reject,
    Rejects,
    Word,
    read_manifest,
    sha256_file,
    write_json,
    write_manifest,
)
from habla.vad import plan_clips, scan, speech_bounds, speech_spans

log = logging.getLogger("habla.segment")

RAW_MANIFEST = paths.RAW_MANIFEST
OUT = paths.CLIPS
MARKER = ".segment.json"
# Params that change a clip; `workers` does not. The code's own bytes are in the key too.
KEY_PARAMS = ("method", "min_duration", "max_duration", "margin", "min_silence",
              "vad_threshold", "sample_rate", "loudness_db", "max_clipped_fraction")
# Test hook: a worker process cutting this recording id dies at once (os._exit), as it would
# from a segfault or the OOM killer. Honoured only in worker processes, never in the stage's own.
CRASH_ENV = "HABLA_TEST_CRASH_RECORDING"
EDGE_PAD = 0.2  # s read beyond a VAD span: its start may be a frame late
TRUTH_TOLERANCE = 0.1  # s a truth sentence may overhang a clip edge (VAD/trim jitter)


def _code_hash() -> str:
    h = hashlib.sha256()
    for mod in (habla.audio, habla.vad):
        h.update(Path(mod.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def folder_name(recording_id: str, hashed: bool = False) -> str:
    """The recording's folder: its id when that is a safe file name, else (or when `hashed`)
    a slug + hash."""
    if not hashed and re.fullmatch(r"\w[\w.-]*", recording_id) and len(recording_id) <= 100:
        return recording_id
    slug = re.sub(r"[^\w.-]+", "_", recording_id).strip("._")[:60] or "rec"
    digest = hashlib.sha1(recording_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


def recording_key(rec: Record, cfg: SegmentParams, code: str, root: Path) -> str:
    truth = rec.extra.get("truth")
    truth_sha = None
    if truth and (root / truth).is_file():
        truth_sha = sha256_file(root / truth)
    blob = {
        "record": rec.model_dump(include={"id", "sha256", "speaker", "language", "text",
                                          "source"}),
        "truth": [truth, truth_sha],
        "params": {k: getattr(cfg, k) for k in KEY_PARAMS},
        "code": code,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ one recording
def _truth_sentences(path: Path, recording_id: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text("utf-8"))
        sentences = data["sentences"]
        for s in sentences:
            float(s["start"]), float(s["end"]), str(s["text"])
            for w in s["words"]:
                str(w["word"]), float(w["start"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AudioError("bad_truth", f"{path}: not a usable truth sidecar: {exc!r}") from None
    if data.get("recording_id", recording_id) != recording_id:
        raise AudioError("bad_truth", f"{path}: is for '{data['recording_id']}', "
                         f"not '{recording_id}'")
    return sentences


def truth_for_clip(sentences: list[dict[str, Any]], start: float, end: float
                   ) -> tuple[str | None, list[Word] | None, int]:
    """(text, words relative to `start`, sentences cut) for the clip [start, end]."""
    inside, cut = [], 0
    for s in sentences:
        overlap = min(s["end"], end) - max(s["start"], start)
        if overlap <= TRUTH_TOLERANCE:
            continue
        if s["start"] >= start - TRUTH_TOLERANCE and s["end"] <= end + TRUTH_TOLERANCE:
            inside.append(s)
        else:
            cut += 1
    if cut or not inside:
        return None, None, cut
    words = []
    dur = end - start
    for s in inside:
        ws = s["words"]
        for k, w in enumerate(ws):
            w_end = ws[k + 1]["start"] if k + 1 < len(ws) else s["end"]
            words.append(Word(word=w["word"],
                              start=round(min(max(w["start"] - start, 0.0), dur), 4),
                              end=round(min(max(w_end - start, 0.0), dur), 4)))
    return " ".join(s["text"].strip() for s in inside), words, 0


def _windows(spans: list[tuple[float, float]], duration: float, pad: float
             ) -> list[tuple[float, float]]:
    """Read windows around spans: `pad` each side, never past the middle of a pause."""
    out = []
    for k, (a, b) in enumerate(spans):
        lo = (spans[k - 1][1] + a) / 2 if k > 0 else 0.0
        hi = (b + spans[k + 1][0]) / 2 if k + 1 < len(spans) else duration
        out.append((max(lo, a - pad), min(hi, b + pad)))
    return out


def segment_recording(rec: Record, cfg: SegmentParams, root: Path, folder: Path
                      ) -> dict[str, Any]:
    """Cut one recording into clips under `folder`; returns records, rejects and stats."""
    path = root / rec.audio
    stats: dict[str, Any] = {"seconds_in": rec.duration, "seconds_kept": 0.0,
                             "dropped": Counter(), "without_text": 0, "sentences_cut": 0}
    result: dict[str, Any] = {"records": [], "rejects": [], "stats": stats}

    def reject(reason: str, detail: str) -> dict[str, Any]:
        result["rejects"].append(Reject(stage="segment", item=rec.audio, reason=reason,
                                        detail=detail).model_dump())
        return result

    try:
        info = probe(path)
        stats["seconds_in"] = info.duration
        if sha256_file(path) != rec.sha256:
            return reject("sha256_mismatch", f"{path}: content differs from the manifest's "
                          "sha256 (rerun download)")
        sentences = None
        if rec.extra.get("truth"):
            sentences = _truth_sentences(root / rec.extra["truth"], rec.id)
        found = scan(path, cfg.method)
    except AudioError as exc:
        return reject(exc.reason, exc.detail)
    if found.clipped_fraction > cfg.max_clipped_fraction:
        return reject("clipped", f"{path}: {found.clipped_fraction:.1%} of non-silent samples "
                      f"are clipped (limit {cfg.max_clipped_fraction:.1%})")

    one_utterance = sentences is None and bool(rec.text) and info.duration <= cfg.max_duration
    if one_utterance:
        # An utterance transcript cannot be divided: keep the whole, trimmed, or nothing.
        spans = speech_spans(found.scores, cfg.vad_threshold, cfg.min_silence)
        spans = [(0.0, info.duration)] if spans else []
    else:
        spans = plan_clips(found, cfg.vad_threshold, cfg.min_silence, cfg.min_duration,
                           cfg.max_duration, cfg.margin)
    if not spans:
        return reject("no_speech", f"{path}: no speech found ({cfg.method} VAD)")
    windows = spans if one_utterance else _windows(spans, info.duration, cfg.margin + EDGE_PAD)

    sr = info.sample_rate
    for lo, hi in windows:
        start = int(round(lo * sr))
        wave = resample(read_span(path, start, int(round(hi * sr)) - start), sr,
                        cfg.sample_rate)
        bounds = speech_bounds(wave, cfg.sample_rate)
        if bounds is None:
            stats["dropped"]["no_speech_in_span"] += 1
            continue
        a, b, active = bounds
        m = int(round(cfg.margin * cfg.sample_rate))
        a, b = max(0, a - m), min(len(wave), b + m)
        dur = (b - a) / cfg.sample_rate
        if dur < cfg.min_duration:
            stats["dropped"]["too_short"] += 1
            continue
        if dur > cfg.max_duration and not one_utterance:
            stats["dropped"]["too_long"] += 1
            continue
        hop = max(1, cfg.sample_rate // 100)
        speech = wave[: len(active) * hop].reshape(-1, hop)[active]
        clip, gain_db, limited = normalise_loudness(
            wave[a:b], float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))), cfg.loudness_db)
        offset = lo + a / cfg.sample_rate
        n = len(result["records"])
        clip_path = folder / f"{folder.name}_{n:04d}.wav"
        write_wav(root / clip_path, clip, cfg.sample_rate)

        text, words = None, None
        if sentences is not None:
            text, words, cut = truth_for_clip(sentences, offset, offset + dur)
            stats["sentences_cut"] += cut
        elif one_utterance:
            text = rec.text
        stats["without_text"] += text is None
        stats["seconds_kept"] += dur
        result["records"].append(Record(
            id=f"{rec.id}_{n:04d}", audio=clip_path.as_posix(), duration=round(dur, 4),
            sample_rate=cfg.sample_rate, speaker=rec.speaker, language=rec.language,
            text=text, source=rec.source, sha256=sha256_file(root / clip_path),
            recording_id=rec.id, offset=round(offset, 4), truth_words=words,
            text_source="reference" if text else None,
            extra={"gain_db": round(gain_db, 2), "peak_limited": limited},
        ).model_dump(exclude_none=True))
    if not result["records"]:
        return reject("no_clips", f"{path}: speech found, but no stretch makes a clip of "
                      f"{cfg.min_duration}-{cfg.max_duration} s ({dict(stats['dropped'])})")
    return result


def _job(args: tuple[str, dict, str, str, str]) -> str | None:
    """Worker entry: process one recording, write its folder and marker last.

    Returns None, or the text of an unexpected error (then the folder is removed and no marker
    is written: the next run tries again).
    """
    rec_json, cfg_dict, root_s, folder_s, key = args
    root, folder = Path(root_s), Path(folder_s)
    try:
        rec, cfg = Record.model_validate_json(rec_json), SegmentParams(**cfg_dict)
        if multiprocessing.parent_process() is not None and os.environ.get(CRASH_ENV) == rec.id:
            os._exit(70)
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir(parents=True)
        result = segment_recording(rec, cfg, root, folder)
        result["stats"]["dropped"] = dict(sorted(result["stats"]["dropped"].items()))
        # The marker is written last: a killed run leaves a folder without one, redone next time.
        write_json(root / folder / MARKER, {"key": key, "recording_id": rec.id, **result})
    except Exception as exc:  # one recording must never stop the others
        log.exception("segment: %s failed", folder.name)
        shutil.rmtree(root / folder, ignore_errors=True)
        return f"{type(exc).__name__}: {exc}"
    return None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _parse_marker(marker: dict[str, Any]) -> tuple[list[Record], list[Reject], dict[str, Any]]:
    """A marker's clips, rejects and stats, validated; raises on any damage."""
    st = marker["stats"]
    stats = {**{k: float(st[k]) for k in ("seconds_in", "seconds_kept")},
             **{k: int(st[k]) for k in ("without_text", "sentences_cut")},
             "dropped": Counter({str(k): int(v) for k, v in st["dropped"].items()})}
    return ([Record.model_validate(r) for r in marker["records"]],
            [Reject.model_validate(r) for r in marker["rejects"]], stats)


def _up_to_date(path: Path, key: str) -> bool:
    """Whether the marker at `path` holds a usable result for `key` (a damaged one does not:
    that recording is cut again)."""
    marker = _read_marker(path)
    if marker is None or marker.get("key") != key:
        return False
    try:
        _parse_marker(marker)
    except Exception:
        return False
    return True


# ------------------------------------------------------------------ running the jobs
_CRASHED = ("the worker process died while cutting this recording, also when it ran alone "
            "(a crash in a decoder or the VAD, or the out-of-memory killer)")


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


def _run_jobs(todo: list[tuple], workers: int) -> dict[str, tuple[str, str]]:
    """`_run_jobs_shown` with a progress bar: one step per recording."""
    with progress.bar("segment", len(todo), "recordings") as shown:
        return _run_jobs_shown(todo, workers, shown)


def _run_jobs_shown(todo: list[tuple], workers: int, shown: progress.Bar
                    ) -> dict[str, tuple[str, str]]:
    """Run every job; returns {folder: (reason, detail)} for those that produced no result.

    Jobs run in a pool of `workers` spawned processes (in this process when there is one
    worker or one job). When a worker dies the pool breaks: the jobs it had not finished run
    again one at a time in a fresh single-worker pool, so a recording that still kills its
    worker is identified and rejected (`worker_crashed`) and the others are cut.
    """
    failed: dict[str, tuple[str, str]] = {}

    def note(job: tuple, error: str | None) -> None:
        shown.advance()
        if error is not None:
            failed[job[3]] = ("internal_error", error)
        else:
            log.info("segment: %s done", Path(job[3]).name)

    if not todo:
        return failed
    if workers <= 1 or len(todo) == 1:
        for job in todo:
            note(job, _job(job))
        return failed
    unfinished = []
    with _pool(min(workers, len(todo))) as pool:
        futures = {pool.submit(_job, job): k for k, job in enumerate(todo)}
        for future in as_completed(futures):
            job = todo[futures[future]]
            try:
                note(job, future.result())
            except BrokenProcessPool:
                unfinished.append(futures[future])
            except Exception as exc:  # e.g. a job that cannot be sent to a worker
                note(job, f"{type(exc).__name__}: {exc}")
    if unfinished:
        log.warning("segment: a worker process died; running the %d unfinished recording(s) "
                    "one at a time to find the one that kills it", len(unfinished))
    pool = None
    for k in sorted(unfinished):
        job = todo[k]
        pool = pool or _pool(1)
        try:
            note(job, pool.submit(_job, job).result())
        except BrokenProcessPool:
            failed[job[3]] = ("worker_crashed", _CRASHED)
            shown.advance()
            log.error("segment: %s kills its worker process; rejected", Path(job[3]).name)
            pool.shutdown()
            pool = None
        except Exception as exc:
            note(job, f"{type(exc).__name__}: {exc}")
    if pool is not None:
        pool.shutdown()
    return failed


# ------------------------------------------------------------------ the stage
def segment_all(records: list[Record], cfg: SegmentParams, root: Path = Path("."),
                out: Path = OUT) -> dict[str, Any]:
    """Bring `out` up to date with `records`; return the summary (also written there)."""
    code = _code_hash()
    todo, plan, rejects = [], [], Rejects("segment")
    ids: dict[str, str] = {}
    seen: set[str] = set()  # folder names, case-folded: 'A' and 'a' are one on macOS
    for rec in records:
        if rec.id in ids:
            rejects.add(rec.audio, "duplicate_id",
                        f"recording id '{rec.id}' already used by '{ids[rec.id]}'")
            continue
        ids[rec.id] = rec.audio
        name = folder_name(rec.id)
        if name.casefold() in seen:
            name = folder_name(rec.id, hashed=True)
        if name.casefold() in seen:
            rejects.add(rec.audio, "duplicate_id", f"recording id '{rec.id}' gives the folder "
                        f"name '{name}' of another recording")
            continue
        seen.add(name.casefold())
        folder = out / name
        try:
            key = recording_key(rec, cfg, code, root)
        except Exception as exc:  # e.g. an unreadable truth sidecar: reject, go on
            rejects.add(rec.audio, "internal_error", f"{type(exc).__name__}: {exc}")
            continue
        if not _up_to_date(root / folder / MARKER, key):
            todo.append((rec.model_dump_json(), cfg.model_dump(), str(root), str(folder), key))
        plan.append((folder, rec))

    # Stale folders: recordings no longer in the manifest.
    keep = {folder.name for folder, _ in plan}
    if (root / out).is_dir():
        for child in (root / out).iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)

    log.info("segment: %d recordings, %d to process, %d up to date", len(plan), len(todo),
             len(plan) - len(todo))
    failed = _run_jobs(todo, cfg.workers)
    for folder in failed:
        shutil.rmtree(root / folder, ignore_errors=True)  # a dead worker's half-written clips

    clips: list[Record] = []
    totals: Counter = Counter()
    dropped: Counter = Counter()
    for folder, rec in plan:
        if str(folder) in failed:
            rejects.add(rec.audio, *failed[str(folder)])
            continue
        try:
            marker = _read_marker(root / folder / MARKER)
            if marker is None:
                raise ValueError(f"{root / folder / MARKER}: missing after processing")
            got_clips, got_rejects, stats = _parse_marker(marker)
        except Exception as exc:  # this recording is lost, not the run; retried next time
            rejects.add(rec.audio, "internal_error", f"{type(exc).__name__}: {exc}")
            (root / folder / MARKER).unlink(missing_ok=True)
            continue
        clips.extend(got_clips)
        rejects.extend(got_rejects)
        dropped.update(stats.pop("dropped"))
        totals.update(stats)

    write_manifest(root / out / "manifest.jsonl", clips)
    rejects.write(root / out / "rejects.jsonl")
    summary = {
        "recordings_in": len(records),
        "recordings_used": len({c.recording_id for c in clips}),
        "clips_out": len(clips),
        "hours_in": round(totals["seconds_in"] / 3600, 4),
        "hours_kept": round(totals["seconds_kept"] / 3600, 4),
        "rejects": rejects.counts(),
        "clips_without_text": totals["without_text"],
        "sentences_cut": totals["sentences_cut"],
        "segments_dropped": dict(sorted(dropped.items())),
        "method": cfg.method,
    }
    write_json(root / out / "summary.json", summary)
    if not clips:
        raise StageError(f"segment: no usable clips from {len(records)} recordings; reasons: "
                         f"{rejects.counts()} (see {out / 'rejects.jsonl'})")
    return {**summary, "processed": len(todo), "reused": len(plan) - len(todo)}


def run(params: Params) -> dict:
    return segment_all(read_manifest(RAW_MANIFEST), params.segment)
