"""Mel-cepstral distortion between a synthesised and a reference waveform, aligned by DTW.

In: two mono float waveforms and their sample rates. Out: MCD in dB-like units (one method,
stated in `METHOD`: natural-log 80-bin mel, DCT-II, c1..cN, Euclidean DTW), plus the log-mel
and cepstrum helpers the report reuses. Pure numpy apart from resampling.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from habla.audio import resample
from habla.dtw import dtw_path

SAMPLE_RATE = 24000
N_FFT = 1024
HOP_LENGTH = 256
N_MELS = 80
LOG_FLOOR = 1e-5  # keeps digital silence finite in the log
K_MCD = 10.0 / math.log(10.0)


def method(order: int = 24) -> dict:
    """The parameters of this MCD, written next to every number it produces."""
    return {
        "name": "log-mel cepstral distortion with DTW",
        "sample_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "win_length": N_FFT,
        "hop_length": HOP_LENGTH,
        "window": "hann (periodic), centred frames, reflect padding",
        "n_mels": N_MELS,
        "mel_scale": "htk, 0 Hz to Nyquist, unnormalised triangles",
        "spectrum": "magnitude (power 1)",
        "log": f"natural log, floor {LOG_FLOOR}",
        "cepstrum": f"DCT-II (orthonormal) of log-mel, c1..c{order} (c0, the level, dropped)",
        "alignment": "DTW, steps (1,0) (0,1) (1,1), Euclidean frame distance",
        "formula": "(10/ln10) * sqrt(2 * sum_d (x_d - y_d)^2), averaged over the DTW path",
        "note": "scale differs from SPTK mel-cepstrum MCD (ESPnet); compare within one method",
    }


@lru_cache(maxsize=4)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_fft//2+1, n_mels) HTK-mel triangles, unnormalised."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)),
                                  n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as an (n, n) matrix: coefficients = frames @ M."""
    k = np.arange(n)[None, :]
    i = np.arange(n)[:, None]
    m = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    m[:, 0] /= math.sqrt(2.0)
    return m


def log_mel(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 80) natural-log magnitude mel spectrogram at 24 kHz."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        x = resample(x, sample_rate, SAMPLE_RATE)
    if x.size == 0:
        raise ValueError("log_mel: empty waveform")
    pad = N_FFT // 2
    mode = "reflect" if x.size > pad else "constant"  # reflect needs more samples than pad
    x = np.pad(x.astype(np.float64), pad, mode=mode)
    n_frames = 1 + (x.size - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP_LENGTH][:n_frames]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, axis=1))
    mel = mag @ _mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)
    return np.log(np.maximum(mel, LOG_FLOOR))


def cepstrum(logmel: np.ndarray, order: int = 24) -> np.ndarray:
    """(frames, order) cepstral coefficients c1..c_order of a log-mel spectrogram."""
    if not 1 <= order < logmel.shape[1]:
        raise ValueError(f"cepstrum: order {order} must be in 1..{logmel.shape[1] - 1}")
    return (logmel @ _dct_matrix(logmel.shape[1]))[:, 1 : order + 1]


def mcd_cepstra(x: np.ndarray, y: np.ndarray) -> float:
    """MCD between two (frames, order) cepstra, DTW-aligned, averaged over the path."""
    # |x|^2 + |y|^2 - 2xy keeps memory at N*M, not N*M*order (20 s clips: 1900^2 frames)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    dist = np.sqrt(np.maximum(sq, 0.0))
    pi, pj = dtw_path(dist)[:2]
    return float(K_MCD * math.sqrt(2.0) * dist[pi, pj].mean())


def mcd(synth: np.ndarray, synth_sr: int, ref: np.ndarray, ref_sr: int, order: int = 24) -> float:
    """MCD of a synthesised waveform against a reference recording (see `method()`)."""
    return mcd_cepstra(cepstrum(log_mel(synth, synth_sr), order),
                       cepstrum(log_mel(ref, ref_sr), order))
