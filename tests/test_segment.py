"""The segment stage on eSpeak speech: truth text, utterances, loudness, workers, reruns."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import SegmentParams
from habla.manifest import Record, read_manifest, sha256_file
from habla.stages.segment import segment_all, truth_for_clip
from habla.vad import speech_bounds

SR = 22050
SENTENCES = [
    "Hola, esta es la primera frase de prueba.", "El perro corre por el parque verde.",
    "Mañana lloverá en toda la ciudad.", "Los niños juegan con una pelota roja.",
    "¿Dónde está la estación de tren?", "Me gusta mucho leer libros antiguos.",
    "La comida estaba muy rica anoche.", "Vamos a la playa el próximo verano.",
]


def render(root: Path, rid: str, sentences: list[str], pauses: list[float], seed: int,
           truth: bool = True, text: str | None = None) -> Record:
    """A recording of eSpeak sentences separated by `pauses` (s), with a truth sidecar."""
    from habla.sources.espeak import Espeak

    es = Espeak(seed)
    parts, rows, t = [np.zeros(int(pauses[0] * SR), np.float32)], [], pauses[0]
    for s, pause in zip(sentences, pauses[1:], strict=True):
        w, words = es.synthesize(s, "es-419")
        rows.append({"text": s, "start": t, "end": t + len(w) / SR,
                     "words": [{"word": x, "start": t + st} for x, st in words]})
        parts += [w, np.zeros(int(pause * SR), np.float32)]
        t += len(w) / SR + int(pause * SR) / SR
    wave = np.concatenate(parts)
    audio = root / "data/raw" / f"{rid}.wav"
    audio.parent.mkdir(parents=True, exist_ok=True)
    sf.write(audio, wave, SR, subtype="PCM_16")
    extra = {}
    if truth:
        side = audio.with_suffix(".truth.json")
        side.write_text(json.dumps({"recording_id": rid, "sentences": rows}))
        extra["truth"] = side.relative_to(root).as_posix()
    return Record(id=rid, audio=audio.relative_to(root).as_posix(), duration=len(wave) / SR,
                  sample_rate=SR, speaker="lat", language="es", source="synthetic",
                  text=text, sha256=sha256_file(audio), extra=extra)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Record]]:
    root = tmp_path_factory.mktemp("corpus")
    recs = [render(root, f"rec{k}", SENTENCES[2 * k: 2 * k + 3], [0.5, 0.6, 0.8, 0.4], seed=k)
            for k in range(3)]
    return root, recs


def copy_of(corpus, tmp_path: Path) -> tuple[Path, list[Record]]:
    root, recs = corpus
    shutil.copytree(root / "data/raw", tmp_path / "data/raw")
    return tmp_path, list(recs)


def cfg(**kw) -> SegmentParams:
    return SegmentParams(workers=1, **kw)


def test_synthetic_clips_carry_their_sentences_and_clip_relative_word_times(corpus, tmp_path):
    root, recs = copy_of(corpus, tmp_path)
    summary = segment_all(recs[:1], cfg(), root)
    clips = read_manifest(root / "data/clips/manifest.jsonl")
    truth = json.loads((root / recs[0].extra["truth"]).read_text())["sentences"]
    assert summary["clips_out"] == len(clips) >= 2 and summary["sentences_cut"] == 0
    assert " ".join(c.text for c in clips) == " ".join(s["text"] for s in truth)
    for c in clips:
        assert c.id.startswith("rec0_") and c.recording_id == "rec0"
        assert (root / c.audio).is_file() and sha256_file(root / c.audio) == c.sha256
        first = next(s for s in truth if c.text.startswith(s["text"]))
        # word times are relative to the clip: the first word starts about one margin in
        assert c.truth_words[0].start == pytest.approx(first["start"] - c.offset, abs=1e-3)
        assert 0.05 < c.truth_words[0].start < 0.2
        assert all(w.start <= w.end <= c.duration for w in c.truth_words)


def test_clip_cut_through_a_sentence_gets_no_text_and_is_counted():
    sentences = [{"text": "Uno dos.", "start": 1.0, "end": 2.0,
                  "words": [{"word": "Uno", "start": 1.0}, {"word": "dos", "start": 1.5}]},
                 {"text": "Tres.", "start": 2.5, "end": 3.0, "words": [{"word": "Tres",
                                                                        "start": 2.5}]}]
    text, words, cut = truth_for_clip(sentences, 0.9, 2.7)
    assert (text, words, cut) == (None, None, 1)
    text, words, cut = truth_for_clip(sentences, 0.9, 3.1)
    assert text == "Uno dos. Tres." and cut == 0
    assert [(w.word, w.start, w.end) for w in words] == [
        ("Uno", 0.1, 0.6), ("dos", 0.6, 1.1), ("Tres", 1.6, 2.1)]


def test_transcribed_short_recording_becomes_one_trimmed_clip_with_its_text(corpus, tmp_path):
    text = " ".join(SENTENCES[:2])
    rec = render(tmp_path, "lj1", SENTENCES[:2], [1.0, 0.6, 1.0], seed=7, truth=False,
                 text=text)
    segment_all([rec], cfg(), tmp_path)
    (clip,) = read_manifest(tmp_path / "data/clips/manifest.jsonl")
    assert clip.text == text and clip.text_source == "reference"
    assert clip.offset == pytest.approx(0.9, abs=0.03)  # 1 s of silence, 0.1 s margin kept
    assert clip.duration == pytest.approx(rec.duration - 2.0 + 0.2, abs=0.06)


def test_long_transcribed_recording_is_split_and_its_clips_get_no_text(corpus, tmp_path):
    rec = render(tmp_path, "lj2", SENTENCES[:3], [0.5, 0.7, 0.7, 0.5], seed=8, truth=False,
                 text=" ".join(SENTENCES[:3]))
    summary = segment_all([rec], cfg(max_duration=5.0), tmp_path)
    clips = read_manifest(tmp_path / "data/clips/manifest.jsonl")
    assert len(clips) >= 2 and all(c.text is None for c in clips)
    assert summary["clips_without_text"] == len(clips)
    assert all(c.duration <= 5.0 for c in clips)


def test_clips_are_16_bit_at_the_target_rate_and_speech_at_the_target_level(corpus, tmp_path):
    root, recs = copy_of(corpus, tmp_path)
    segment_all(recs[:1], cfg(sample_rate=16000, loudness_db=-20.0), root)
    for c in read_manifest(root / "data/clips/manifest.jsonl"):
        info = sf.info(root / c.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        wave, _ = sf.read(root / c.audio, dtype="float32")
        _, _, active = speech_bounds(wave, 16000)
        speech = wave[: len(active) * 160].reshape(-1, 160)[active]
        level = 20 * np.log10(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
        if c.extra["peak_limited"]:
            assert level < -20.0 and np.abs(wave).max() <= 0.9
        else:
            assert level == pytest.approx(-20.0, abs=0.3)


def test_results_do_not_depend_on_worker_count(corpus, tmp_path):
    outs = {}
    for workers in (1, 2):
        root, recs = copy_of(corpus, tmp_path / f"w{workers}")
        segment_all(recs, SegmentParams(workers=workers), root)
        clips = root / "data/clips"
        outs[workers] = {p.relative_to(clips).as_posix(): p.read_bytes()
                         for p in sorted(clips.rglob("*")) if p.is_file()}
    assert outs[1].keys() == outs[2].keys()
    assert outs[1] == outs[2]


def marker_times(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns
            for p in (root / "data/clips").glob("*/.segment.json")}


def test_rerun_skips_unchanged_recordings_and_processes_only_the_new_one(corpus, tmp_path):
    root, recs = copy_of(corpus, tmp_path)
    first = segment_all(recs[:2], cfg(), root)
    before = marker_times(root)
    again = segment_all(recs[:2], cfg(), root)
    assert (first["processed"], again["processed"], again["reused"]) == (2, 0, 2)
    assert marker_times(root) == before
    more = segment_all(recs, cfg(), root)
    assert (more["processed"], more["reused"]) == (1, 2)
    after = marker_times(root)
    assert {k: after[k] for k in before} == before and "rec2" in after
    assert more["clips_out"] == first["clips_out"] + len(
        [c for c in read_manifest(root / "data/clips/manifest.jsonl")
         if c.recording_id == "rec2"])


def test_changed_params_reprocess_and_removed_recordings_lose_their_folder(corpus, tmp_path):
    root, recs = copy_of(corpus, tmp_path)
    segment_all(recs, cfg(), root)
    out = segment_all(recs[1:], cfg(loudness_db=-26.0), root)
    assert out["processed"] == 2 and out["reused"] == 0
    assert not (root / "data/clips/rec0").exists()
    ids = {c.recording_id for c in read_manifest(root / "data/clips/manifest.jsonl")}
    assert ids == {"rec1", "rec2"}
    # workers do not change output, so they do not invalidate anything
    assert segment_all(recs[1:], SegmentParams(workers=2, loudness_db=-26.0),
                       root)["processed"] == 0


def test_a_killed_run_is_redone_where_the_marker_is_missing(corpus, tmp_path):
    root, recs = copy_of(corpus, tmp_path)
    segment_all(recs[:2], cfg(), root)
    (root / "data/clips/rec1/.segment.json").unlink()
    (root / "data/clips/rec1/rec1_0000.wav").write_bytes(b"half")
    out = segment_all(recs[:2], cfg(), root)
    assert out["processed"] == 1
    clip = next(c for c in read_manifest(root / "data/clips/manifest.jsonl")
                if c.id == "rec1_0000")
    assert sha256_file(root / clip.audio) == clip.sha256


def test_stage_entry_reads_the_raw_manifest_and_params_from_the_project_folder(
        corpus, tmp_path, monkeypatch):
    from habla.config import load_params
    from habla.manifest import write_manifest
    from habla.stages import segment

    root, recs = copy_of(corpus, tmp_path)
    write_manifest(root / "data/raw/manifest.jsonl", recs[:1])
    shutil.copy(Path(__file__).parents[1] / "params.yaml", root / "params.yaml")
    monkeypatch.chdir(root)
    params = load_params("params.yaml", {"segment.workers": 1})
    summary = segment.run(params)
    assert summary["clips_out"] == len(read_manifest("data/clips/manifest.jsonl")) > 0
    assert json.loads(Path("data/clips/summary.json").read_text())["recordings_in"] == 1
