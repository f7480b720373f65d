"""SPTK mel-cepstral MCD: the analysis checked against its own optimality condition and known
envelopes (computed on the warped frequency axis, independently of freqt), and the MCD against
the properties it promises. Agreement with pysptk itself: benchmarks/eval_measures_agreement.py.
"""

import math

import numpy as np
import pytest

from habla import mcd_sptk

SR = 24000
ALPHA = 0.46


def _voice(seconds: float, f0: float = 140.0, formant: float = 700.0, seed: int = 0
           ) -> np.ndarray:
    """Harmonics under one formant, with a little noise so no frame is digital silence."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 2 * t))) / SR
    x = sum(np.exp(-((h * f0 - formant) / 500) ** 2) * np.sin(h * phase)
            for h in range(1, int(11000 / f0)))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _warped(n: int) -> np.ndarray:
    w = 2 * np.pi * np.arange(n) / n
    return w + 2 * np.arctan(ALPHA * np.sin(w) / (1 - ALPHA * np.cos(w)))


def test_mel_cepstrum_is_a_stationary_point_of_the_uels_criterion():
    # d/dc_m of mean[P/|H|^2 - log(P/|H|^2)] is -2 mean[(P/|H|^2 - 1) cos(m w~)]: zero at
    # SPTK's solution. |H| is evaluated directly on the warped axis, not through freqt.
    frame = mcd_sptk.frames(_voice(0.1))[2]
    mc = mcd_sptk.mcep(frame[None], 24, ALPHA)[0]
    basis = np.cos(np.outer(_warped(len(frame)), np.arange(25)))
    power = np.abs(np.fft.fft(frame)) ** 2 + mcd_sptk.FLOOR
    ratio = power / np.exp(2 * basis @ mc)
    gradient = ((ratio - 1)[:, None] * basis).mean(axis=0)
    assert np.abs(gradient).max() < 1e-3
    # the starting point (the warped plain cepstrum) is far from it: the iterations matter
    initial = np.fft.irfft(np.log(power[:513]), n=1024)[:513]
    initial[0] /= 2
    initial[512] /= 2
    start = initial @ mcd_sptk.freqt_matrix(512, 24, ALPHA)
    assert np.abs(((power / np.exp(2 * basis @ start) - 1)[:, None] * basis).mean(0)).max() > 1


@pytest.mark.parametrize("coefficients", [[1.0, -0.9], [1.0, -0.8, 0.3]])
def test_noise_through_a_known_filter_gives_its_mel_cepstrum(coefficients):
    a = np.array(coefficients)
    rng = np.random.default_rng(0)
    n = 4 * SR
    x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.fft.rfft(a, n=n), n=n) * 0.01
    estimate = mcd_sptk.mcep(mcd_sptk.frames(x), 24, ALPHA).mean(axis=0)
    # truth: log|1/A| sampled at the linear frequencies of a uniform warped grid, then a
    # cosine series on that grid
    wt = np.pi * (np.arange(8192) + 0.5) / 8192
    w = wt + 2 * np.arctan(-ALPHA * np.sin(wt) / (1 + ALPHA * np.cos(wt)))
    log_h = -np.log(np.abs(np.polyval(a[::-1], np.exp(-1j * w))))
    truth = 2 * (log_h[None, :] * np.cos(np.arange(25)[:, None] * wt[None, :])).mean(axis=1)
    # SPTK's estimator has a small finite-frame bias (c1 = -0.03 for white noise at alpha 0.46)
    np.testing.assert_allclose(estimate[1:], truth[1:], atol=0.05)


def test_freqt_there_and_back_is_the_identity():
    c = np.random.default_rng(0).standard_normal((3, 25)) * 0.5 ** np.arange(25)
    there = c @ mcd_sptk.freqt_matrix(24, 200, ALPHA)
    back = there @ mcd_sptk.freqt_matrix(200, 24, -ALPHA)
    np.testing.assert_allclose(back, c, atol=1e-9)
    np.testing.assert_allclose(mcd_sptk.freqt_matrix(24, 24, 0.0), np.eye(25), atol=1e-15)


def test_frames_together_equal_frames_one_by_one():
    framed = mcd_sptk.frames(_voice(0.3))
    together = mcd_sptk.mcep(framed, 24, ALPHA)
    alone = np.stack([mcd_sptk.mcep(f[None], 24, ALPHA)[0] for f in framed])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-10)


def test_identical_audio_scores_zero_and_distortion_raises_mcd_step_by_step():
    ref = _voice(0.8)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(ref.size).astype(np.float32)
    rms = float(np.sqrt(np.mean(ref ** 2)))
    assert mcd_sptk.mcd(ref, SR, ref, SR) == pytest.approx(0.0, abs=1e-5)  # float rounding
    scores = [mcd_sptk.mcd(ref + rms * 10 ** (-snr / 20) * noise, SR, ref, SR)
              for snr in (40, 25, 10, 0)]
    assert scores == sorted(scores) and scores[0] > 0.05
    assert mcd_sptk.mcd(_voice(0.8, formant=2000), SR, ref, SR) > scores[1]


def test_level_only_moves_c0_so_it_counts_only_when_c0_is_kept():
    ref = _voice(0.6)
    assert mcd_sptk.mcd(3 * ref, SR, ref, SR) == pytest.approx(0.0, abs=1e-3)
    # every frame's c0 moves by ln 3: (10/ln10) * sqrt(2) * ln 3 dB
    expected = 10 / math.log(10) * math.sqrt(2) * math.log(3)
    assert mcd_sptk.mcd(3 * ref, SR, ref, SR, include_c0=True) == pytest.approx(expected,
                                                                               rel=1e-3)


def test_other_sample_rates_are_analysed_at_24k():
    import torch
    import torchaudio

    ref = _voice(0.6)
    at16 = torchaudio.functional.resample(torch.from_numpy(ref), SR, 16000).numpy()
    cep = mcd_sptk.mel_cepstrum(at16, 16000)
    assert cep.shape == ((int(0.6 * SR) - 1024) // 256 + 1, 25)
    assert mcd_sptk.mcd(at16, 16000, ref, SR) < 0.5 * mcd_sptk.mcd(_voice(0.6, formant=2000),
                                                                    SR, ref, SR)


def test_short_and_empty_clips():
    assert mcd_sptk.mel_cepstrum(_voice(0.01), SR).shape == (1, 25)  # padded to one frame
    with pytest.raises(ValueError, match="empty waveform"):
        mcd_sptk.mel_cepstrum(np.zeros(0, np.float32), SR)
    with pytest.raises(ValueError, match="order 600"):
        mcd_sptk.mel_cepstrum(_voice(0.1), SR, order=600)


def test_method_states_order_alpha_frames_and_c0():
    m = mcd_sptk.method(24)
    assert "order 24" in m["analysis"] and "alpha 0.46" in m["analysis"]
    assert "c1..c24" in m["coefficients"] and "hop 256" in m["frames"]
    assert mcd_sptk.method(34, include_c0=True)["coefficients"] == "c0..c34"
