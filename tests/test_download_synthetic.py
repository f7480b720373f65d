"""The synthetic source: reproducible recordings whose truth sidecars match the audio."""

import json

import numpy as np
import pytest
import soundfile as sf

from habla.config import SyntheticSource
from habla.errors import StageError
from habla.sources import synthetic
from habla.sources.espeak import text_words
from habla.sources.sentences import sentence


def _source(**kw) -> SyntheticSource:
    defaults = {
        "kind": "synthetic", "name": "demo",
        "voices": [{"speaker": "ana", "voice": "es-419+f2", "rate": 170, "pitch": 75},
                   {"speaker": "luis", "voice": "es", "rate": 180}],
        "sentences": 10, "recording_seconds": (6.0, 12.0), "pause_seconds": (0.3, 0.8),
    }
    return SyntheticSource(**{**defaults, **kw})


def _render(tmp_path, name, workers, **kw):
    src = _source(**kw)
    target = tmp_path / name / "demo"
    synthetic.fetch(src, target, seed=5, workers=workers)
    return src, target, synthetic.prepare(src, target)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same corpus rendered with one worker and with two (3 units per voice)."""
    tmp = tmp_path_factory.mktemp("synthetic")
    mp = pytest.MonkeyPatch()
    mp.setattr(synthetic, "UNIT_SENTENCES", 2)  # several units per voice, planned in-process
    try:
        one = _render(tmp, "one", workers=1)
        two = _render(tmp, "two", workers=2)
    finally:
        mp.undo()
    return one, two


def test_corpus_is_byte_identical_with_one_or_two_workers(corpora):
    (_, t1, r1), (_, t2, r2) = corpora
    assert [r.sha256 for r in r1.records] == [r.sha256 for r in r2.records]
    for rec in r1.records:
        name = rec.id + ".truth.json"
        assert (t1 / name).read_bytes() == (t2 / name).read_bytes()


def test_each_sentence_is_used_once_split_across_voices(corpora):
    (src, target, result), _ = corpora
    used = {}
    for rec in result.records:
        truth = json.loads((target / f"{rec.id}.truth.json").read_text("utf-8"))
        for s in truth["sentences"]:
            assert s["text"] == sentence(s["index"])
            used.setdefault(rec.speaker, []).append(s["index"])
    everything = sorted(i for ids in used.values() for i in ids)
    assert everything == list(range(src.sentences))
    assert sorted(used) == ["ana", "luis"] and all(len(v) == 5 for v in used.values())


def test_truth_sidecar_times_match_the_audio(corpora):
    (_, target, result), _ = corpora
    for rec in result.records:
        assert rec.sample_rate == 22050 and rec.extra["truth"].endswith(".truth.json")
        assert sf.info(rec.audio).subtype == "PCM_16"
        wave, rate = sf.read(rec.audio, dtype="int16")
        truth = json.loads((target / f"{rec.id}.truth.json").read_text("utf-8"))
        assert truth["recording_id"] == rec.id
        previous_end = 0
        for s in truth["sentences"]:
            a, b = round(s["start"] * rate), round(s["end"] * rate)
            assert a >= previous_end and b <= len(wave)
            assert not wave[previous_end:a].any()  # the pause before it is silent
            speech = wave[a:b]
            assert np.abs(speech).max() > 1000  # and the sentence itself is loud
            assert [w["word"] for w in s["words"]] == [w for w, _, _ in text_words(s["text"])]
            starts = [w["start"] for w in s["words"]]
            assert starts == sorted(starts) and s["start"] <= starts[0] and starts[-1] < s["end"]
            previous_end = b
        assert not wave[previous_end:].any()  # lead-out silence
        assert rec.text == " ".join(s["text"] for s in truth["sentences"])


def test_recordings_respect_the_length_range_except_a_final_tail(corpora):
    (src, _, result), _ = corpora
    low, high = src.recording_seconds
    for speaker in ("ana", "luis"):
        lengths = [r.duration for r in result.records if r.speaker == speaker]
        assert len(lengths) >= 2
        # a single sentence can overshoot the target; lead-in/out adds up to 0.75 s
        assert all(d <= high + 6 for d in lengths)
        assert all(d >= low - 0.75 for d in lengths[:-1])


def test_first_sentence_draws_a_disjoint_range(tmp_path):
    src, target, result = _render(tmp_path, "offset", workers=1, first_sentence=1000,
                                  sentences=3, voices=[{"speaker": "x", "voice": "es"}])
    indices = []
    for rec in result.records:
        truth = json.loads((target / f"{rec.id}.truth.json").read_text("utf-8"))
        indices += [s["index"] for s in truth["sentences"]]
    assert indices == [1000, 1001, 1002]


def test_misspelt_voice_stops_with_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="synthetic source 'demo'.*es-419\\+f99"):
        _render(tmp_path, "bad", workers=1, sentences=1,
                voices=[{"speaker": "x", "voice": "es-419+f99"}])


def test_bad_ranges_and_repeated_speakers_are_refused_by_the_schema():
    with pytest.raises(ValueError, match="pause_seconds"):
        _source(pause_seconds=(1.0, 0.5))
    with pytest.raises(ValueError, match="own speaker"):
        _source(voices=[{"speaker": "a", "voice": "es"}, {"speaker": "a", "voice": "es+f2"}])


def test_speakers_whose_file_names_would_clash_are_refused(tmp_path):
    src = _source(voices=[{"speaker": "Ana M", "voice": "es"}, {"speaker": "ana_m", "voice": "es"}])
    with pytest.raises(StageError, match="'Ana M' and 'ana_m' give the same file names"):
        synthetic.fetch(src, tmp_path / "demo", seed=1)
