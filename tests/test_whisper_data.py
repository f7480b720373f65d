"""habla.whisper_data: faster-whisper's features, phase-1/phase-2 labels, seeded packing."""

import numpy as np
import pytest
from helpers_whisper import espeak_clips

from habla.asr import whisper_base_dir
from habla.text import words as text_words
from habla.whisper_ct2 import ct2_tokenizer
from habla.whisper_data import (
    IGNORE_INDEX,
    SAMPLE_RATE,
    Clip,
    PackingParams,
    WhisperDataError,
    label_lengths,
    log_mel,
    one_per_window,
    pack_windows,
    window_example,
    word_segments,
)
from habla.whisper_timing import segments_from_tokens, word_start_error, words_from_segments


@pytest.fixture(scope="module")
def tokenizer():
    return ct2_tokenizer(whisper_base_dir())


@pytest.fixture(scope="module")
def clips():
    return espeak_clips(range(200000, 200012))


def _full(example):
    return example.decoder_input_ids + [example.labels[-1]]


def test_features_are_exactly_what_faster_whisper_feeds_its_encoder(clips):
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_base_dir()), device="cpu", compute_type="int8",
                         cpu_threads=1)
    seen = []
    encode = model.encode
    model.encode = lambda features: seen.append(np.array(features)) or encode(features)
    for clip in clips[:3]:
        seen.clear()
        segments, _ = model.transcribe(clip.wave, language="es", beam_size=1,
                                       without_timestamps=True, max_new_tokens=1)
        list(segments)
        fed = seen[0][0] if seen[0].ndim == 3 else seen[0]
        assert fed.shape == (80, 3000)
        assert np.array_equal(fed, log_mel(clip.wave))


def test_features_pad_in_log_mel_space_not_the_audio(clips):
    wave = clips[0].wave
    frames = len(wave) // 160
    mel = log_mel(wave)
    assert (mel[:, frames + 1:] == 0).all()  # zero-padded after the clip's own frames
    assert mel[:, :frames].min() < 0  # the clip's own floor sits below zero
    with pytest.raises(WhisperDataError, match="longer than one 30 s window"):
        log_mel(np.zeros(31 * SAMPLE_RATE, np.float32))


def test_phase1_example_is_the_notimestamps_transcript_with_the_prefix_masked(tokenizer, clips):
    clip = clips[0]
    e = window_example(clips, [(0, 0.0)], tokenizer, "es", "text")
    assert tokenizer.decode(_full(e)) == (
        f"<|startoftranscript|><|es|><|transcribe|><|notimestamps|> {clip.text}<|endoftext|>")
    assert e.labels[:3] == [IGNORE_INDEX] * 3  # <|es|><|transcribe|><|notimestamps|>
    assert e.labels[3:] == e.decoder_input_ids[4:] + [50257]
    assert np.array_equal(e.input_features, log_mel(clip.wave))
    assert e.clips == (0,)


def test_phase2_example_has_one_timestamped_segment_per_word(tokenizer, clips):
    clip = clips[1]
    e = window_example(clips, [(1, 0.0)], tokenizer, "es", "words")
    tokens = _full(e)
    assert tokens[:3] == [50258, 50262, 50359] and tokens[-1] == 50257
    assert e.labels[:2] == [IGNORE_INDEX] * 2 and e.labels[2] == 50364  # <|0.00|> is learned
    segments = segments_from_tokens(tokens, tokenizer)
    texts = [t for _s, _e, t in segments]
    assert " ".join(texts) == clip.text  # punctuation stays with its word
    assert len(segments) == len(clip.word_starts)
    for (start, end, _t), truth, nxt in zip(segments, clip.word_starts,
                                            list(clip.word_starts[1:]) + [clip.duration],
                                            strict=True):
        assert abs(start - truth) <= 0.01 + 1e-9  # the 20 ms grid
        assert abs(end - nxt) <= 0.01 + 1e-9  # a word ends where the next begins


def test_word_segments_refuse_starts_that_do_not_fit_the_words():
    wave = np.zeros(SAMPLE_RATE, np.float32)
    assert word_segments(Clip(wave, "¿Hola, qué tal?", (0.1, 0.4, 0.6))) == [
        ("¿Hola,", 0.1, 0.4), ("qué", 0.4, 0.6), ("tal?", 0.6, 1.0)]
    with pytest.raises(WhisperDataError, match="2 word starts for 3 words"):
        word_segments(Clip(wave, "¿Hola, qué tal?", (0.1, 0.4), id="c7"))
    with pytest.raises(WhisperDataError, match="not increasing"):
        word_segments(Clip(wave, "¿Hola, qué tal?", (0.1, 0.6, 0.4)))


def test_packing_is_seeded_complete_and_fits_whisper_windows(tokenizer, clips):
    lengths = label_lengths(clips, tokenizer, "es", "words")
    durations = [c.duration for c in clips]
    plan = pack_windows(durations, lengths, seed=5)
    assert plan == pack_windows(durations, lengths, seed=5)
    assert plan != pack_windows(durations, lengths, seed=6)
    assert sorted(i for w in plan for i, _ in w) == list(range(len(clips)))
    params = PackingParams()
    for window in plan:
        assert window[0][1] == 0.0
        for (i, a), (_j, b) in zip(window, window[1:], strict=False):
            gap = b - (a + durations[i])
            assert params.gap_min - 0.02 <= gap <= params.gap_max + 1e-9
            assert abs(b / 0.02 - round(b / 0.02)) < 1e-6  # starts on the timestamp grid
        i, last = window[-1]
        assert last + durations[i] <= 30.0
        assert 3 + sum(lengths[i] for i, _ in window) + 1 <= 449
    assert len(plan) <= len(clips) / 3  # ~5 s clips: at least 3 per window
    assert len(one_per_window(len(clips), 5)) == len(clips)


def test_packing_respects_the_decoder_length(tokenizer, clips):
    lengths = [250] * 4  # long labels: two never fit together in 448 positions
    plan = pack_windows([2.0] * 4, lengths, seed=0)
    assert sorted(len(w) for w in plan) == [1, 1, 1, 1]
    with pytest.raises(WhisperDataError, match="does not fit one window alone"):
        pack_windows([31.0], [10], seed=0)


def test_a_packed_window_holds_each_clip_at_its_offset_with_timestamps(tokenizer, clips):
    lengths = label_lengths(clips, tokenizer, "es", "clips")
    window = max(pack_windows([c.duration for c in clips], lengths, seed=1), key=len)
    e = window_example(clips, window, tokenizer, "es", "clips")
    audio = np.zeros(30 * SAMPLE_RATE, np.float32)
    for i, offset in window:
        at = round(offset * SAMPLE_RATE)
        audio[at:at + len(clips[i].wave)] = clips[i].wave
    end = round(window[-1][1] * SAMPLE_RATE) + len(clips[window[-1][0]].wave)
    assert np.array_equal(e.input_features, log_mel(audio[:end]))
    segments = segments_from_tokens(_full(e), tokenizer)
    assert [t for _s, _e, t in segments] == [clips[i].text for i, _ in window]
    for (start, stop, _t), (i, offset) in zip(segments, window, strict=True):
        assert start == pytest.approx(offset, abs=1e-6)
        assert stop == pytest.approx(offset + clips[i].duration, abs=0.0101)

    # phase 2 packed: word starts read back from the labels land within the 20 ms grid
    words = window_example(clips, window, tokenizer, "es", "words")
    read_back = words_from_segments(segments_from_tokens(_full(words), tokenizer))
    truth = [[(w, offset + s) for (w, _a, _b), s in zip(text_words(clips[i].text),
                                                         clips[i].word_starts, strict=True)]
             for i, offset in window]
    err = word_start_error([[w for clip in truth for w in clip]], [read_back])
    assert err.matched == err.words and err.p90_ms <= 10.0 + 1e-6

    # phase 1 packed without timestamps: the texts run together
    text = window_example(clips, window, tokenizer, "es", "text")
    assert tokenizer.decode(_full(text), skip_special_tokens=True) == " " + " ".join(
        clips[i].text for i, _ in window)
