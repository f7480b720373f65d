"""segment: data/raw/manifest.jsonl (recordings) -> data/clips/ (trimmed, normalised clips).

Writes data/clips/<recording>/<clip>.wav, manifest.jsonl (one Record per clip), rejects.jsonl
and summary.json. Each recording's result is kept in a marker (.segment.json) keyed by its
content and the params that shape output, so a rerun only processes what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import habla.audio
import habla.vad
from habla import paths
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
EDGE_PAD = 0.2  # s read beyond a VAD span: its start may be a frame late
TRUTH_TOLERANCE = 0.1  # s a truth sentence may overhang a clip edge (VAD/trim jitter)


def _code_hash() -> str:
    h = hashlib.sha256()
    for mod in (habla.audio, habla.vad):
        h.update(Path(mod.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def folder_name(recording_id: str) -> str:
    """The recording's folder: its id when that is a safe file name, else a slug + hash."""
    if re.fullmatch(r"\w[\w.-]*", recording_id) and len(recording_id) <= 100:
        return recording_id
    slug = re.sub(r"[^\w.-]+", "_", recording_id).strip("._")[:60] or "rec"
    return f"{slug}-{hashlib.sha1(recording_id.encode()).hexdigest()[:8]}"


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


def _job(args: tuple[str, dict, str, str, str]) -> str:
    """Worker entry: process one recording, write its folder and marker; returns the id."""
    rec_json, cfg_dict, root_s, folder_s, key = args
    rec, cfg, root, folder = (Record.model_validate_json(rec_json), SegmentParams(**cfg_dict),
                              Path(root_s), Path(folder_s))
    shutil.rmtree(root / folder, ignore_errors=True)
    (root / folder).mkdir(parents=True)
    result = segment_recording(rec, cfg, root, folder)
    result["stats"]["dropped"] = dict(sorted(result["stats"]["dropped"].items()))
    # The marker is written last: a killed run leaves a folder without one, redone next time.
    write_json(root / folder / MARKER, {"key": key, "recording_id": rec.id, **result})
    return rec.id


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ the stage
def segment_all(records: list[Record], cfg: SegmentParams, root: Path = Path("."),
                out: Path = OUT) -> dict[str, Any]:
    """Bring `out` up to date with `records`; return the summary (also written there)."""
    code = _code_hash()
    todo, plan, rejects = [], [], Rejects("segment")
    seen: dict[str, str] = {}
    for rec in records:
        folder = out / folder_name(rec.id)
        if folder.name in seen:
            rejects.add(rec.audio, "duplicate_id",
                        f"recording id '{rec.id}' already used by '{seen[folder.name]}'")
            continue
        seen[folder.name] = rec.id
        key = recording_key(rec, cfg, code, root)
        marker = _read_marker(root / folder / MARKER)
        if marker is None or marker.get("key") != key:
            todo.append((rec.model_dump_json(), cfg.model_dump(), str(root), str(folder), key))
        plan.append(folder)

    # Stale folders: recordings no longer in the manifest.
    if (root / out).is_dir():
        for child in (root / out).iterdir():
            if child.is_dir() and child.name not in seen:
                shutil.rmtree(child)

    log.info("segment: %d recordings, %d to process, %d up to date", len(plan), len(todo),
             len(plan) - len(todo))
    if todo and cfg.workers > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(cfg.workers, len(todo)), initializer=_init_worker) as pool:
            for rid in pool.imap_unordered(_job, todo):
                log.info("segment: %s done", rid)
    else:
        for job in todo:
            _job(job)

    clips: list[Record] = []
    totals: Counter = Counter()
    dropped: Counter = Counter()
    for folder in plan:
        marker = _read_marker(root / folder / MARKER)
        if marker is None:
            raise StageError(f"{root / folder / MARKER}: missing after processing")
        clips.extend(Record.model_validate(r) for r in marker["records"])
        rejects.extend(Reject.model_validate(r) for r in marker["rejects"])
        st = marker["stats"]
        totals["seconds_in"] += st["seconds_in"]
        totals["seconds_kept"] += st["seconds_kept"]
        totals["without_text"] += st["without_text"]
        totals["sentences_cut"] += st["sentences_cut"]
        dropped.update(st["dropped"])

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
