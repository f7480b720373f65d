"""VAD building blocks: streaming resampling, scans, clip planning, trimming, loudness."""

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from habla.audio import (
    AudioError,
    check_wav_complete,
    normalise_loudness,
    resample,
    resample_ratio,
    resample_stream,
)
from habla.vad import FRAME_S, Scan, _merge_short, _split_long, plan_clips, scan, speech_bounds


def bursts(sr: int, layout: list[tuple[float, float]], level: float = 0.25,
           noise_db: float = -65.0, seed: int = 0) -> np.ndarray:
    """Tone bursts at (start, end) seconds over a faint noise floor; total = last end + 0.5 s."""
    rng = np.random.default_rng(seed)
    n = int((layout[-1][1] + 0.5) * sr)
    x = rng.standard_normal(n).astype(np.float32) * 10 ** (noise_db / 20)
    t = np.arange(n) / sr
    for a, b in layout:
        m = (t >= a) & (t < b)
        x[m] += level * np.sin(2 * np.pi * 220 * t[m]).astype(np.float32)
    return x


@pytest.mark.parametrize("orig,target", [(22050, 16000), (48000, 16000), (8000, 16000),
                                         (44100, 24000), (44101, 16000), (7919, 24000)])
def test_resample_stream_equals_resampling_the_whole_signal(orig, target):
    x = np.random.default_rng(1).standard_normal(orig * 2 + 77).astype(np.float32) * 0.1
    whole = resample(x, orig, target)
    for size in (999, 30000):
        parts = [x[i:i + size] for i in range(0, len(x), size)]
        joined = np.concatenate(list(resample_stream(parts, orig, target)))
        assert len(joined) == len(whole)
        assert np.abs(joined - whole).max() < 1e-5


def test_common_rate_pairs_resample_exactly_as_torchaudio_does():
    import torch
    import torchaudio.functional as AF

    x = np.random.default_rng(2).standard_normal(22050).astype(np.float32)
    for orig, target in ((22050, 24000), (22050, 16000), (16000, 24000), (24000, 16000),
                         (44100, 16000), (48000, 24000)):
        g = np.gcd(orig, target)
        assert resample_ratio(orig, target) == (orig // g, target // g)
        expected = AF.resample(torch.from_numpy(x), orig, target).numpy()
        assert np.array_equal(resample(x, orig, target), expected)  # bit for bit


@pytest.mark.parametrize("orig,target", [(44101, 16000), (44101, 24000), (8432708, 16000),
                                         (4001, 384000), (383999, 8000)])
def test_odd_rate_pairs_use_a_near_ratio_with_small_terms(orig, target):
    from habla.audio import MAX_RATIO_PRODUCT

    step_in, step_out = resample_ratio(orig, target)
    assert step_in * step_out <= MAX_RATIO_PRODUCT
    assert abs(step_out / step_in - target / orig) / (target / orig) < 1e-5  # 72 ms in 2 h


def test_energy_scan_finds_each_burst_between_silences(tmp_path):
    layout = [(0.5, 2.0), (2.8, 4.5), (5.5, 6.7)]
    sf.write(tmp_path / "b.wav", bursts(22050, layout), 22050, subtype="PCM_16")
    found = scan(tmp_path / "b.wav", "energy")
    spans = plan_clips(found, 0.5, 0.25, 1.0, 20.0, 0.1)
    assert len(spans) == 3
    for (a, b), (ta, tb) in zip(spans, layout, strict=True):
        assert abs(a - ta) < 0.07 and abs(b - tb) < 0.07


def test_scan_rejects_nan_samples_with_their_time(tmp_path):
    x = bursts(16000, [(0.5, 1.5)])
    x[20000] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"1\.250 s") as err:
        scan(tmp_path / "nan.wav", "energy")
    assert err.value.reason == "non_finite"


def test_truncated_wav_is_detected_although_libsndfile_reads_it(tmp_path):
    sf.write(tmp_path / "ok.wav", bursts(16000, [(0.2, 1.0)]), 16000, subtype="PCM_16")
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    check_wav_complete(tmp_path / "ok.wav")
    with pytest.raises(AudioError) as err:
        check_wav_complete(tmp_path / "cut.wav")
    assert err.value.reason == "truncated"


def test_long_stretch_is_split_at_its_longest_internal_pause():
    scores = np.ones(100, np.float32)
    scores[30:33] = 0.0  # short pause
    scores[60:68] = 0.0  # the longest pause
    pieces = _split_long(scores, (0, 100), limit=70, threshold=0.5)
    assert pieces == [(0, 60), (68, 100)]


def test_split_recurses_until_every_piece_fits():
    scores = np.ones(300, np.float32)
    for p in (50, 100, 150, 200, 250):
        scores[p:p + 3] = 0.0
    pieces = _split_long(scores, (0, 300), limit=80, threshold=0.5)
    assert all(b - a <= 80 for a, b in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == 300


def test_short_span_joins_its_nearer_neighbour_only_when_it_fits():
    spans = [(0, 50), (60, 65), (90, 140)]
    assert _merge_short(spans, short=20, limit=100, gap=30) == [(0, 65), (90, 140)]
    # too long together: stays alone (and is later dropped as too short)
    assert _merge_short(spans, short=20, limit=60, gap=30) == spans


def test_plan_clips_never_exceeds_max_duration_with_margins():
    rng = np.random.default_rng(0)
    scores = np.ones(int(60 / FRAME_S), np.float32)
    for p in rng.integers(0, len(scores) - 5, 25):
        scores[p:p + 4] = 0.0
    found = Scan(scores, len(scores) * 512, 16000, len(scores) * 512, 0.0)
    spans = plan_clips(found, 0.5, 0.25, 1.0, 8.0, 0.1)
    assert spans and all(b - a <= 8.0 - 0.2 + 1e-6 for a, b in spans)


def test_speech_bounds_keep_a_quiet_final_consonant_and_drop_silence():
    sr = 24000
    x = np.zeros(sr * 2, np.float32)
    x[sr // 2: sr] = 0.3 * np.sin(np.arange(sr // 2) * 0.1)  # vowel, about -13 dBFS
    x[sr: sr + 2400] = np.random.default_rng(0).standard_normal(2400) * 0.01  # "s", -40 dB
    a, b, active = speech_bounds(x, sr)
    assert abs(a - sr // 2) <= 240 and abs(b - (sr + 2400)) <= 240
    assert speech_bounds(np.zeros(sr, np.float32), sr) is None


def test_loudness_reaches_target_and_peak_is_limited():
    x = np.sin(np.arange(24000) * 0.05).astype(np.float32) * 0.01
    rms = float(np.sqrt(np.mean(x**2)))
    y, gain_db, limited = normalise_loudness(x, rms, -23.0)
    assert not limited
    assert abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 23.0) < 0.01
    spiky = x.copy()
    spiky[100] = 0.5  # one peak that the target gain would push far past full scale
    y, _, limited = normalise_loudness(spiky, rms, -23.0)
    assert limited and np.abs(y).max() <= 10 ** (-1 / 20) + 1e-6


def test_scan_streams_a_long_file_in_bounded_memory(tmp_path):
    sr = 22050
    n = sr * 600  # 10 minutes: 53 MB as float32, 26 MB on disk
    with sf.SoundFile(tmp_path / "long.wav", "w", sr, 1, subtype="PCM_16") as f:
        for k in range(0, n, sr * 30):
            f.write(bursts(sr, [(1.0, 20.0), (21.0, 29.5)], seed=k))
    scan(tmp_path / "long.wav", "energy")  # first call: imports and caches are not the file
    tracemalloc.start()
    found = scan(tmp_path / "long.wav", "energy")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert found.duration == pytest.approx(600, abs=0.01)
    assert peak < n * 4 / 5, f"peak {peak / 1e6:.1f} MB for a {n * 4 / 1e6:.0f} MB signal"


def test_silero_finds_espeak_sentences_and_not_the_pauses(tmp_path):
    from habla.sources.espeak import Espeak

    es = Espeak(3)
    sr = 22050
    parts, truth, t = [np.zeros(sr // 2, np.float32)], [], 0.5
    for text in ("El perro corre por el parque.", "Mañana lloverá en la ciudad."):
        w, _ = es.synthesize(text, "es-419")
        parts += [w, np.zeros(sr, np.float32)]
        truth.append((t, t + len(w) / sr))
        t += len(w) / sr + 1.0
    sf.write(tmp_path / "s.wav", np.concatenate(parts), sr, subtype="PCM_16")
    spans = plan_clips(scan(tmp_path / "s.wav", "silero"), 0.5, 0.25, 1.0, 20.0, 0.1)
    assert len(spans) == 2
    for (a, b), (ta, tb) in zip(spans, truth, strict=True):
        assert ta - 0.1 < a < ta + 0.15 and tb - 0.15 < b < tb + 0.35


def test_block_scoring_matches_silero_called_frame_by_frame():
    import torch

    from habla.sources.espeak import Espeak
    from habla.vad import FRAME, SileroStream, _silero

    w, _ = Espeak(5).synthesize("Los niños juegan en el jardín de la escuela.", "es-419")
    sr = 22050
    w16 = resample(np.concatenate([np.zeros(sr // 3, np.float32), w]), sr, 16000)
    frames = w16[: len(w16) // FRAME * FRAME].reshape(-1, FRAME)
    model = _silero()
    model.reset_states()
    with torch.no_grad():
        reference = np.array([float(model(torch.from_numpy(f.copy()), 16000)) for f in frames])
    stream = SileroStream()
    blocks = [stream.score(frames[i:i + 37]) for i in range(0, len(frames), 37)]  # odd blocks
    got = np.concatenate(blocks)
    assert got.shape == reference.shape and reference.max() > 0.9 and reference.min() < 0.1
    assert np.abs(got - reference).max() < 1e-5  # batched convolutions round differently


def _flac_claiming(tmp_path, total: int):
    """A 1 s FLAC whose STREAMINFO claims `total` frames (0: length not stated)."""
    path = tmp_path / f"claims_{total}.flac"
    sf.write(path, bursts(16000, [(0.2, 0.8)]), 16000)
    data = bytearray(path.read_bytes())
    head = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # total: low 36 bits
    data[18:26] = (head | total).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_file_shorter_than_its_header_claims_is_rejected_as_truncated(tmp_path):
    from habla.audio import blocks

    path = _flac_claiming(tmp_path, 16000 * 3600)  # one second that claims an hour
    with pytest.raises(AudioError) as err:
        for _ in blocks(path, seconds=10.0):
            pass
    assert err.value.reason == "truncated"


def test_a_flac_that_does_not_state_its_length_is_named_as_such(tmp_path):
    from habla.audio import probe

    with pytest.raises(AudioError) as err:
        probe(_flac_claiming(tmp_path, 0))
    assert err.value.reason == "unknown_length"
