"""Whisper training inputs: faster-whisper's own features, labels, and clips packed into windows.

In: clips (16 kHz mono wave, text, optional word starts) and a Whisper tokenizer. Out:
`Example`s (log-mel [n_mels, 3000] exactly as faster-whisper feeds its encoder, decoder inputs,
labels with the forced prefix masked) for one clip or several clips packed into one 30-s window.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from habla.text import words as text_words

if TYPE_CHECKING:
    from transformers import WhisperTokenizer

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
N_FRAMES = 3000  # encoder input frames of one window (10 ms hop)
TIME_PRECISION = 0.02  # one timestamp token step
MAX_TIMESTAMP_INDEX = 1500  # <|30.00|>
MAX_TARGET_POSITIONS = 448  # Whisper's decoder length
IGNORE_INDEX = -100

# text: <|notimestamps|> and the clips' texts run together (the mode habla transcribes in);
# clips: one timestamped segment per clip; words: one timestamped segment per word (phase 2)
LabelMode = Literal["text", "clips", "words"]


class WhisperDataError(ValueError):
    """A clip that cannot become a Whisper training example; the message says which and why."""


# ---------------------------------------------------------------- features


@functools.lru_cache(maxsize=4)
def _extractor(n_mels: int):  # noqa: ANN202 - faster_whisper is imported lazily
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=n_mels)


def log_mel(wave: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """[n_mels, 3000] float32: what faster-whisper's `transcribe` feeds its encoder for this
    audio (≤ 30 s, 16 kHz): the mel of the audio alone, its last frame dropped, then zero-padded
    in normalised log-mel space (whisper-finetune.md trap 1; HF's extractor pads the audio)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise WhisperDataError(f"expected mono 1-D audio, got shape {wave.shape}")
    if len(wave) > WINDOW_SECONDS * SAMPLE_RATE:
        raise WhisperDataError(f"{len(wave) / SAMPLE_RATE:.2f} s is longer than one "
                               f"{WINDOW_SECONDS:.0f} s window")
    from faster_whisper.audio import pad_or_trim

    return pad_or_trim(_extractor(n_mels)(wave)[:, :-1], N_FRAMES).astype(np.float32)


# ---------------------------------------------------------------- clips and tokens


@dataclass(frozen=True)
class Clip:
    """One utterance: 16 kHz mono audio, its text and (phase 2) each word's start in seconds,
    one per word of `habla.text.words(text)`."""

    wave: np.ndarray = field(repr=False)
    text: str
    word_starts: tuple[float, ...] | None = None
    id: str = ""

    @property
    def duration(self) -> float:
        return len(self.wave) / SAMPLE_RATE


@dataclass(frozen=True)
class SpecialIds:
    sot: int
    eot: int
    language: int
    task: int  # <|transcribe|> or <|translate|>
    no_timestamps: int

    @property
    def timestamp_begin(self) -> int:  # <|0.00|>: Whisper puts the timestamps right after
        return self.no_timestamps + 1

    def timestamp(self, seconds: float) -> int:
        index = round(seconds / TIME_PRECISION)
        return self.timestamp_begin + min(max(index, 0), MAX_TIMESTAMP_INDEX)

    def prefix(self, timestamps: bool) -> list[int]:
        """The forced decoder prefix: <|sot|><|lang|><|task|>[<|notimestamps|>]."""
        head = [self.sot, self.language, self.task]
        return head if timestamps else [*head, self.no_timestamps]


def special_ids(tokenizer: WhisperTokenizer, language: str, task: str = "transcribe"
                ) -> SpecialIds:
    added = tokenizer.get_added_vocab()

    def tid(token: str) -> int:
        i = added.get(token)
        if i is None:
            raise WhisperDataError(f"the Whisper tokenizer has no token {token} (a language "
                                   "code such as 'es'; English-only models have none)")
        return i

    return SpecialIds(sot=tid("<|startoftranscript|>"), eot=tid("<|endoftext|>"),
                      language=tid(f"<|{language}|>"), task=tid(f"<|{task}|>"),
                      no_timestamps=tid("<|notimestamps|>"))


def text_ids(tokenizer: WhisperTokenizer, text: str) -> list[int]:
    """Token ids of a transcript as Whisper writes it: NFC, with one leading space."""
    text = unicodedata.normalize("NFC", text).strip()
    return tokenizer.encode(" " + text, add_special_tokens=False)


def word_segments(clip: Clip) -> list[tuple[str, float, float]]:
    """(text, start, end) per word: the text runs from the word's start up to the next word
    (punctuation stays attached), the end is the next word's start or the clip's end."""
    spans = text_words(clip.text)
    if clip.word_starts is None:
        raise WhisperDataError(f"clip {clip.id!r} has no word start times")
    if len(spans) != len(clip.word_starts):
        raise WhisperDataError(f"clip {clip.id!r}: {len(clip.word_starts)} word starts for "
                               f"{len(spans)} words in {clip.text!r}")
    starts = list(clip.word_starts)
    if any(b < a for a, b in zip(starts, starts[1:], strict=False)) or (
            starts and not 0 <= starts[0] <= clip.duration + TIME_PRECISION):
        raise WhisperDataError(f"clip {clip.id!r}: word starts {starts} are not increasing "
                               f"within the clip ({clip.duration:.2f} s)")
    text = unicodedata.normalize("NFC", clip.text)  # the form habla.text.words spans index
    cuts = [0] + [a for _w, a, _b in spans[1:]] + [len(text)]
    ends = starts[1:] + [clip.duration]
    return [(text[cuts[k]:cuts[k + 1]].strip(), starts[k], ends[k]) for k in range(len(spans))]


def clip_tokens(tokenizer: WhisperTokenizer, ids: SpecialIds, clip: Clip, mode: LabelMode,
                offset: float = 0.0) -> list[int]:
    """The label tokens one clip contributes to a window that starts `offset` s before it."""
    if mode == "text":
        return text_ids(tokenizer, clip.text)
    if mode == "clips":
        return [ids.timestamp(offset), *text_ids(tokenizer, clip.text),
                ids.timestamp(offset + clip.duration)]
    if mode == "words":
        out: list[int] = []
        for text, start, end in word_segments(clip):
            out += [ids.timestamp(offset + start), *text_ids(tokenizer, text),
                    ids.timestamp(offset + end)]
        return out
    raise WhisperDataError(f"unknown label mode {mode!r} (text, clips or words)")


# ---------------------------------------------------------------- examples


@dataclass
class Example:
    input_features: np.ndarray  # [n_mels, 3000] float32
    decoder_input_ids: list[int]
    labels: list[int]  # next token per decoder position; IGNORE_INDEX on the forced prefix
    clips: tuple[int, ...] = ()  # which clips (indices into the list given) it holds


def example_from_tokens(tokens: list[int], n_prefix: int, features: np.ndarray,
                        clips: tuple[int, ...] = ()) -> Example:
    """Teacher forcing: the decoder reads tokens[:-1] and predicts tokens[1:]; predicting the
    rest of the forced prefix (language, task, <|notimestamps|>) is not learned."""
    if len(tokens) - 1 > MAX_TARGET_POSITIONS:
        raise WhisperDataError(f"{len(tokens) - 1} decoder positions, more than Whisper's "
                               f"{MAX_TARGET_POSITIONS}: pack fewer clips into the window")
    labels = list(tokens[1:])
    labels[:n_prefix - 1] = [IGNORE_INDEX] * (n_prefix - 1)
    return Example(features, list(tokens[:-1]), labels, clips)


Placement = list[tuple[int, float]]  # (clip index, start within the window in seconds)


def window_example(clips: Sequence[Clip], placement: Placement, tokenizer: WhisperTokenizer,
                   language: str, mode: LabelMode, n_mels: int = 80,
                   task: str = "transcribe") -> Example:
    """One 30-s window holding `clips[i]` at each (i, offset) of `placement`, in order.

    mode 'text' with one clip at 0 is the plain phase-1 example
    `<|sot|><|lang|><|transcribe|><|notimestamps|> text<|eot|>`; mode 'words' with one clip
    is the phase-2 example `<|sot|><|lang|><|transcribe|><|0.00|> Word<|0.42|><|0.42|> …<|eot|>`.
    """
    ids = special_ids(tokenizer, language, task)
    audio = np.zeros(0, np.float32)
    tokens = ids.prefix(timestamps=mode != "text")
    n_prefix = len(tokens)
    last_end = 0.0
    for i, offset in placement:
        clip = clips[i]
        start = round(offset * SAMPLE_RATE)
        if offset < last_end - 1e-9 or offset + clip.duration > WINDOW_SECONDS + 1e-9:
            raise WhisperDataError(f"clip {clip.id or i!r} at {offset:.2f} s overlaps the one "
                                   f"before or runs past the {WINDOW_SECONDS:.0f} s window")
        audio = np.concatenate([audio, np.zeros(start - len(audio), np.float32),
                                np.asarray(clip.wave, np.float32)])
        last_end = offset + clip.duration
        tokens += clip_tokens(tokenizer, ids, clip, mode, offset)
    tokens.append(ids.eot)
    return example_from_tokens(tokens, n_prefix, log_mel(audio[:int(WINDOW_SECONDS
                                                                    * SAMPLE_RATE)], n_mels),
                               tuple(i for i, _ in placement))


# ---------------------------------------------------------------- packing


@dataclass(frozen=True)
class PackingParams:
    window: float = WINDOW_SECONDS
    gap_min: float = 0.2  # silence between packed clips, drawn per clip on the 20 ms grid
    gap_max: float = 1.0
    max_tokens: int = MAX_TARGET_POSITIONS


def one_per_window(n: int, seed: int) -> list[Placement]:
    """The unpacked plan: each clip alone at the start of its own window, in seeded order."""
    return [[(int(i), 0.0)] for i in np.random.default_rng(seed).permutation(n)]


def pack_windows(durations: Sequence[float], label_tokens: Sequence[int], seed: int,
                 params: PackingParams = PackingParams(), prefix_tokens: int = 4
                 ) -> list[Placement]:
    """Seeded first-fit packing of clips into windows, like Whisper's pretraining windows.

    Clips are visited in a seeded random order; each goes into the first window where it still
    fits, after a seeded gap of silence (the first clip of a window starts at 0, as a
    segmented clip does when transcribed). Offsets sit on the 20 ms timestamp grid, so clip
    starts are exact timestamp tokens. A window also keeps its labels within Whisper's 448
    decoder positions (`label_tokens`: what each clip adds). Windows come back shuffled.
    The same inputs and seed give the same plan; a new seed per epoch gives new neighbours.
    """
    if len(durations) != len(label_tokens):
        raise WhisperDataError("durations and label_tokens differ in length")
    rng = np.random.default_rng(seed)
    grid = TIME_PRECISION
    steps = lambda s: math.ceil(round(s / grid, 6))  # noqa: E731 - duration in grid steps
    budget = params.max_tokens + 1 - prefix_tokens - 1  # decoder reads all but the eot
    windows: list[dict] = []
    for i in rng.permutation(len(durations)):
        i = int(i)
        dur = steps(durations[i])
        if dur * grid > params.window + 1e-9 or label_tokens[i] > budget:
            raise WhisperDataError(f"clip {i} ({durations[i]:.2f} s, {label_tokens[i]} label "
                                   f"tokens) does not fit one window alone")
        gap = int(rng.integers(round(params.gap_min / grid), round(params.gap_max / grid) + 1))
        for w in windows:
            if (w["end"] + gap + dur) * grid <= params.window + 1e-9 \
                    and w["tokens"] + label_tokens[i] <= budget:
                w["members"].append((i, (w["end"] + gap) * grid))
                w["end"] += gap + dur
                w["tokens"] += label_tokens[i]
                break
        else:
            windows.append({"members": [(i, 0.0)], "end": dur, "tokens": label_tokens[i]})
    return [[(i, round(off, 6)) for i, off in windows[k]["members"]]
            for k in rng.permutation(len(windows))]


def label_lengths(clips: Sequence[Clip], tokenizer: WhisperTokenizer, language: str,
                  mode: LabelMode) -> list[int]:
    """How many label tokens each clip adds to a window (for `pack_windows`)."""
    ids = special_ids(tokenizer, language)
    return [len(clip_tokens(tokenizer, ids, c, mode)) for c in clips]
