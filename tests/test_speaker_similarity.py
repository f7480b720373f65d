"""Speaker similarity: windowing and batching on a random encoder saved in resemblyzer's file
layout; with resemblyzer's real weights (when its wheel is installed), that eSpeak voices are
told apart. Agreement with resemblyzer itself: benchmarks/eval_measures_agreement.py."""

import importlib.util
import math
import types

import numpy as np
import pytest
import torch

from habla import speaker_similarity as ss
from habla.wheel_data import WheelDataError


def _tone_clip(seconds: float, f0: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 8))
    x = x + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def random_encoder(tmp_path_factory) -> ss.VoiceEncoder:
    torch.manual_seed(0)
    state = {k: v for k, v in ss.VoiceEncoder().state_dict().items()}
    state["similarity_weight"] = torch.ones(1)  # present in the real checkpoint, unused
    path = tmp_path_factory.mktemp("encoder") / "pretrained.pt"
    torch.save({"step": 1, "model_state": state}, path)
    return ss.load_encoder(path)


@pytest.mark.parametrize("seconds", [0.3, 1.6, 2.4, 7.0])
def test_partials_are_1_6_s_windows_every_0_77_s_covering_the_clip(seconds):
    n = int(seconds * ss.SAMPLE_RATE)
    starts = ss.partial_starts(n)
    assert starts[0] == 0 and (np.diff(starts) == 77).all()
    end = (starts[-1] + ss.PARTIAL_FRAMES) * ss.HOP_LENGTH
    # the last window reaches the end of the clip unless less than 3/4 of it would be audio
    assert end >= n or (n - (starts[-1] + 77) * ss.HOP_LENGTH) < 0.75 * 160 * ss.HOP_LENGTH
    mels = ss.partial_mels(np.zeros(n, np.float32) + 0.01)
    assert mels.shape == (len(starts), 160, 40)
    if seconds <= 1.6:
        assert len(starts) == 1


def test_batched_clips_equal_clips_one_by_one(random_encoder):
    clips = [_tone_clip(s, f) for s, f in [(0.8, 110), (3.1, 210), (5.0, 150)]]
    together = ss.embed(random_encoder, clips, 16000, batch_size=4)
    alone = np.concatenate([ss.embed(random_encoder, [c], 16000) for c in clips])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    assert (together >= 0).all()  # ReLU before the norm


def test_quiet_clips_are_raised_to_minus_30_dbfs_so_their_level_does_not_matter(random_encoder):
    clip = _tone_clip(2.0, 130)
    clip *= 10 ** (-40 / 20) / np.sqrt(np.mean(clip ** 2))  # -40 dBFS
    a, b = ss.embed(random_encoder, [clip, clip / 3], 16000)
    assert float(a @ b) == pytest.approx(1.0, abs=1e-5)
    rms = np.sqrt(np.mean(ss.preprocess(clip, 16000) ** 2))
    assert 20 * math.log10(rms) == pytest.approx(-30.0, abs=1e-3)


def test_similarities_pair_each_clip_with_its_reference_and_the_speaker_mean(random_encoder):
    refs = [_tone_clip(2.0, f, seed=i) for i, f in enumerate((100, 120, 140))]
    synth = [refs[0], _tone_clip(2.0, 400, seed=9), refs[2]]
    out = ss.similarities(random_encoder, synth, 16000, refs, 16000)
    emb = ss.embed(random_encoder, refs, 16000)
    np.testing.assert_allclose(out["utterance"][[0, 2]], 1.0, atol=1e-6)
    np.testing.assert_allclose(out["speaker"][0], ss.cosine(emb[0], ss.mean_embedding(emb))[0],
                               atol=1e-6)
    with pytest.raises(ValueError, match="2 synthesised clips but 3"):
        ss.similarities(random_encoder, synth[:2], 16000, refs, 16000)


def test_cosine_and_mean_embedding():
    e = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(ss.cosine(e, e[::-1]), [0.0, 0.0])
    np.testing.assert_allclose(ss.mean_embedding(e), [math.sqrt(0.5)] * 2)
    with pytest.raises(ValueError, match="non-empty"):
        ss.mean_embedding(np.zeros((0, 256)))


def test_silent_clip_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="digitally silent"):
        ss.preprocess(np.zeros(16000, np.float32), 16000)


def test_missing_or_wrong_weights_say_how_to_install_them(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "resemblyzer" else real(name, *a))
    with pytest.raises(WheelDataError, match=r"habla\[eval-models\]"):
        ss.weights_path()
    (tmp_path / "pretrained.pt").write_bytes(b"not the weights")
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: fake if name == "resemblyzer" else real(name, *a))
    with pytest.raises(WheelDataError, match="sha256"):
        ss.weights_path()


@pytest.fixture(scope="module")
def real_encoder() -> ss.VoiceEncoder:
    try:
        return ss.load_encoder()
    except WheelDataError as exc:
        pytest.skip(str(exc))


def test_espeak_voices_are_told_apart_and_a_clip_matches_itself(real_encoder):
    from habla.sources.espeak import Espeak
    from habla.sources.sentences import sentence

    tts = Espeak(seed=0)
    voices = [("es-419+f2", 140, 75), ("es+m3", 150, 50), ("es+f4", 150, 60)]
    clips = [tts.synthesize(sentence(10 + i), v, rate=r, pitch=p)[0]
             for v, r, p in voices for i in range(3)]
    emb = ss.embed(real_encoder, clips, tts.sample_rate)
    assert float(ss.cosine(emb[0], ss.embed(real_encoder, clips[:1], tts.sample_rate))[0]) == \
        pytest.approx(1.0, abs=1e-6)
    sim = emb @ emb.T
    speaker = np.repeat(np.arange(3), 3)
    for s in range(3):
        own = sim[np.ix_(speaker == s, speaker == s)][~np.eye(3, dtype=bool)].mean()
        for other in set(range(3)) - {s}:
            assert own > sim[np.ix_(speaker == s, speaker == other)].mean() + 0.1
    # the speaker's mean embedding is closer to its own clips than to anyone else's
    centre = ss.mean_embedding(emb[:3])
    assert ss.cosine(emb[:3], centre).min() > ss.cosine(emb[3:], centre).max()
