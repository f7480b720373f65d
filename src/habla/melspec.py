"""Power mel spectrograms computed the way librosa computes them, in numpy.

In: a mono float waveform and the STFT / mel settings. Out: a (frames, n_mels) power mel
spectrogram equal (to float rounding) to `librosa.feature.melspectrogram` with its defaults
(periodic Hann window, centred frames with zero padding, power 2, Slaney mel scale and area
normalisation). Pretrained models fed by librosa features (resemblyzer's voice encoder, the
DNSMOS P.808 model) need exactly these numbers; librosa itself would bring numba and scipy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    f = np.asarray(freqs, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    m = np.asarray(mels, dtype=np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log_part, _F_SP * m)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_fft//2 + 1, n_mels) Slaney-normalised triangles from 0 Hz to Nyquist, float32.

    Bin frequencies are k * sr / n_fft (so an odd n_fft stops short of Nyquist), as in
    librosa; torchaudio's `melscale_fbanks` spaces them to exactly Nyquist instead.
    """
    fft_freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    # librosa stores the bank in float32; the product with float32 power follows suit.
    return np.ascontiguousarray(weights.T.astype(np.float32))


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def power_spectrogram(wave: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """(frames, n_fft//2 + 1) |STFT|^2 with centred, zero-padded, periodic-Hann frames."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    pad = n_fft // 2
    x = np.pad(x, (pad, pad))
    if x.size < n_fft:
        raise ValueError(f"power_spectrogram: {wave.size} samples is too short for n_fft {n_fft}")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length]
    spec = np.fft.rfft(frames * _hann(n_fft), axis=1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


def melspectrogram(wave: np.ndarray, sample_rate: int, n_fft: int, hop_length: int,
                   n_mels: int) -> np.ndarray:
    """(frames, n_mels) power mel spectrogram, librosa's numbers (see the module doc)."""
    return power_spectrogram(wave, n_fft, hop_length) @ mel_filterbank(sample_rate, n_fft,
                                                                       n_mels)


def power_to_db(spec: np.ndarray, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    """10 log10(S / max S), floored `top_db` below the peak (librosa's `ref=np.max`)."""
    s = np.asarray(spec)
    log_spec = 10.0 * np.log10(np.maximum(amin, s))
    log_spec -= 10.0 * np.log10(np.maximum(amin, s.max()))
    return np.maximum(log_spec, log_spec.max() - top_db)
