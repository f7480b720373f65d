"""DNSMOS: the windows and features fed to the networks, the calibration and the data gate;
with the speechmos wheel's models (when installed), clean speech above noisy speech and batch
scoring equal to one-by-one. Agreement with speechmos: benchmarks/eval_measures_agreement.py."""

import numpy as np
import pytest

from habla import dnsmos
from habla.wheel_data import WheelDataError

SR = dnsmos.SAMPLE_RATE


def test_short_clips_are_doubled_until_they_fill_a_window():
    clip = np.linspace(-0.5, 0.5, 5 * SR, dtype=np.float32)
    (window,) = dnsmos.segments(clip)  # 10 s after one doubling: one window
    assert window.shape == (dnsmos.SEGMENT_SAMPLES,)
    np.testing.assert_array_equal(window[:5 * SR], clip)
    np.testing.assert_array_equal(window[5 * SR:], clip[:dnsmos.SEGMENT_SAMPLES - 5 * SR])
    assert len(dnsmos.segments(clip[:3 * SR])) == 3  # 3 s -> 6 -> 12 s: windows at 0, 1, 2 s


def test_long_clips_give_one_window_per_second_like_the_original():
    assert len(dnsmos.segments(np.zeros(12 * SR, np.float32))) == 3  # starts 0, 1, 2 s
    # the original's float arithmetic makes windows from 7 s on one sample short: skipped
    assert len(dnsmos.segments(np.zeros(30 * SR, np.float32))) == 7


def test_p808_features_are_900_frames_of_120_scaled_db_mels():
    rng = np.random.default_rng(0)
    feats = dnsmos.p808_features(rng.standard_normal(dnsmos.SEGMENT_SAMPLES).astype(np.float32))
    assert feats.shape == (900, 120) and feats.dtype == np.float32
    assert feats.max() == pytest.approx(1.0)  # (0 dB + 40) / 40 at the peak
    assert feats.min() >= -1.0  # (-80 dB floor + 40) / 40


def test_calibration_polynomials():
    raw = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]], np.float32)
    mos = dnsmos.calibrate(raw, personalized=False)
    assert mos["ovrl"][0] == pytest.approx(0.04602535)
    assert mos["sig"][1] == pytest.approx(-0.08397278 * 9 + 1.22083953 * 3 + 0.0052439)
    assert dnsmos.calibrate(raw, personalized=True)["bak"][0] == pytest.approx(0.96883132)


def test_gate_keeps_clips_at_or_above_the_threshold():
    scores = [{"ovrl": 2.99}, {"ovrl": 3.0}, {"ovrl": 3.4}]
    assert dnsmos.passes_gate(scores, 3.0) == [False, True, True]
    assert dnsmos.passes_gate(scores, None) == [True, True, True]


def test_method_says_what_dnsmos_does_not_measure():
    m = dnsmos.method()
    assert "naturalness" in m["does_not_measure"] and "noise" in m["measures"]


@pytest.fixture(scope="module")
def model() -> dnsmos.Dnsmos:
    try:
        return dnsmos.Dnsmos()
    except WheelDataError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def speech() -> tuple[list[np.ndarray], int]:
    from habla.sources.espeak import Espeak
    from habla.sources.sentences import sentence

    tts = Espeak(seed=0)
    clips = [np.concatenate([tts.synthesize(sentence(i + k), v)[0] for k in range(n)])
             for i, (v, n) in enumerate([("es-419+f2", 1), ("es+klatt", 2), ("es+m3", 3)])]
    return clips, tts.sample_rate


def test_clean_speech_scores_above_the_same_speech_in_heavy_noise(model, speech):
    clips, sr = speech
    rng = np.random.default_rng(0)
    noisy = [c + 0.5 * np.sqrt(np.mean(c ** 2)) * rng.standard_normal(c.size).astype(np.float32)
             for c in clips]  # 6 dB SNR
    clean_scores = model.score_batch(clips, sr)
    noisy_scores = model.score_batch([n / np.abs(n).max() for n in noisy], sr)
    for c, n in zip(clean_scores, noisy_scores, strict=True):
        assert all(1.0 <= c[k] <= 5.0 for k in dnsmos.KEYS)
        assert c["bak"] > n["bak"] + 0.5 and c["ovrl"] > n["ovrl"] and c["p808"] > n["p808"]


def test_batch_scoring_equals_one_by_one(model, speech):
    clips, sr = speech
    together = model.score_batch(clips, sr, batch_size=3)
    for clip, t in zip(clips, together, strict=True):
        alone = model.score(clip, sr)
        assert all(t[k] == pytest.approx(alone[k], abs=1e-4) for k in dnsmos.KEYS)


def test_max_windows_scores_only_the_first_windows(model, speech):
    clips, sr = speech
    first = model.score_batch(clips, sr, max_windows=1)
    by_hand = [model._p835.run(None, {"input_1": dnsmos.segments(dnsmos.to_16k(c, sr))[:1]})[0]
               for c in clips]
    for f, raw in zip(first, by_hand, strict=True):
        assert f["ovrl"] == pytest.approx(float(dnsmos.calibrate(raw, False)["ovrl"][0]),
                                          abs=1e-5)
