"""Log-mel, per-token durations, pitch and energy targets, and the Griffin-Lim vocoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from habla import features as F
from habla.vocoder import MIN_FRAMES, griffin_lim

SR = 24000
SPEC = F.DEFAULT_SPEC


def tone(f0: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(amp / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
    return wave.astype(np.float32)


def test_log_mel_shape_and_floor():
    mel = F.log_mel(np.zeros(SR, np.float32))
    assert mel.shape == (1 + SR // 256, 80)
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(F.LOG_CLAMP))))


def test_durations_sum_to_frames_and_pauses_go_to_the_tokens_between_words():
    # "▁la▁casa." : tokens ▁ l a ▁ c a s a .   words: la (0.0-0.2 s), casa (0.6-1.0 s)
    owners = [None, 0, 0, None, 1, 1, 1, 1, None]
    words = [{"word": "la", "start": 0.0, "end": 0.2}, {"word": "casa", "start": 0.6, "end": 1.0}]
    n = F.frame_log_energy(np.zeros(int(1.2 * SR), np.float32)).shape[0]
    d = F.token_durations(owners, words, n)
    assert d.sum() == n
    fps = SR / 256
    assert d[0] == 0 and d[1:3].sum() == round(0.2 * fps)
    assert d[3] == round(0.6 * fps) - round(0.2 * fps)  # the pause sits on the space
    assert d[4:8].sum() == round(1.0 * fps) - round(0.6 * fps)
    assert max(d[4:8]) - min(d[4:8]) <= 1  # spread evenly over the word's letters
    assert d[8] == n - round(1.0 * fps)


def test_a_words_trailing_silence_goes_to_the_next_gap():
    wave = np.concatenate([tone(150, 0.3), np.zeros(int(0.5 * SR), np.float32), tone(150, 0.4)])
    energy = F.frame_log_energy(wave)
    n = len(energy)
    owners = [0, 0, None, 1, 1]
    words = [{"word": "ab", "start": 0.0}, {"word": "cd", "start": 0.8}]
    d = F.token_durations(owners, words, n, log_energy=energy)
    assert d.sum() == n
    fps = SR / 256
    assert abs(d[:2].sum() - 0.3 * fps) <= 3  # the word ends where its sound ends
    assert abs(d[2] - 0.5 * fps) <= 3
    # an end time at the next word's start (synthetic truth) is trimmed the same way
    words[0]["end"] = 0.8
    assert np.array_equal(F.token_durations(owners, words, n, log_energy=energy), d)


def test_a_word_with_letter_times_splits_its_frames_at_its_letters():
    # "▁casa." with letters at 0.0 (c), 0.05 (a), 0.3 (s), 0.4 (a) in a 0.6 s word
    owners, letter_of = [None, 0, 0, 0, 0, None], [None, 0, 1, 2, 3, None]
    words = [{"word": "casa", "start": 0.0, "end": 0.6, "letters": [0.0, 0.05, 0.3, 0.4]}]
    n = 100
    d = F.token_durations(owners, words, n, letter_of=letter_of)
    fps = SR / 256
    assert d.sum() == n and d[0] == 0
    assert d[1:5].tolist() == [round(0.05 * fps), round(0.3 * fps) - round(0.05 * fps),
                               round(0.4 * fps) - round(0.3 * fps),
                               round(0.6 * fps) - round(0.4 * fps)]
    # without the token -> letter map, or with a map that does not fit, it spreads evenly
    even = F.token_durations(owners, words, n)
    assert max(even[1:5]) - min(even[1:5]) <= 1
    assert np.array_equal(F.token_durations(owners, words, n,
                                            letter_of=[None, 0, 1, 2, 9, None]), even)


def test_letter_times_outside_their_word_are_clamped_to_it():
    owners, letter_of = [0, 0, 0], [0, 1, 2]
    words = [{"word": "sol", "start": 0.2, "end": 0.5, "letters": [0.1, 0.6, 0.3]}]
    d = F.token_durations(owners, words, 80, letter_of=letter_of)
    assert d.sum() == 80 and (d >= 0).all()
    fps = SR / 256
    assert d[0] == round(0.5 * fps)  # the first token also carries the lead-in gap
    assert d[1] == 0  # 0.6 s clamps to the word's end; the 0.3 s after it cannot go back


def test_unaligned_and_missing_words_still_give_durations_that_sum_to_frames():
    owners = [None, 0, 0, None, 1, 1, None, 2, 2, 2]
    words = [{"word": "ya", "start": 0.1}, {"word": "no", "start": None, "aligned": False},
             {"word": "sé", "start": 0.9, "end": 1.2}]
    d = F.token_durations(owners, words, 100)
    assert d.sum() == 100 and (d >= 0).all()
    assert F.token_durations([None, None], [], 37).sum() == 37
    with pytest.raises(ValueError, match="need tokens and frames"):
        F.token_durations([], words, 10)


def test_pitch_tracker_finds_the_f0_of_a_harmonic_tone_and_silence_is_unvoiced():
    wave = np.concatenate([tone(180, 0.5), np.zeros(SR // 4, np.float32), tone(110, 0.5)])
    f0 = F.frame_f0(wave)
    fps = SR / 256
    first, last = f0[5:int(0.4 * fps)], f0[int(0.85 * fps):int(1.2 * fps)]
    assert np.median(first) == pytest.approx(180, rel=0.03)
    assert np.median(last) == pytest.approx(110, rel=0.03)
    assert (f0[int(0.58 * fps):int(0.68 * fps)] == 0).all()


def test_clip_targets_from_espeak_speech_line_up_with_its_tokens(tmp_path):
    from habla.audio import resample
    from habla.sources.espeak import Espeak
    from habla.tokenizer import save_tokenizer, token_words, train_tokenizer

    text = "Hola, ¿qué tal estás hoy?"
    wave, starts = Espeak(seed=0).synthesize(text, "es+f2", rate=150, pitch=60)
    wave = resample(wave, 22050, SR)
    sp = save_tokenizer(train_tokenizer([text]), tmp_path)
    words = [{"word": w, "start": s} for w, s in starts]
    ids, owners = token_words(sp, text, words)
    t = F.clip_targets(wave, owners, words)
    assert t["durations"].sum() == t["mel"].shape[0] == 1 + len(wave) // 256
    assert len(t["log_f0"]) == len(ids) == len(t["log_energy"])
    voiced = np.exp(t["log_f0"][~np.isnan(t["log_f0"])])
    assert 100 < np.median(voiced) < 300  # espeak's female voice
    stats = F.prosody_stats([t])
    norm = F.normalise(t["log_f0"], stats["log_f0_mean"], stats["log_f0_std"])
    assert np.isfinite(norm).all()


def test_griffin_lim_inverts_a_mel_and_pads_very_short_inputs():
    wave = tone(200, 0.6)
    mel = F.log_mel(wave)
    out = griffin_lim(mel, SPEC, n_iter=32)
    assert out.dtype == np.float32 and abs(len(out) - len(wave)) <= 256
    again = F.log_mel(out)[: mel.shape[0]]
    loud = mel > mel.max() - 6  # compare where the tone has energy
    assert (again - mel)[loud].abs().mean() < 1.0
    assert np.array_equal(out, griffin_lim(mel, SPEC, n_iter=32))  # seeded phases
    short = griffin_lim(mel[:2], SPEC)
    assert len(short) >= MIN_FRAMES * 256 - 256
    with pytest.raises(ValueError, match="log-mel"):
        griffin_lim(mel[:, :40], SPEC)
