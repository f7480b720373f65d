"""The `transcribe` stage: label every clip with Whisper and reject clips that cannot be trusted.

In: data/clips/manifest.jsonl (24 kHz clips, reference `text` when the source has one).
Out: data/labels/transcribed.jsonl (Records with `text`, `text_source`, `asr`), the rejects
with reasons, a summary, and data/cache/asr/ (per clip results, so reruns decode only new clips).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from habla import atomic, distributed, paths, progress
from habla.asr import (
    MAX_SECONDS,
    clip_batches,
    hallucination,
    load_asr,
    model_id,
    transcribe_arrays,
)
from habla.config import AsrParams, Params, TranscribeParams
from habla.crash import killpoint
from habla.manifest import (
    AsrResult,
    Record,
    Rejects,
    read_manifest,
    sha256_file,
    write_json,
    write_manifest,
)
from habla.text import cer, normalize, wer

log = logging.getLogger("habla.transcribe")
# train.processes > 1: habla.runner starts this stage under `accelerate launch`, and the
# processes share the clips to decode
DISTRIBUTED = True

CLIPS = paths.CLIPS_MANIFEST
CACHE = paths.ASR_CACHE


class AsrCache:
    """Results keyed by clip audio sha256, in one folder per model + decoding settings.

    Results live in up to 256 shard files (by the first two hex digits of the sha256), each
    sorted and rewritten atomically as batches finish: a killed run keeps what it decoded,
    never leaves half an entry, and the folder's content does not depend on the order or
    the batches in which clips were decoded.
    """

    def __init__(self, folder: Path, asr: AsrParams) -> None:
        self.model = model_id(asr.model)
        settings = {"model": self.model, "compute_type": asr.compute_type,
                    "language": asr.language, "beam_size": asr.beam_size,
                    "max_new_tokens": asr.max_new_tokens}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = folder / key
        atomic.sweep(self.folder)  # what a killed run was writing
        self.results: dict[str, dict[str, Any]] = {}
        for shard in sorted(self.folder.glob("*.jsonl")):
            self.results.update(self._read(shard))
        self._settings = settings

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, Any]]:
        """The shard's results; a line that is not a result of ours (damaged, hand-edited,
        another version's) is ignored, so its clip is decoded again and the line rewritten
        away with the shard."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("%s: cannot be read (%s): its clips are decoded again", path,
                        exc.strerror or exc)
            return {}
        out = {}
        for raw in data.split(b"\n"):
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if _valid_row(row):
                out[row.pop("sha256")] = row
        return out

    def add(self, items: dict[str, dict[str, Any]]) -> None:
        self.results.update(items)
        self.folder.mkdir(parents=True, exist_ok=True)
        # several processes (train.processes) may add to one shard: read it again under
        # the folder's lock, so no process drops another's results
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_json(self.folder / "settings.json", self._settings)
            for prefix in sorted({sha[:2] for sha in items}):
                shard = self.folder / f"{prefix}.jsonl"
                merged = {**(self._read(shard) if shard.is_file() else {}), **items}
                self.results.update(merged)
                rows = sorted((sha, r) for sha, r in merged.items() if sha[:2] == prefix)
                atomic.write_text(shard, "".join(
                    json.dumps({"sha256": sha, **r}, ensure_ascii=False, sort_keys=True) + "\n"
                    for sha, r in rows))

    def reload(self) -> None:
        for shard in sorted(self.folder.glob("*.jsonl")):
            self.results.update(self._read(shard))


def _valid_row(row: Any) -> bool:
    """A cached result as `add` writes it: the clip's sha256, the text, and numbers (or
    None) for the scores `label` and `hallucination` read."""
    def number(v: Any) -> bool:
        return v is None or (isinstance(v, int | float) and not isinstance(v, bool))

    return (isinstance(row, dict) and isinstance(row.get("sha256"), str)
            and isinstance(row.get("text"), str)
            and all(number(row.get(k)) for k in ("avg_logprob", "no_speech_prob",
                                                  "compression_ratio")))


def _usable(clips: list[Record], rejects: Rejects) -> list[Record]:
    """Clips worth decoding: readable, unchanged since segment, one window long, a real ref."""
    keep = []
    for rec in clips:
        try:
            reason = _unusable(rec)
        except OSError as exc:
            reason = ("unreadable", f"{rec.audio}: {exc.strerror or exc}")
        except Exception as exc:  # a bug on one clip must not stop the others
            log.exception("clip %s: unexpected error", rec.id)
            reason = ("internal_error", f"{type(exc).__name__}: {exc}")
        if reason is None:
            keep.append(rec)
        else:
            rejects.add(rec.id, *reason)
    return keep


def _unusable(rec: Record) -> tuple[str, str] | None:
    """(reason, detail) when the clip cannot be decoded or scored; None when it can."""
    if rec.text is not None and not normalize(rec.text):
        return "empty_reference", f"reference text {rec.text!r} has no words"
    if rec.duration > MAX_SECONDS:
        return "too_long", f"{rec.duration:.1f} s > {MAX_SECONDS:.0f} s window"
    if not Path(rec.audio).is_file():
        return "missing", f"{rec.audio} does not exist"
    if sha256_file(rec.audio) != rec.sha256:
        return "sha256_mismatch", f"{rec.audio} changed after segmenting (rerun segment)"
    return None


def _decode_missing(clips: list[Record], cache: AsrCache, params: Params,
                    rejects: Rejects) -> dict[str, float]:
    todo = list({c.sha256: c for c in clips if c.sha256 not in cache.results}.values())
    todo.sort(key=lambda c: c.duration)  # similar lengths decode together: less padding
    stats = {"transcribed": 0, "asr_seconds": 0.0, "asr_audio_seconds": 0.0}
    if not todo:
        return stats
    model = load_asr(params.asr)
    size = params.asr.batch_size * 4
    # the same batches as one process decodes, dealt out to the processes
    mine = distributed.shard([todo[g:g + size] for g in range(0, len(todo), size)])
    batches = (batch for records in mine for batch in clip_batches(records, size, rejects))
    for group, waves, rate in progress.track(batches, "transcribe", sum(map(len, mine)),
                                             "clips", lambda batch: len(batch[0]),
                                             show=distributed.is_main()):
        t0 = time.perf_counter()
        try:
            results = transcribe_arrays(model, waves, rate, params.asr)
        except Exception:  # find the clip that broke the batch; the others go on
            results = []
            for rec, wave in zip(group, waves, strict=True):
                try:
                    results.extend(transcribe_arrays(model, [wave], rate, params.asr))
                except Exception as exc:
                    rejects.add(rec.id, "internal_error", f"ASR failed: {exc!r}")
                    results.append(None)
        stats["asr_seconds"] += time.perf_counter() - t0
        stats["asr_audio_seconds"] += sum(len(w) for w in waves) / rate
        stats["transcribed"] += len(group)
        cache.add({rec.sha256: res for rec, res in zip(group, results, strict=True)
                   if res is not None})
        killpoint("asr_batch")
        log.info("transcribed %d/%d new clips", stats["transcribed"], len(todo))
    return stats


def label(rec: Record, result: dict[str, Any], model: str, tp: TranscribeParams
          ) -> tuple[AsrResult, Record | None, tuple[str, str] | None]:
    """The scored ASR result, and the labelled record or the reject (reason, detail)."""
    hyp = (result.get("text") or "").strip()
    asr = AsrResult(model=model, text=hyp, avg_logprob=result.get("avg_logprob"),
                    no_speech_prob=result.get("no_speech_prob"),
                    compression_ratio=result.get("compression_ratio"))
    bad = hallucination(result, tp)
    if rec.text is not None:
        asr.wer, asr.cer = wer(rec.text, hyp), cer(rec.text, hyp)
        if bad:
            return asr, None, (bad[0], f"{bad[1]}; WER {asr.wer:.2f} CER {asr.cer:.2f}")
        if asr.wer > tp.max_wer or asr.cer > tp.max_cer:
            reason = "high_wer" if asr.wer > tp.max_wer else "high_cer"
            return asr, None, (reason, f"WER {asr.wer:.2f} (max {tp.max_wer}), CER {asr.cer:.2f} "
                                  f"(max {tp.max_cer}): heard {hyp!r}")
        return asr, rec.model_copy(update={"text_source": "reference", "asr": asr}), None
    if bad:
        return asr, None, bad
    if asr.avg_logprob is None or asr.avg_logprob < tp.min_confidence:
        return asr, None, ("low_confidence", f"avg_logprob {asr.avg_logprob} < "
                                        f"{tp.min_confidence}: {hyp!r}")
    return asr, rec.model_copy(update={"text": hyp, "text_source": "asr", "asr": asr}), None


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def run(params: Params) -> dict:
    t0 = time.perf_counter()
    rejects = Rejects("transcribe")
    clips = read_manifest(CLIPS, rejects)
    usable = _usable(clips, rejects)
    cache = AsrCache(CACHE, params.asr)
    CACHE.mkdir(parents=True, exist_ok=True)  # a declared output, even when nothing is decoded
    # verify_references false: references are kept as they are, undecoded (nothing to gate)
    verify = params.transcribe.verify_references
    trusted = {r.id for r in usable if r.text is not None and not verify}
    to_decode = [r for r in usable if r.id not in trusted]
    from_cache = sum(c.sha256 in cache.results for c in to_decode)
    stats = _decode_missing(to_decode, cache, params, rejects)
    if distributed.world_size() > 1:  # every process's decoding, then the main one goes on
        rejects.items = [r for share in distributed.gather([rejects.items]) for r in share]
        distributed.barrier()
        if not distributed.is_main():
            return {}
        cache.reload()
    rejected = {r.item for r in rejects.items}

    kept: list[Record] = []
    scored: list[AsrResult] = []
    for rec in usable:
        if rec.id in trusted:
            kept.append(rec.model_copy(update={"text_source": "reference"}))
            continue
        if rec.id in rejected or rec.sha256 not in cache.results:
            continue
        try:
            asr, labelled, bad = label(rec, cache.results[rec.sha256], cache.model,
                                       params.transcribe)
        except Exception as exc:  # a bug on one clip must not cost the others their labels
            log.exception("clip %s: unexpected error", rec.id)
            rejects.add(rec.id, "internal_error", f"{type(exc).__name__}: {exc}")
            continue
        if asr.wer is not None:
            scored.append(asr)
        if bad:
            rejects.add(rec.id, *bad)
        else:
            kept.append(labelled)

    write_manifest(paths.TRANSCRIBED, kept)
    # in clip order, whichever process found them
    order = {c.id: i for i, c in enumerate(clips)}
    rejects.items.sort(key=lambda r: (order.get(r.item, len(order)), r.item, r.reason))
    rejects.write(paths.TRANSCRIBE_REJECTS)
    kept_refs = [r.asr for r in kept if r.text_source == "reference" and r.asr is not None]
    summary = {
        "model": cache.model,
        "clips_in": len(clips),
        "clips_kept": len(kept),
        "hours_in": round(sum(c.duration for c in clips) / 3600, 4),
        "hours_kept": round(sum(c.duration for c in kept) / 3600, 4),
        "labels_from_reference": len(kept_refs) + len(trusted),
        "labels_from_asr": sum(r.text_source == "asr" for r in kept),
        "rejects": rejects.counts(),
        # Against references, over every clip that was decoded (kept or not), and over kept.
        "mean_wer": _mean([s.wer for s in scored]),
        "mean_cer": _mean([s.cer for s in scored]),
        "mean_wer_kept": _mean([a.wer for a in kept_refs]),
        "mean_cer_kept": _mean([a.cer for a in kept_refs]),
    }
    if trusted:
        summary["references_unverified"] = len(trusted)
    # The tracked summary holds only what the data determines: timings and cache counts
    # would change it on every run and rerun tokenize for nothing. They go to the log.
    write_json(paths.TRANSCRIBE_SUMMARY, summary)
    return {
        **summary,
        "clips_transcribed": stats["transcribed"],
        "clips_from_cache": from_cache,
        "asr_seconds": round(stats["asr_seconds"], 2),
        "asr_rtf": round(stats["asr_seconds"] / stats["asr_audio_seconds"], 4)
        if stats["asr_audio_seconds"] else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
