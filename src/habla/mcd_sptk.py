"""Mel-cepstral distortion on the scale TTS papers report: SPTK mel-cepstra, DTW, dB.

In: a synthesised and a reference waveform with their sample rates. Out: MCD in dB (`mcd`)
and the mel-cepstra behind it (`mel_cepstrum`). The analysis is SPTK's `mcep` (unbiased
estimation of log spectrum: Newton-Raphson on the all-pass-warped cepstrum), as pysptk runs it
in ESPnet's `evaluate_mcd.py`, rewritten in numpy and vectorised over frames. habla's own
log-mel MCD (`habla.mcd`) is a different, larger scale: compare numbers only within a method.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from habla.audio import resample
from habla.mcd import mcd_cepstra

SAMPLE_RATE = 24000
N_FFT = 1024  # 42.7 ms at 24 kHz
HOP_LENGTH = 256  # 10.7 ms
ORDER = 24
# All-pass constants per sample rate, as in ESPnet's evaluate_mcd.py (SPTK's usual choices)
ALPHA = {16000: 0.42, 22050: 0.45, 24000: 0.46, 44100: 0.53, 48000: 0.55}
INT16_SCALE = 32768.0  # ESPnet reads wavs as int16: same numbers, same periodogram floor
FLOOR = 1e-6  # added to the periodogram (SPTK etype 1)
MIN_ITER, MAX_ITER, THRESHOLD = 2, 30, 1e-3  # pysptk.mcep defaults


def method(order: int = ORDER, include_c0: bool = False) -> dict:
    """The parameters of this MCD, written next to every number it produces."""
    return {
        "name": "mel-cepstral distortion (SPTK mcep) with DTW",
        "sample_rate": SAMPLE_RATE,
        "frames": f"{N_FFT}-sample Hamming window (SPTK, power-normalised), hop {HOP_LENGTH}, "
                  "no padding; waveform scaled to int16 range",
        "analysis": f"SPTK mcep: order {order}, alpha {ALPHA[SAMPLE_RATE]}, periodogram floor "
                    f"{FLOOR}, Newton-Raphson {MIN_ITER}-{MAX_ITER} iterations, threshold "
                    f"{THRESHOLD}",
        "coefficients": f"c0..c{order}" if include_c0 else f"c1..c{order} (c0, the level, "
                                                           "dropped)",
        "alignment": "DTW (exact), steps (1,0) (0,1) (1,1), Euclidean frame distance",
        "formula": "(10/ln10) * sqrt(2 * sum_d (x_d - y_d)^2), averaged over the DTW path",
        "reference": "pysptk.mcep as in ESPnet egs2 evaluate_mcd.py, which keeps c0, uses "
                     "order 34 at 24 kHz and fastdtw",
    }


def _warp(c: np.ndarray, m2: int, alpha: float, transposed: bool) -> np.ndarray:
    """SPTK's freqt (or, `transposed`, frqtr) recursion on a batch of rows: (n, m1+1) ->
    (n, m2+1). Both are linear in c; callers cache them as matrices."""
    n, m1 = c.shape[0], c.shape[1] - 1
    g = np.zeros((n, m2 + 1))
    beta = 1.0 - alpha * alpha
    for i in range(m1, -1, -1):
        d = g.copy()
        if transposed:
            g[:, 0] = c[:, i]
            start = 1
        else:
            g[:, 0] = c[:, i] + alpha * d[:, 0]
            if m2 >= 1:
                g[:, 1] = beta * d[:, 0] + alpha * d[:, 1]
            start = 2
        for j in range(start, m2 + 1):
            g[:, j] = d[:, j - 1] + alpha * (d[:, j] - g[:, j - 1])
    return g


@lru_cache(maxsize=16)
def freqt_matrix(m1: int, m2: int, alpha: float, transposed: bool = False) -> np.ndarray:
    """(m1+1, m2+1) matrix F with freqt(c) = c @ F (frqtr with `transposed`)."""
    return _warp(np.eye(m1 + 1), m2, alpha, transposed)


@lru_cache(maxsize=4)
def hamming(n: int) -> np.ndarray:
    """SPTK's Hamming window (symmetric), normalised to unit power."""
    w = 0.54 - 0.46 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))
    return w / math.sqrt(float((w * w).sum()))


def frames(wave: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """(frames, n_fft) windowed frames, not centred (a clip shorter than one frame is
    zero-padded to one)."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1) * INT16_SCALE
    if x.size == 0:
        raise ValueError("mel_cepstrum: empty waveform")
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = (x.size - n_fft) // hop_length + 1
    return np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length][:count] * hamming(n_fft)


def mcep(windowed: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """(frames, order+1) mel-cepstra c0..c_order of windowed frames: SPTK's mcep, per frame
    the same iterations and stopping rule, run for all frames at once."""
    n_fft = windowed.shape[1]
    half = n_fft // 2
    m, m2 = order, 2 * order
    spec = np.fft.rfft(windowed, axis=1)
    periodogram = spec.real ** 2 + spec.imag ** 2 + FLOOR  # bins 0..half of a symmetric whole
    c = np.fft.irfft(np.log(periodogram), n=n_fft, axis=1)[:, :half + 1]
    c[:, 0] /= 2.0
    c[:, half] /= 2.0
    mc = c @ freqt_matrix(half, m, alpha)
    s = c[:, 0].copy()
    to_linear = freqt_matrix(m, half, -alpha)
    to_warped = freqt_matrix(half, m2, alpha, transposed=True)
    alpha_powers = (-alpha) ** np.arange(m + 1)
    lag = np.abs(np.arange(m + 1)[:, None] - np.arange(m + 1)[None, :])
    hankel = np.arange(m + 1)[:, None] + np.arange(m + 1)[None, :]
    active = np.arange(len(mc))
    for it in range(1, MAX_ITER + 1):
        if active.size == 0:
            break
        log_model = np.fft.rfft(mc[active] @ to_linear, n=n_fft, axis=1).real
        ratio = periodogram[active] / np.exp(2.0 * log_model)
        r = np.fft.irfft(ratio, n=n_fft, axis=1)[:, :half + 1] @ to_warped  # (k, 2m+1)
        t = r[:, 0]
        if it >= MIN_ITER:
            done = np.abs((t - s[active]) / t) < THRESHOLD
            s[active] = t
            active, r = active[~done], r[~done]
            if active.size == 0:
                break
        b = r[:, :m + 1] - alpha_powers
        h = r.copy()
        h[:, 0::2] -= r[:, :1]
        toeplitz = r[:, :m + 1].copy()
        toeplitz[:, 2::2] += r[:, :1]
        toeplitz[:, 0] *= 2.0
        normal = toeplitz[:, lag] + h[:, hankel]  # (T + H) d = b, as SPTK's theq solves it
        mc[active] += np.linalg.solve(normal, b[:, :, None])[:, :, 0]
    return mc


def mel_cepstrum(wave: np.ndarray, sample_rate: int, order: int = ORDER) -> np.ndarray:
    """(frames, order+1) SPTK mel-cepstra c0..c_order of a waveform, analysed at 24 kHz."""
    if not 1 <= order < N_FFT // 2:
        raise ValueError(f"mel_cepstrum: order {order} must be in 1..{N_FFT // 2 - 1}")
    x = resample(np.asarray(wave, dtype=np.float32).reshape(-1), sample_rate, SAMPLE_RATE)
    return mcep(frames(x), order, ALPHA[SAMPLE_RATE])


def mcd(synth: np.ndarray, synth_sr: int, ref: np.ndarray, ref_sr: int, order: int = ORDER,
        include_c0: bool = False) -> float:
    """MCD in dB of a synthesised waveform against a reference recording (see `method()`)."""
    first = 0 if include_c0 else 1
    return mcd_cepstra(mel_cepstrum(synth, synth_sr, order)[:, first:],
                       mel_cepstrum(ref, ref_sr, order)[:, first:])
