"""Forced alignment (Whisper default, CTC alternative) and the timestamps stage."""

import json
from pathlib import Path

import numpy as np
import pytest

from habla.align import CtcAligner, align_whisper, aligned_fraction
from habla.asr import load_asr
from habla.audio import resample, write_wav
from habla.config import AsrParams, ParamsError, load_params
from habla.manifest import Record, Word, read_manifest, read_rejects, sha256_file, write_manifest
from habla.sources.espeak import Espeak
from habla.stages import timestamps
from habla.text import words as text_words

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
BASE = PARAMS.parent / "models" / "base"
SENTENCES = [("El perro corre por el parque todas las mañanas.", "es-419+klatt"),
             ("¿Dónde está la biblioteca de la ciudad?", "es-419+f2"),
             ("Mañana iremos a la playa con mis amigos.", "es+m3")]
LEAD = 0.25  # silence before speech, as segment leaves a margin


@pytest.fixture(scope="module")
def clips():
    """(24 kHz wave, text, true word starts) per sentence."""
    tts = Espeak(seed=5)
    out = []
    for text, voice in SENTENCES:
        wave, starts = tts.synthesize(text, voice, 140, 60)
        wave = resample(wave, tts.sample_rate, 24000)
        pad = np.zeros(int(LEAD * 24000), np.float32)
        out.append((np.concatenate([pad, wave, pad]), text, [(w, s + LEAD) for w, s in starts]))
    return out


def start_errors_ms(aligned, truth):
    return [abs(w.start - s) * 1000 for w, (_n, s) in zip(aligned, truth, strict=True)
            if w.aligned]


def test_whisper_alignment_lands_within_150_ms_median_of_espeak_word_starts(clips):
    aligned = align_whisper(load_asr(AsrParams()), [c[0] for c in clips], 24000,
                            [c[1] for c in clips], "es")
    errors = []
    for words, (wave, text, truth) in zip(aligned, clips, strict=True):
        assert [w.word for w in words] == [w for w, _a, _b in text_words(text)]
        assert aligned_fraction(words) == 1.0
        starts = [w.start for w in words]
        assert starts == sorted(starts)
        assert all(0 <= w.start < w.end <= len(wave) / 24000 for w in words)
        assert all(0 <= w.confidence <= 1 for w in words)
        errors += start_errors_ms(words, truth)
    assert np.median(errors) < 150, errors
    # the leading silence is not given to the first word
    assert all(abs(words[0].start - truth[0][1]) < 0.15 for words, (_w, _t, truth)
               in zip(aligned, clips, strict=True))


def test_text_far_longer_than_the_audio_is_flagged_not_given_invented_times(clips):
    wave = clips[0][0][: 24000 // 2]  # half a second for a long paragraph
    text = " ".join(t for t, _v in SENTENCES) * 2
    [words] = align_whisper(load_asr(AsrParams()), [wave], 24000, [text], "es")
    assert aligned_fraction(words) < 0.8
    assert all(w.start is None and w.end is None for w in words if not w.aligned)


def write_project(root: Path, clips, extra: list[Record] = ()) -> None:
    records = []
    for i, (wave, text, truth) in enumerate(clips):
        path = root / "data" / "clips" / f"c{i}.wav"
        write_wav(path, wave, 24000)
        records.append(Record(
            id=f"c{i}", audio=str(path.relative_to(root)), duration=len(wave) / 24000,
            sample_rate=24000, speaker="s1", language="es", text=text, source="synthetic",
            sha256=sha256_file(path), text_source="reference",
            truth_words=[Word(word=w, start=s) for w, s in truth]))
    write_manifest(root / timestamps.IN, [*records, *extra])


@pytest.mark.parametrize("method,median_ms", [("whisper", 150), ("tts", 40)])
def test_stage_writes_word_times_and_rejects_clips_it_cannot_align(tmp_path, clips,
                                                                   monkeypatch, method,
                                                                   median_ms):
    wave, _text, _truth = clips[0]
    short = tmp_path / "data" / "clips" / "short.wav"
    write_wav(short, wave[:12000], 24000)
    too_long_text = Record(
        id="short", audio="data/clips/short.wav", duration=0.5, sample_rate=24000,
        speaker="s1", language="es", text=" ".join(t for t, _v in SENTENCES) * 2,
        source="synthetic", sha256=sha256_file(short), text_source="reference")
    write_project(tmp_path, clips, [too_long_text])
    params = load_params(PARAMS, overrides={"timestamps.method": method,
                                            "model.base": str(BASE)})
    monkeypatch.chdir(tmp_path)
    summary = timestamps.run(params)

    kept = read_manifest(tmp_path / "data/labels/aligned.jsonl")
    assert [r.id for r in kept] == ["c0", "c1", "c2"]
    assert all(r.aligned_fraction == 1.0 and len(r.words) == len(r.truth_words) for r in kept)
    [reject] = read_rejects(tmp_path / "data/labels/timestamps_rejects.jsonl")
    assert reject.item == "short" and reject.reason == "low_aligned_fraction"
    assert summary["clips_kept"] == 3 and summary["rejects"] == {"low_aligned_fraction": 1}
    assert summary["truth_words_compared"] == sum(len(c[2]) for c in clips)
    assert summary["method"] == method
    assert summary["start_error_ms_median"] < median_ms
    on_disk = json.loads((tmp_path / "data/labels/timestamps_summary.json").read_text())
    assert on_disk["words_aligned"] == summary["words"]
    # only alignment by synthesis places letters; each word then has one time per letter
    with_letters = [w for r in kept for w in r.words if w.letters]
    assert summary["words_with_letter_times"] == len(with_letters)
    assert len(with_letters) == (summary["words"] if method == "tts" else 0)
    assert all(w.start == w.letters[0] and w.letters == sorted(w.letters)
               and w.letters[-1] <= w.end for w in with_letters)


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    """A random wav2vec2 CTC model + processor saved to a folder (code path, not accuracy)."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = tmp_path_factory.mktemp("ctc")
    letters = list("abcdefghijklmnopqrstuvwxyzñ'")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(letters)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=37, conv_dim=(16,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            pad_token_id=0)
    import torch

    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def test_ctc_aligner_loads_a_saved_wav2vec2_folder_and_places_every_word(tiny_ctc, clips):
    wave, text, _truth = clips[1]
    words = CtcAligner(str(tiny_ctc)).align(wave, 24000, text)
    assert [w.word for w in words] == [w for w, _a, _b in text_words(text)]
    assert aligned_fraction(words) == 1.0
    ends = [(w.start, w.end) for w in words]
    assert all(0 <= a < b <= len(wave) / 24000 for a, b in ends)
    assert all(b1 <= a2 for (_a1, b1), (a2, _b2) in zip(ends, ends[1:], strict=False))


def test_ctc_cannot_fit_a_long_text_into_a_tenth_of_a_second(tiny_ctc, clips):
    words = CtcAligner(str(tiny_ctc)).align(clips[0][0][:2400], 24000, clips[0][1])
    assert aligned_fraction(words) == 0.0 and all(w.start is None for w in words)


def test_stage_runs_the_ctc_method_named_in_params(tmp_path, tiny_ctc, clips, monkeypatch):
    write_project(tmp_path, clips[:1])
    params = load_params(PARAMS, overrides={"timestamps.method": "ctc",
                                            "timestamps.ctc_model": str(tiny_ctc)})
    monkeypatch.chdir(tmp_path)
    summary = timestamps.run(params)
    assert summary["method"] == "ctc" and summary["clips_kept"] == 1
    [rec] = read_manifest(tmp_path / "data/labels/aligned.jsonl")
    assert len(rec.words) == len(text_words(rec.text))


def test_tts_method_with_a_missing_base_model_stops_naming_it(tmp_path, clips, monkeypatch):
    from habla.errors import StageError

    write_project(tmp_path, clips[:1])
    params = load_params(PARAMS, overrides={"timestamps.method": "tts",
                                            "model.base": str(tmp_path / "no-such-model")})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="no-such-model"):
        timestamps.run(params)
    assert not (tmp_path / "data/labels/aligned.jsonl").exists()


def test_ctc_method_without_a_model_is_a_params_error():
    with pytest.raises(ParamsError, match="ctc_model"):
        load_params(PARAMS, overrides={"timestamps.method": "ctc"})


def test_tts_base_renders_with_its_own_family_whatever_model_base_is(tmp_path, clips,
                                                                     monkeypatch):
    """An ASR recipe (model.base: Whisper) aligns by synthesis with a TTS model named in
    timestamps.tts_base; its family comes from that folder's habla.json."""
    write_project(tmp_path, clips[:2])
    params = load_params(PARAMS, overrides={
        "timestamps.method": "tts", "timestamps.tts_base": str(BASE),
        "model.family": "whisper", "model.base": "whisper-base"})
    monkeypatch.chdir(tmp_path)
    summary = timestamps.run(params)
    assert summary["model"] == f"fastspeech2:{BASE}" and summary["clips_kept"] == 2
    assert summary["start_error_ms_median"] < 40

    params.timestamps.tts_base = str(tmp_path / "no-such-model")
    from habla.model_folder import ModelFolderError

    with pytest.raises(ModelFolderError, match="no-such-model"):
        timestamps.run(params)
