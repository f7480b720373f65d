"""Forced alignment: word start/end times for a GIVEN text in a clip (nothing is decoded).

In: mono waveforms and their label texts. Out: per clip a list of `Word` (word, start, end,
confidence, aligned), one per `habla.text.words(text)`. Default: Whisper's cross-attention
alignment through CTranslate2 (`align_whisper`); alternative: CTC forced alignment with
torchaudio (`CtcAligner`: a torchaudio bundle such as MMS_FA, or a HF wav2vec2 CTC model).
Words that cannot be placed get `aligned=False` and no times: nothing is invented.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

import numpy as np

from habla.asr import SAMPLE_RATE, as_16k
from habla.audio import resample
from habla.manifest import Word
from habla.text import words as text_words

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

MAX_TOKENS = 440  # Whisper's decoder holds 448 positions, the sot sequence included


def aligned_fraction(words: list[Word]) -> float:
    return sum(w.aligned for w in words) / len(words) if words else 0.0


def _unaligned(names: list[str]) -> list[Word]:
    return [Word(word=w, aligned=False) for w in names]


def place_words(names: list[str], spans: list[tuple[float, float, float] | None],
                duration: float) -> list[Word]:
    """Words from (start, end, confidence) spans; empty or out-of-audio spans are unaligned."""
    out = []
    for name, span in zip(names, spans, strict=True):
        if span is None or span[1] <= span[0] or span[0] >= duration:
            out.append(Word(word=name, aligned=False))
            continue
        start, end, conf = span
        out.append(Word(word=name, start=round(start, 3), end=round(min(end, duration), 3),
                        confidence=round(float(conf), 4), aligned=True))
    return out


# ------------------------------------------------------------------ Whisper (default)
def align_whisper(model: WhisperModel, waves: list[np.ndarray], sample_rate: int,
                  texts: list[str], language: str, batch_size: int = 8) -> list[list[Word]]:
    """Word times for each (wave ≤ 30 s, text) pair from Whisper's alignment heads.

    The text is tokenised word by word so token boundaries are word boundaries; the DTW path
    over the heads' attention gives each token the frame where it starts (20 ms frames), as
    faster-whisper's own `find_alignment` does. A word starts at its first token's jump and ends
    where the next word (or end-of-text) starts; confidence is its tokens' mean probability.
    """
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                          language=language)
    waves16 = as_16k(waves, sample_rate)
    out: list[list[Word]] = [[] for _ in waves16]
    jobs = []  # (index, names, per-word token lists, num_frames, duration)
    for i, (wave, text) in enumerate(zip(waves16, texts, strict=True)):
        names = [w for w, _a, _b in text_words(text)]
        per_word = [tokenizer.encode(" " + w) for w in names]
        n_tokens = sum(len(t) for t in per_word)
        frames = min(len(wave) // model.feature_extractor.hop_length, 3000)
        if not names or frames < 2 or n_tokens + len(tokenizer.sot_sequence) > MAX_TOKENS:
            out[i] = _unaligned(names)
            continue
        jobs.append((i, names, per_word, frames, len(wave) / SAMPLE_RATE))

    for g in range(0, len(jobs), batch_size):
        group = jobs[g:g + batch_size]
        feats = np.stack([pad_or_trim(model.feature_extractor(waves16[i])[..., :-1])
                          for i, *_ in group])
        encoded = model.encode(feats)
        results = model.model.align(
            encoded, tokenizer.sot_sequence,
            [[t for toks in per_word for t in toks] for _i, _n, per_word, _f, _d in group],
            [frames for *_, frames, _d in group], median_filter_width=7)
        for (i, names, per_word, _frames, duration), res in zip(group, results, strict=True):
            spans = _whisper_spans(res, per_word, model.tokens_per_second)
            out[i] = place_words(names, _trim_to_speech(spans, waves16[i]), duration)
    return out


def speech_bounds(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, floor_db: float = 35.0
                  ) -> tuple[float, float] | None:
    """First and last 10 ms frame within `floor_db` of the loudest one, in seconds."""
    hop = sample_rate // 100
    n = len(wave) // hop
    if n == 0:
        return None
    rms = np.sqrt(np.mean(wave[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    loud = np.flatnonzero(db > db.max() - floor_db)
    return float(loud[0] * hop / sample_rate), float((loud[-1] + 1) * hop / sample_rate)


def _trim_to_speech(spans: list[tuple[float, float, float] | None], wave: np.ndarray
                    ) -> list[tuple[float, float, float] | None]:
    # Whisper's DTW path starts at frame 0 and ends at the last frame, so leading and
    # trailing silence land inside the first and last words. Clip them to where the signal
    # is: a measured bound, applied only when it falls inside that word.
    bounds = speech_bounds(wave)
    placed = [k for k, s in enumerate(spans) if s is not None and s[1] > s[0]]
    if bounds is None or not placed:
        return spans
    spans = list(spans)
    first, last = placed[0], placed[-1]
    start, end, conf = spans[first]
    if start < bounds[0] < end:
        spans[first] = (bounds[0], end, conf)
    start, end, conf = spans[last]
    if start < bounds[1] < end:
        spans[last] = (start, bounds[1], conf)
    return spans


def _whisper_spans(result: Any, per_word: list[list[int]], tokens_per_second: float
                   ) -> list[tuple[float, float, float] | None]:
    pairs = np.asarray(result.alignments, dtype=np.int64).reshape(-1, 2)
    probs = np.asarray(result.text_token_probs, dtype=np.float64)
    # A jump is where the DTW path moves on to the next token: that token's first frame.
    jumps = np.pad(np.diff(pairs[:, 0]), (1, 0), constant_values=1).astype(bool)
    jump_times = pairs[jumps, 1] / tokens_per_second
    bounds = np.pad(np.cumsum([len(t) for t in per_word]), (1, 0))
    if len(jump_times) < bounds[-1] + 1:  # path too short to place every token + end
        return [None] * len(per_word)
    return [(float(jump_times[a]), float(jump_times[b]), float(np.mean(probs[a:b])))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# ------------------------------------------------------------------ CTC (alternative)
class CtcAligner:
    """CTC forced alignment with `torchaudio.functional.forced_align`.

    `name`: a torchaudio pipeline bundle (`MMS_FA`, `WAV2VEC2_ASR_BASE_960H`, ...) or a Hugging
    Face wav2vec2-style CTC model (hub id or saved folder with its processor). Characters the
    model's vocabulary lacks are tried without accents (á→a, ñ→n), else skipped; a word with no
    usable character stays unaligned.
    """

    def __init__(self, name: str, device: str = "cpu") -> None:
        import torch
        import torchaudio.pipelines as pipelines

        self.device = torch.device(device)
        self.delimiter: str | None = None
        self._processor = None
        bundle = getattr(pipelines, name, None)
        if bundle is not None and hasattr(bundle, "get_model"):
            if hasattr(bundle, "get_dict"):  # forced-alignment bundle (MMS_FA)
                self.model = bundle.get_model(with_star=False)
                self.vocab = dict(bundle.get_dict(star=None))
            else:  # ASR bundle: labels by index, '-' blank, '|' between words
                self.model = bundle.get_model()
                self.vocab = {label: i for i, label in enumerate(bundle.get_labels())}
                self.delimiter = "|" if "|" in self.vocab else None
            self.blank = self.vocab.get("-", 0)
            self.sample_rate = int(bundle.sample_rate)
        else:
            from transformers import AutoModelForCTC, AutoProcessor

            self._processor = AutoProcessor.from_pretrained(name)
            self.model = AutoModelForCTC.from_pretrained(name)
            tok = self._processor.tokenizer
            self.vocab = dict(tok.get_vocab())
            self.blank = int(tok.pad_token_id)
            delim = getattr(tok, "word_delimiter_token", None)
            self.delimiter = delim if delim in self.vocab else None
            self.sample_rate = int(self._processor.feature_extractor.sampling_rate)
        self.model.to(self.device).eval()

    def _char_ids(self, word: str) -> list[int]:
        ids = []
        for ch in word.lower():
            base = unicodedata.normalize("NFD", ch)[0]
            for cand in (ch, ch.upper(), base, base.upper()):
                if cand in self.vocab and self.vocab[cand] != self.blank:
                    ids.append(self.vocab[cand])
                    break
        return ids

    def _emission(self, wave: np.ndarray) -> Any:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None]
        with torch.inference_mode():
            if self._processor is None:
                logits, _ = self.model(x.to(self.device))
            else:
                inputs = self._processor.feature_extractor(
                    wave, sampling_rate=self.sample_rate, return_tensors="pt")
                logits = self.model(inputs.input_values.to(self.device)).logits
            return torch.log_softmax(logits.float(), dim=-1).cpu()

    def align(self, wave: np.ndarray, sample_rate: int, text: str) -> list[Word]:
        import torch
        import torchaudio.functional as AF

        names = [w for w, _a, _b in text_words(text)]
        wave = resample(np.asarray(wave, dtype=np.float32), sample_rate, self.sample_rate)
        ids = [self._char_ids(w) for w in names]
        targets, owner = [], []  # owner: word index of each target token, -1 for delimiters
        for k, word_ids in enumerate(ids):
            if not word_ids:
                continue
            if targets and self.delimiter is not None:
                targets.append(self.vocab[self.delimiter])
                owner.append(-1)
            targets.extend(word_ids)
            owner.extend([k] * len(word_ids))
        if not targets or not len(wave):
            return _unaligned(names)
        emission = self._emission(wave)
        try:
            labels, scores = AF.forced_align(emission, torch.tensor([targets], dtype=torch.int32),
                                             blank=self.blank)
        except RuntimeError:  # audio too short for the text: CTC has no path
            return _unaligned(names)
        token_spans = AF.merge_tokens(labels[0], scores[0].exp(), blank=self.blank)
        if len(token_spans) != len(targets):
            return _unaligned(names)
        seconds_per_frame = len(wave) / self.sample_rate / emission.shape[1]
        spans: list[tuple[float, float, float] | None] = [None] * len(names)
        for k in range(len(names)):
            mine = [s for s, o in zip(token_spans, owner, strict=True) if o == k]
            if mine:
                spans[k] = (mine[0].start * seconds_per_frame, mine[-1].end * seconds_per_frame,
                            float(np.mean([s.score for s in mine])))
        return place_words(names, spans, len(wave) / self.sample_rate)
