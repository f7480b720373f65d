"""Acoustic training targets for one clip: log-mel frames, per-token durations, log-F0, energy.

In: a mono waveform at the spec's sample rate, each token's word (or None) and the word times.
Out: a (frames, n_mels) natural-log mel, integer durations per token that sum exactly to the
frame count, and per-token log-F0 / log-energy (raw; families normalise with stored stats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class FeatureSpec:
    """Log-mel settings a family trains on (its vocoder expects the same)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    f_min: float = 0.0
    f_max: float | None = None



DEFAULT_SPEC = FeatureSpec(sample_rate=24000, n_fft=1024, hop_length=256, win_length=1024,
                           n_mels=80, f_min=0.0, f_max=None)
LOG_CLAMP = 1e-5  # floor before the log: silence maps to log(1e-5) = -11.5
F0_RANGE = (60.0, 500.0)  # Hz searched by the autocorrelation pitch tracker
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak above which a frame is voiced
SILENCE_DB = 35.0  # frames this far below the clip's loudest frame count as silence

_mel_cache: dict[FeatureSpec, torchaudio.transforms.MelSpectrogram] = {}


def spec_to_dict(spec: FeatureSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_from_dict(data: dict[str, Any]) -> FeatureSpec:
    fields = FeatureSpec.__dataclass_fields__
    return FeatureSpec(**{k: v for k, v in data.items() if k in fields})


def _mel_transform(spec: FeatureSpec) -> torchaudio.transforms.MelSpectrogram:
    if spec not in _mel_cache:
        # power=1: magnitudes, which is what Griffin-Lim (habla.vocoder) inverts
        _mel_cache[spec] = torchaudio.transforms.MelSpectrogram(
            sample_rate=spec.sample_rate, n_fft=spec.n_fft, win_length=spec.win_length,
            hop_length=spec.hop_length, f_min=spec.f_min, f_max=spec.f_max, n_mels=spec.n_mels,
            power=1.0, center=True, norm=None, mel_scale="htk")
    return _mel_cache[spec]


def log_mel(wave: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> torch.Tensor:
    """(frames, n_mels) natural-log mel magnitudes; frames = 1 + len(wave) // hop."""
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with torch.no_grad():
        mel = _mel_transform(spec)(x)
    return torch.log(torch.clamp(mel, min=LOG_CLAMP)).T.contiguous()


def _frames(wave: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Centre-padded analysis frames aligned with `log_mel`'s frames."""
    pad = spec.n_fft // 2
    mode = "reflect" if len(wave) > pad else "constant"  # as torch.stft(center=True) pads
    x = np.pad(wave.astype(np.float32), (pad, pad), mode=mode)
    n = 1 + len(wave) // spec.hop_length
    idx = np.arange(spec.win_length)[None, :] + spec.hop_length * np.arange(n)[:, None]
    idx = np.minimum(idx, len(x) - 1)
    return x[idx]


def frame_log_energy(wave: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> np.ndarray:
    """Natural log of each frame's RMS (same frames as `log_mel`)."""
    frames = _frames(wave, spec)
    return np.log(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-5)


def frame_f0(wave: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> np.ndarray:
    """F0 in Hz per frame by normalised autocorrelation; 0 where unvoiced or silent."""
    frames = _frames(wave, spec).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    frames *= np.hanning(frames.shape[1])[None, :]
    n = frames.shape[1]
    spectrum = np.fft.rfft(frames, 2 * n, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :n]
    # divide by the window's own autocorrelation so long lags are not penalised
    win_acf = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(n), 2 * n)) ** 2)[:n]
    acf = acf / np.maximum(win_acf[None, :], 1e-9)
    energy = acf[:, 0]
    lo = int(spec.sample_rate / F0_RANGE[1])
    hi = min(int(spec.sample_rate / F0_RANGE[0]), n - 2)
    band = acf[:, lo - 1:hi + 1]
    inner = band[:, 1:-1]
    local_max = (inner >= band[:, :-2]) & (inner >= band[:, 2:])
    # the shortest lag whose peak is nearly as high as the best one: multiples of the
    # period peak almost as high, and picking them halves F0 (octave errors)
    near_best = inner >= 0.85 * inner.max(axis=1, keepdims=True)
    candidates = local_max & near_best
    lag = lo + np.where(candidates.any(axis=1), np.argmax(candidates, axis=1),
                        np.argmax(inner, axis=1))
    peak = acf[np.arange(len(lag)), lag] / np.maximum(energy, 1e-12)
    # parabolic interpolation around the peak for sub-sample lag
    a, b, c = (acf[np.arange(len(lag)), lag + d] for d in (-1, 0, 1))
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    f0 = spec.sample_rate / (lag + np.clip(shift, -0.5, 0.5))
    log_e = frame_log_energy(wave, spec)
    loud = log_e > log_e.max() - SILENCE_DB / 20 * math.log(10)
    voiced = (peak > VOICING_THRESHOLD) & loud
    return np.where(voiced, f0, 0.0)


# ---------------------------------------------------------------- durations
def _get(word: Any, key: str) -> Any:
    return word.get(key) if isinstance(word, dict) else getattr(word, key, None)


def _spread(frames: int, count: int) -> list[int]:
    base, extra = divmod(max(frames, 0), count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _split_word(start: int, end: int, tokens: range, word: Any,
                letter_of: Sequence[int | None] | None, to_frame: Any) -> list[int]:
    """Frames of each of a word's tokens: at its letters' start times when the word has them
    (`Word.letters`) and `letter_of` says where each token starts, else spread evenly."""
    letters = _get(word, "letters")
    count = len(tokens)
    if not letters or letter_of is None or count < 2:
        return _spread(end - start, count)
    bounds = [start]
    for t in list(tokens)[1:]:
        k = letter_of[t]
        if k is None or not 0 <= k < len(letters):
            return _spread(end - start, count)
        bounds.append(min(max(to_frame(letters[k]), bounds[-1]), end))
    bounds.append(end)
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def token_durations(owners: Sequence[int | None], words: Sequence[Any], n_frames: int,
                    spec: FeatureSpec = DEFAULT_SPEC,
                    log_energy: np.ndarray | None = None,
                    letter_of: Sequence[int | None] | None = None) -> np.ndarray:
    """Frames per token from word times; the result sums exactly to `n_frames`.

    `owners[i]` is the index into `words` of token i's word, or None for spaces and
    punctuation (`habla.tokenizer.token_words` gives it). A word's frames go to its tokens at
    its letters' start times when it has them (`Word.letters`, with `letter_of[i]`, token i's
    first letter, from `habla.tokenizer.token_letters`), else evenly; pauses between words go
    to the tokens between them. A word ends at its end time (or the next word's start), minus
    trailing silent frames when `log_energy` is given: those go to the following gap tokens.
    Tokens of words without a start time count as gap tokens.
    """
    if n_frames <= 0 or not len(owners):
        raise ValueError(f"token_durations: need tokens and frames (got {len(owners)} tokens, "
                         f"{n_frames} frames)")

    def to_frame(sec: float) -> int:
        return int(min(max(round(sec * spec.sample_rate / spec.hop_length), 0), n_frames))

    # [first token, last token + 1, start frame, end frame or None, word] of each timed word
    anchors: list[list[Any]] = []
    for index, word in enumerate(words):
        tokens = [i for i, o in enumerate(owners) if o == index]
        if (not tokens or _get(word, "start") is None or _get(word, "aligned") is False
                or (anchors and tokens[0] < anchors[-1][1])):
            continue
        end = _get(word, "end")
        anchors.append([tokens[0], tokens[-1] + 1, to_frame(_get(word, "start")),
                        to_frame(end) if end is not None else None, word])
    durations = np.zeros(len(owners), dtype=np.int64)
    if not anchors:
        durations[:] = _spread(n_frames, len(owners))
        return durations
    silent = None
    if log_energy is not None:
        silent = log_energy < log_energy.max() - SILENCE_DB / 20 * math.log(10)
    for i, a in enumerate(anchors):
        if i and a[2] < anchors[i - 1][2]:
            a[2] = anchors[i - 1][2]  # keep word starts monotonic
    for i, a in enumerate(anchors):
        nxt = anchors[i + 1][2] if i + 1 < len(anchors) else n_frames
        # an end time is an upper bound: synthetic truth and some aligners end a word where
        # the next begins, so trailing silence is trimmed either way (it is the pause's)
        end = min(a[3], nxt) if a[3] is not None else nxt
        if silent is not None:
            # frames just before the next word hear it through the analysis window
            leak = spec.n_fft // (2 * spec.hop_length) + 1
            j = end
            while end - j < leak and j - 1 > a[2] and not silent[j - 1]:
                j -= 1
            if j - 1 > a[2] and silent[j - 1]:
                while j - a[2] > a[1] - a[0] and silent[j - 1]:
                    j -= 1
                end = j
        a[3] = max(end, a[2])
    # lay out: gap before word 0, word 0, gap, word 1, ..., trailing gap
    cursor_tok, cursor_frame = 0, 0
    for first, last, start, end, word in anchors:
        if first > cursor_tok:
            durations[cursor_tok:first] = _spread(start - cursor_frame, first - cursor_tok)
        else:
            start = cursor_frame  # no token to carry the pause: the word takes it
        durations[first:last] = _split_word(start, end, range(first, last), word, letter_of,
                                            to_frame)
        cursor_tok, cursor_frame = last, end
    if cursor_tok < len(owners):
        durations[cursor_tok:] = _spread(n_frames - cursor_frame, len(owners) - cursor_tok)
    else:
        durations[-1] += n_frames - cursor_frame
    assert durations.sum() == n_frames, (durations.sum(), n_frames)
    return durations


def token_means(values: np.ndarray, durations: np.ndarray,
                valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of per-frame `values` over each token's frames (NaN where none are valid)."""
    out = np.full(len(durations), np.nan)
    edges = np.concatenate([[0], np.cumsum(durations)])
    for i in range(len(durations)):
        seg = values[edges[i]:edges[i + 1]]
        if valid is not None:
            seg = seg[valid[edges[i]:edges[i + 1]]]
        if len(seg):
            out[i] = float(np.mean(seg))
    return out


def clip_targets(wave: np.ndarray, owners: Sequence[int | None], words: Sequence[Any],
                 spec: FeatureSpec = DEFAULT_SPEC,
                 letter_of: Sequence[int | None] | None = None) -> dict[str, Any]:
    """Everything a duration-based TTS model trains on for one clip (raw, unnormalised).
    `letter_of`: each token's first letter in its word (`token_durations`).

    Returns mel (frames, n_mels) tensor, durations (tokens,), log_f0 and log_energy per token
    (NaN log_f0 for tokens without voiced frames), and frame-level log-F0/energy for stats.
    """
    mel = log_mel(wave, spec)
    energy = frame_log_energy(wave, spec)[: mel.shape[0]]
    f0 = frame_f0(wave, spec)[: mel.shape[0]]
    durations = token_durations(owners, words, mel.shape[0], spec, energy, letter_of)
    voiced = f0 > 0
    log_f0 = np.log(np.where(voiced, f0, 1.0))
    return {
        "mel": mel,
        "durations": durations,
        "log_f0": token_means(log_f0, durations, voiced),
        "log_energy": token_means(energy, durations),
        "frame_log_f0": log_f0[voiced],
        "frame_log_energy": energy,
    }


def prosody_stats(clips: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean/std of voiced log-F0 and of log-energy over all frames of `clips`."""
    f0 = np.concatenate([c["frame_log_f0"] for c in clips] or [np.zeros(0)])
    en = np.concatenate([c["frame_log_energy"] for c in clips] or [np.zeros(0)])
    if len(f0) < 2 or len(en) < 2:
        raise ValueError("prosody_stats: too few voiced frames to normalise pitch "
                         f"({len(f0)} voiced frames in {len(clips)} clips)")
    return {"log_f0_mean": float(f0.mean()), "log_f0_std": float(f0.std() + 1e-5),
            "log_energy_mean": float(en.mean()), "log_energy_std": float(en.std() + 1e-5)}


def normalise(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Standardise; NaN (no voiced frame) becomes 0, the speaker-average value."""
    out = (values - mean) / std
    return np.nan_to_num(out, nan=0.0).astype(np.float32)
