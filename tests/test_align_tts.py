"""Alignment by synthesis (habla.align_tts): DTW against the base model's own rendering."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from habla.align_tts import TtsAligner, dtw_frames
from habla.families import get_family
from habla.text import words as text_words
from habla.vocoder import griffin_lim

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
TEXT = "Mañana por la tarde, cuarenta ratones pequeños cruzan el río despacio."
LEAD = 0.37  # seconds of silence before the speech, more than segment's margin


@pytest.fixture(scope="module")
def aligner():
    return TtsAligner("fastspeech2", str(BASE))


@pytest.fixture(scope="module")
def clip(aligner):
    """A clip spoken by the base's male voice, with its true word starts from the durations
    that voice was rendered with."""
    names = [w for w, _a, _b in text_words(TEXT)]
    mel, spans, letters = aligner.family.timed_mel(aligner.model, TEXT, names, "cast_klatt_m")
    spec = aligner.spec
    wave = griffin_lim(mel, spec, n_iter=32)
    hop = spec.hop_length / spec.sample_rate
    lead = np.zeros(int(LEAD * spec.sample_rate), np.float32)
    wave = np.concatenate([lead, wave, lead[: len(lead) // 2]])
    starts = [LEAD + s[0] * hop for s in spans]
    letter_starts = [[LEAD + f * hop for f in frames] for frames in letters]
    return wave, spec.sample_rate, starts, letter_starts


def test_timed_mel_gives_every_letter_of_every_word_a_first_frame(aligner):
    names = [w for w, _a, _b in text_words(TEXT)]
    _mel, spans, letters = aligner.family.timed_mel(aligner.model, TEXT, names, "cast_f4")
    # the base's tokenizer is char-level: one first frame per letter, inside the word
    assert [len(f) for f in letters] == [len(n.strip(".,")) for n in names]
    for (start, end), frames in zip(spans, letters, strict=True):
        assert frames[0] == start and frames == sorted(frames) and frames[-1] < end


def test_every_word_is_placed_near_where_it_was_spoken_by_another_voice(aligner, clip):
    wave, rate, starts, _letters = clip
    # rendered by the female voice, aligned against the male one: DTW absorbs the speaker
    result = aligner.align(wave, rate, TEXT, "cast_f4")
    assert [w.word for w in result.words] == [w for w, _a, _b in text_words(TEXT)]
    assert all(w.aligned for w in result.words)
    errors = np.abs(np.array([w.start for w in result.words]) - np.array(starts)) * 1000
    assert np.median(errors) < 25 and errors.max() < 120, errors.round()
    # the leading silence is not given to the first word
    assert abs(result.words[0].start - starts[0]) < 0.03 and starts[0] >= LEAD
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(result.words))
    assert all(0 <= w.start < w.end <= len(wave) / rate for w in result.words)
    assert 0 < result.similarity <= 1 and all(-1 <= w.confidence <= 1 for w in result.words)


def test_letters_are_placed_near_where_they_were_spoken_by_another_voice(aligner, clip):
    wave, rate, _starts, letter_starts = clip
    result = aligner.align(wave, rate, TEXT, "cast_f4")
    placed = [t for w in result.words for t in w.letters]
    truth = [t for word in letter_starts for t in word]
    assert len(placed) == len(truth)
    errors = np.abs(np.array(placed) - np.array(truth)) * 1000
    assert np.median(errors) < 25, errors.round()
    for w in result.words:  # inside its word, in order
        assert w.letters[0] == w.start and w.letters == sorted(w.letters)
        assert w.letters[-1] <= w.end


def test_the_speaker_who_said_it_matches_best(aligner, clip):
    wave, rate, _starts, _letters = clip
    costs = {s: aligner.align(wave, rate, TEXT, s).cost for s in aligner.family.speakers()}
    assert min(costs, key=costs.get) == "cast_klatt_m", costs
    chosen = aligner.speaker_for("someone", [(wave, rate, TEXT)])
    assert chosen == "cast_klatt_m" and aligner.choices == {"someone": "cast_klatt_m"}


def test_a_text_far_longer_than_the_clip_leaves_words_unaligned(aligner, clip):
    wave, rate, _starts, _letters = clip
    result = aligner.align(wave[: rate // 2], rate, " ".join([TEXT] * 4))
    assert sum(w.aligned for w in result.words) < 0.8 * len(result.words)
    assert all(w.start is None for w in result.words if not w.aligned)


def test_dtw_frames_maps_a_time_stretched_copy_back_onto_itself():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 8))
    b = np.repeat(a, 2, axis=0)  # every frame twice as long
    first, last, sim, _cost = dtw_frames(a, b)
    assert first.tolist() == list(range(0, 80, 2)) and last.tolist() == list(range(1, 80, 2))
    assert np.allclose(sim, 1.0)


def test_an_unknown_base_speaker_is_named_with_the_choices():
    with pytest.raises(ValueError, match="cast_f4"):
        TtsAligner("fastspeech2", str(BASE), speaker="nadie")


def test_a_family_without_durations_says_which_methods_to_use():
    with pytest.raises(NotImplementedError, match="whisper' or 'ctc'"):
        get_family("speecht5").timed_mel(None, "hola", ["hola"])
