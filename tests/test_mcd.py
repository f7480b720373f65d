"""MCD: checked against an independent implementation (torchaudio mel, explicit DCT sums,
a naive O(N*M) Python DTW) and against the properties the method promises."""

import math

import numpy as np
import pytest
import torch
import torchaudio

from habla import mcd
from habla.dtw import dtw_path

SR = 24000


def _voice(f0: float, seconds: float, formants: tuple[float, ...], seed: int = 0,
           sr: int = SR, rate: float = 1.0, max_hz: float = 12000.0) -> np.ndarray:
    """A speech-like test signal: gliding harmonics shaped by formants, with syllable AM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.3 * t * rate))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = np.zeros_like(t)
    for h in range(1, 30):
        fh = h * f
        gain = sum(np.exp(-((fh - fm) / 150.0) ** 2) for fm in formants) + 0.02
        x += gain * np.sin(h * phase) * (fh < min(sr / 2, max_hz))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t * rate) ** 2
    if max_hz >= sr / 2:
        x += 0.003 * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _reference_cepstrum(wave: np.ndarray, order: int) -> np.ndarray:
    spec = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=1024, hop_length=256, n_mels=80, power=1.0, mel_scale="htk",
        norm=None, center=True, pad_mode="reflect").double()(torch.from_numpy(wave).double())
    logmel = torch.log(torch.clamp(spec, min=1e-5)).numpy().T  # (frames, 80)
    n = logmel.shape[1]
    out = np.zeros((logmel.shape[0], order))
    for k in range(1, order + 1):  # DCT-II, orthonormal, written out term by term
        basis = [math.cos(math.pi * k * (2 * i + 1) / (2 * n)) for i in range(n)]
        out[:, k - 1] = math.sqrt(2.0 / n) * (logmel @ np.array(basis))
    return out


def _reference_mcd(a: np.ndarray, b: np.ndarray) -> float:
    n, m = len(a), len(b)
    d = [[math.dist(a[i], b[j]) for j in range(m)] for i in range(n)]
    acc = [[math.inf] * (m + 1) for _ in range(n + 1)]
    steps = [[0] * (m + 1) for _ in range(n + 1)]
    acc[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = [(acc[i - 1][j - 1], steps[i - 1][j - 1]), (acc[i - 1][j], steps[i - 1][j]),
                       (acc[i][j - 1], steps[i][j - 1])]
            best, length = min(options, key=lambda o: (o[0], o[1]))
            acc[i][j] = best + d[i - 1][j - 1]
            steps[i][j] = length + 1
    return 10 / math.log(10) * math.sqrt(2) * acc[n][m] / steps[n][m]


PAIRS = [
    (_voice(120, 0.6, (700, 1200)), _voice(125, 0.7, (650, 1100), seed=1)),
    (_voice(220, 0.5, (300, 2300)), _voice(110, 0.45, (700, 1200), seed=2)),
    (_voice(180, 0.8, (500, 1500)), _voice(180, 0.6, (500, 1500), seed=3, rate=1.3)),
]


def test_log_mel_and_cepstrum_match_torchaudio_and_an_explicit_dct():
    wave = PAIRS[0][0]
    ours = mcd.cepstrum(mcd.log_mel(wave, SR), 24)
    # torchaudio builds its filterbank in float32: agreement to ~1e-5, not to double precision
    np.testing.assert_allclose(ours, _reference_cepstrum(wave, 24), atol=1e-4)


@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_mcd_matches_a_naive_python_dtw_on_independent_features(pair):
    a, b = PAIRS[pair]
    expected = _reference_mcd(_reference_cepstrum(a, 24), _reference_cepstrum(b, 24))
    assert mcd.mcd(a, SR, b, SR) == pytest.approx(expected, rel=1e-4)


def test_dtw_total_cost_is_the_minimum_over_monotonic_paths():
    cost = np.array([[1.0, 5.0, 9.0], [5.0, 1.0, 9.0], [9.0, 5.0, 1.0], [9.0, 9.0, 1.0]])
    pi, pj, total = dtw_path(cost)
    assert total == 4.0
    assert list(zip(pi.tolist(), pj.tolist(), strict=True)) == [(0, 0), (1, 1), (2, 2), (3, 2)]


def test_mcd_of_a_signal_with_itself_is_zero():
    a = PAIRS[1][0]
    assert mcd.mcd(a, SR, a, SR) == pytest.approx(0.0, abs=1e-4)


def test_louder_copy_scores_the_same_because_c0_is_dropped():
    a, b = PAIRS[0]
    assert mcd.mcd(3.0 * a, SR, a, SR) == pytest.approx(0.0, abs=1e-3)
    assert mcd.mcd(0.5 * a, SR, b, SR) == pytest.approx(mcd.mcd(a, SR, b, SR), rel=1e-3)


def test_dtw_forgives_tempo_but_not_timbre():
    a = _voice(150, 0.6, (700, 1200))
    slower = _voice(150, 0.9, (700, 1200), rate=0.6667)
    other_vowel = _voice(150, 0.6, (300, 2300))
    assert mcd.mcd(slower, SR, a, SR) < 0.5 * mcd.mcd(other_vowel, SR, a, SR)


def test_other_sample_rates_are_resampled_to_24k_first():
    a24 = _voice(150, 0.6, (700, 1200), max_hz=10000)
    a48 = torchaudio.functional.resample(torch.from_numpy(a24), SR, 48000).numpy()
    b24 = _voice(150, 0.6, (300, 2300), max_hz=10000)
    assert mcd.mcd(a48, 48000, a24, SR) < 0.05 * mcd.mcd(b24, SR, a24, SR)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="empty waveform"):
        mcd.log_mel(np.zeros(0, np.float32), SR)
    with pytest.raises(ValueError, match="order 80"):
        mcd.cepstrum(np.zeros((3, 80)), 80)


def test_method_states_the_parameters_written_with_the_numbers():
    m = mcd.method(24)
    assert m["n_mels"] == 80 and m["hop_length"] == 256 and "c1..c24" in m["cepstrum"]
