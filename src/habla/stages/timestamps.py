"""The `timestamps` stage: word start/end times for each clip's label text by forced alignment.

Methods: `whisper` (Whisper's cross-attention), `ctc` (a CTC model) or `tts` (DTW against the
base TTS model's own rendering of the text: habla.align_tts).
In: data/labels/transcribed.jsonl (labelled 24 kHz clips); for `tts`, model.base.
Out: data/labels/aligned.jsonl (Records with `words`, for `tts` also each word's letter
times, and `aligned_fraction`),
timestamps_rejects.jsonl (too little of the text could be placed, unreadable audio) and
timestamps_summary.json (incl. error against truth_words).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from habla import distributed, paths, progress
from habla.align import CtcAligner, align_whisper, aligned_fraction
from habla.asr import MAX_SECONDS, clip_batches, load_asr, model_id
from habla.audio import AudioError, read_mono
from habla.config import Params
from habla.errors import StageError
from habla.manifest import (
    Record,
    Rejects,
    Word,
    read_manifest,
    sha256_file,
    write_json,
    write_manifest,
)
from habla.text import words as text_words

log = logging.getLogger("habla.timestamps")
# train.processes > 1: habla.runner starts this stage under `accelerate launch`, and the
# processes share the clips to align
DISTRIBUTED = True

IN = paths.TRANSCRIBED


def _readable(clips: list[Record], rejects: Rejects) -> list[Record]:
    keep = []
    for rec in clips:
        if not text_words(rec.text or ""):
            rejects.add(rec.id, "no_words", f"label {rec.text!r} has no words to align")
        elif rec.duration > MAX_SECONDS:
            rejects.add(rec.id, "too_long", f"{rec.duration:.1f} s > {MAX_SECONDS:.0f} s")
        elif not Path(rec.audio).is_file():
            rejects.add(rec.id, "missing", f"{rec.audio} does not exist")
        elif sha256_file(rec.audio) != rec.sha256:
            rejects.add(rec.id, "sha256_mismatch", f"{rec.audio} changed after transcribe")
        else:
            keep.append(rec)
    return keep


def _probes(clips: list[Record]) -> dict[str, list[tuple[np.ndarray, int, str]]]:
    """Each speaker's first readable clips (manifest order): what picks its base speaker."""
    from habla.align_tts import SPEAKER_PROBE_CLIPS
    out: dict[str, list[tuple[np.ndarray, int, str]]] = {}
    for rec in clips:
        chosen = out.setdefault(rec.speaker or "", [])
        if len(chosen) < SPEAKER_PROBE_CLIPS:
            try:
                wave, rate = read_mono(rec.audio)
            except AudioError:
                continue  # the main pass rejects it with its reason
            chosen.append((wave, rate, rec.text or ""))
    return out


def _tts_base(params: Params) -> tuple[str, str, str | None, str]:
    """(family, base, revision, params key) of the TTS model that renders the texts:
    timestamps.tts_base (its family from its habla.json), else model.base."""
    ts, m = params.timestamps, params.model
    if ts.tts_base is None:
        return m.family, m.base, m.revision, "model.base"
    from habla.model_folder import load_info, resolve_model_dir

    return load_info(resolve_model_dir(ts.tts_base)).family, ts.tts_base, None, \
        "timestamps.tts_base"


def _align_tts(clips: list[Record], params: Params, rejects: Rejects,
               info: dict) -> dict[str, list[Word]]:
    """method tts: the base model renders each text; DTW carries its word frames onto the clip."""
    from habla.align_tts import TtsAligner
    family, base, revision, key = _tts_base(params)
    try:
        aligner = TtsAligner(family, base, revision, params.timestamps.tts_speaker)
    except (ValueError, NotImplementedError, OSError) as exc:
        raise StageError(f"timestamps.method tts with {key} {base!r}: {exc}") from None
    probes = _probes(clips) if aligner.speaker is None else {}
    out: dict[str, list[Word]] = {}
    similarity: dict[str, float] = {}
    for group, waves, rate in _my_batches(clips, 16, rejects):
        for rec, wave in zip(group, waves, strict=True):
            speaker = rec.speaker or ""
            try:
                result = aligner.align(wave, rate, rec.text or "",
                                       aligner.speaker_for(speaker, probes.get(speaker, [])))
            except NotImplementedError as exc:
                raise StageError(f"timestamps.method tts: {exc}") from None
            except ValueError as exc:  # this clip's text or audio, not the method
                rejects.add(rec.id, "tts_align_failed", str(exc))
                continue
            except Exception as exc:  # one clip never stops the others
                rejects.add(rec.id, "internal_error", f"alignment failed: {exc!r}")
                continue
            out[rec.id] = result.words
            similarity[rec.id] = result.similarity
        log.info("aligned %d/%d clips", len(out), len(clips))
    info["base_speakers"] = {k: str(v) for k, v in sorted(aligner.choices.items())}
    info["similarity"] = similarity
    return out


def _my_batches(clips: list[Record], size: int, rejects: Rejects
                ) -> Iterator[tuple[list[Record], list[np.ndarray], int]]:
    """This process's batches: the batches one process makes, dealt out to the processes."""
    mine = distributed.shard([clips[g:g + size] for g in range(0, len(clips), size)])
    batches = (batch for records in mine for batch in clip_batches(records, size, rejects))
    yield from progress.track(batches, "timestamps", sum(map(len, mine)), "clips",
                              lambda batch: len(batch[0]), show=distributed.is_main())


def _align(clips: list[Record], params: Params, rejects: Rejects,
           info: dict) -> dict[str, list[Word]]:
    """Word lists by clip id; unreadable clips go to rejects."""
    ts = params.timestamps
    if ts.method == "tts":
        return _align_tts(clips, params, rejects, info)
    aligner = CtcAligner(ts.ctc_model, params.asr.device if params.asr.device != "auto"
                         else "cpu") if ts.method == "ctc" else None
    model = load_asr(params.asr) if aligner is None else None
    out: dict[str, list[Word]] = {}
    def align(group: list[Record], waves: list[np.ndarray], rate: int) -> list[list[Word]]:
        if aligner is not None:
            return [aligner.align(w, rate, r.text or "") for w, r in zip(waves, group,
                                                                         strict=True)]
        return align_whisper(model, waves, rate, [r.text or "" for r in group],
                             params.asr.language, params.asr.batch_size)

    for group, waves, rate in _my_batches(clips, params.asr.batch_size * 4, rejects):
        try:
            out.update(zip((r.id for r in group), align(group, waves, rate), strict=True))
        except Exception:  # find the clip that broke the batch; the others go on
            for rec, wave in zip(group, waves, strict=True):
                try:
                    out[rec.id] = align([rec], [wave], rate)[0]
                except Exception as exc:
                    rejects.add(rec.id, "internal_error", f"alignment failed: {exc!r}")
        log.info("aligned %d/%d clips", len(out), len(clips))
    return out


def truth_errors_ms(records: list[Record]) -> list[float]:
    """|aligned start − true start| in ms for every aligned word of clips with truth_words."""
    errors = []
    for rec in records:
        truth = rec.truth_words or []
        if not truth or len(truth) != len(rec.words or []):
            continue  # a different word split: no one-to-one comparison
        for w, t in zip(rec.words or [], truth, strict=True):
            if w.aligned and t.start is not None:
                errors.append(abs(w.start - t.start) * 1000)
    return errors


def run(params: Params) -> dict:
    t0 = time.perf_counter()
    ts = params.timestamps
    rejects = Rejects("timestamps")
    clips = read_manifest(IN, rejects)
    usable = _readable(clips, rejects)
    info: dict = {}
    aligned = _align(usable, params, rejects, info)
    if distributed.world_size() > 1:  # every process's clips, then the main one goes on
        shares = distributed.gather([(aligned, rejects.items, info)])
        if not distributed.is_main():
            return {}
        aligned = {k: v for share in shares for k, v in share[0].items()}
        rejects.items = [r for share in shares for r in share[1]]
        info = {"base_speakers": dict(sorted({k: v for share in shares
                                              for k, v in share[2].get("base_speakers",
                                                                       {}).items()}.items())),
                "similarity": {k: v for share in shares
                               for k, v in share[2].get("similarity", {}).items()}}
        if params.timestamps.method != "tts":
            info = {}
    if "similarity" in info:  # in clip order, whichever process aligned them
        sims = [info["similarity"][r.id] for r in usable if r.id in info["similarity"]]
        info["mean_similarity"] = round(float(np.mean(sims)), 4) if sims else None
        del info["similarity"]

    kept = []
    for rec in usable:
        if rec.id not in aligned:
            continue
        words = aligned[rec.id]
        frac = aligned_fraction(words)
        if frac < ts.min_aligned_fraction:
            lost = [w.word for w in words if not w.aligned]
            rejects.add(rec.id, "low_aligned_fraction",
                        f"{frac:.2f} < {ts.min_aligned_fraction} of words placed; "
                        f"unaligned: {lost[:8]}")
            continue
        kept.append(rec.model_copy(update={"words": words, "aligned_fraction": round(frac, 4)}))

    write_manifest(paths.ALIGNED, kept)
    order = {c.id: i for i, c in enumerate(clips)}
    rejects.items.sort(key=lambda r: (order.get(r.item, len(order)), r.item, r.reason))
    rejects.write(paths.TIMESTAMPS_REJECTS)
    errors = truth_errors_ms(kept)
    n_words = sum(len(r.words or []) for r in kept)
    summary = {
        "method": ts.method,
        "model": (model_id(params.asr.model) if ts.method == "whisper" else ts.ctc_model
                  if ts.method == "ctc" else "{}:{}".format(*_tts_base(params))),
        **info,
        "clips_in": len(clips),
        "clips_kept": len(kept),
        "hours_kept": round(sum(r.duration for r in kept) / 3600, 4),
        "words": n_words,
        "words_aligned": sum(w.aligned for r in kept for w in r.words or []),
        # words whose letters were placed too (method tts): training splits their frames at
        # those times instead of evenly over their letters
        "words_with_letter_times": sum(bool(w.letters) for r in kept for w in r.words or []),
        "mean_aligned_fraction": round(float(np.mean([r.aligned_fraction for r in kept])), 4)
        if kept else None,
        "rejects": rejects.counts(),
        # Only where the source knows the truth (synthetic corpus).
        "truth_words_compared": len(errors),
        "start_error_ms_median": round(float(np.median(errors)), 1) if errors else None,
        "start_error_ms_p90": round(float(np.percentile(errors, 90)), 1) if errors else None,
    }
    write_json(paths.TIMESTAMPS_SUMMARY, summary)  # no timings: see transcribe
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
