"""Word start times from Whisper's own timestamp tokens, and how far they are from the truth.

In: generated token ids (transformers `generate(return_timestamps=True)`), or a faster-whisper
model and a clip (timestamps on: a phase-2 model writes one segment per word). Out: (word,
start) per word, and `word_start_error` against known word times matched by text, in order.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from habla.text import normalize
from habla.text import words as text_words
from habla.whisper_data import TIME_PRECISION

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

WordStart = tuple[str, float | None]  # a word and its start in seconds (None: not timed)


def segments_from_tokens(token_ids: Sequence[int], tokenizer: WhisperTokenizer,
                         time_offset: float = 0.0) -> list[tuple[float | None, float | None, str]]:
    """(start, end, text) per run of text between timestamp tokens.

    A run starts at the timestamp just before it and ends at the one just after it (None when
    the model wrote none); special tokens (<|sot|>, language, task, <|eot|>) are skipped.
    """
    begin = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    special = set(tokenizer.all_special_ids)
    segments: list[tuple[float | None, float | None, str]] = []
    last_ts: float | None = None
    run: list[int] = []
    start: float | None = None

    def close(end: float | None) -> None:
        text = tokenizer.decode(run).strip()
        if text:
            segments.append((start, end, text))

    for t in (int(t) for t in token_ids):
        if t >= begin:
            ts = time_offset + (t - begin) * TIME_PRECISION
            if run:
                close(ts)
                run = []
            last_ts = ts
        elif t not in special:
            if not run:
                start = last_ts
            run.append(t)
    if run:
        close(None)
    return segments


def words_from_segments(segments: Sequence[tuple[float | None, Any, str]]) -> list[WordStart]:
    """(word, start) per word; a segment's start goes to its first word, the others get None."""
    out: list[WordStart] = []
    for start, _end, text in segments:
        for k, (word, _a, _b) in enumerate(text_words(text)):
            out.append((word, start if k == 0 else None))
    return out


def hf_word_starts(model: WhisperForConditionalGeneration, tokenizer: WhisperTokenizer,
                   features: np.ndarray, language: str, max_new_tokens: int = 440
                   ) -> list[list[WordStart]]:
    """Greedy decoding with timestamps on, for a batch of [n_mels, 3000] feature windows."""
    import torch

    with torch.no_grad():
        out = model.generate(input_features=torch.as_tensor(features), language=language,
                             task="transcribe", return_timestamps=True,
                             max_new_tokens=max_new_tokens)
    sequences = out if isinstance(out, torch.Tensor) else out["sequences"]
    return [words_from_segments(segments_from_tokens(row.tolist(), tokenizer))
            for row in sequences]


def fw_word_starts(model: WhisperModel, wave: np.ndarray, language: str,
                   max_new_tokens: int = 440) -> list[WordStart]:
    """faster-whisper (a CT2 export) with timestamps on: segments = words for a phase-2 model."""
    segments, _ = model.transcribe(
        np.asarray(wave, np.float32), language=language, task="transcribe", beam_size=1,
        temperature=0.0, without_timestamps=False, word_timestamps=False,
        condition_on_previous_text=False, vad_filter=False, max_new_tokens=max_new_tokens,
        log_prob_threshold=None, no_speech_threshold=None, compression_ratio_threshold=None)
    return words_from_segments([(s.start, s.end, s.text) for s in segments])


@dataclass(frozen=True)
class WordStartError:
    words: int  # truth words
    matched: int  # truth words matched by text to a predicted word that has its own start
    median_ms: float
    p90_ms: float
    mae_ms: float
    mean_signed_ms: float  # predicted minus truth
    within_50ms: float  # fraction of matched words


def _key(word: str) -> str:
    return normalize(word)


def word_start_error(truth: Sequence[Sequence[tuple[str, float]]],
                     predicted: Sequence[Sequence[WordStart]]) -> WordStartError:
    """Start-time error over clips: truth and predicted words are matched by normalised text,
    in order (difflib); a matched prediction without its own start is not counted."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truth clips but {len(predicted)} predicted")
    errors: list[float] = []
    total = 0
    for ref, hyp in zip(truth, predicted, strict=True):
        total += len(ref)
        matcher = difflib.SequenceMatcher(None, [_key(w) for w, _ in ref],
                                          [_key(w) for w, _ in hyp], autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                start = hyp[block.b + k][1]
                if start is not None:
                    errors.append(start - ref[block.a + k][1])
    err = np.asarray(errors, dtype=float) * 1000.0
    if not len(err):
        nan = float("nan")
        return WordStartError(total, 0, nan, nan, nan, nan, nan)
    absolute = np.abs(err)
    return WordStartError(total, len(err), float(np.median(absolute)),
                          float(np.percentile(absolute, 90)), float(absolute.mean()),
                          float(err.mean()), float((absolute <= 50.0).mean()))
