"""The evaluate stage's orchestration, with small stand-in synthesizers and ASR injected here.

The stage itself always loads the real ones (`habla.families.load_synthesizer`, `habla.asr`);
these tests check that it pairs, scores, summarises, rejects and reports correctly.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import Params
from habla.errors import StageError
from habla.manifest import Record, read_rejects, write_manifest
from habla.model_folder import ModelInfo, save_info
from habla.report.html import strip_volatile
from habla.stages import evaluate as ev
from habla.text import cer

SR = 24000
TEXTS = ["uno dos tres", "cuatro cinco", "seis siete ocho", "nueve diez"]


def _voice(f0: float, formant: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.exp(-((h * f0 - formant) / 200) ** 2) * np.sin(2 * np.pi * h * f0 * t)
            for h in range(1, 25) if h * f0 < sr / 2)
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


class FakeSynth:
    """A stand-in for a loaded model: returns a fixed waveform per text."""

    def __init__(self, waves: dict[str, np.ndarray], sample_rate: int, name: str) -> None:
        self.waves, self.sample_rate, self.family, self.vocoder_name = waves, sample_rate, name, \
            "griffinlim"
        self.speakers: list[str | None] = []

    def synthesize(self, text: str, speaker: str | None = None) -> tuple[np.ndarray, int]:
        self.speakers.append(speaker)
        return self.waves[text], self.sample_rate


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refs = {}
    records = []
    for i, text in enumerate(TEXTS):
        wave = _voice(150 + 10 * i, 700 + 200 * i, 0.6 + 0.1 * i)
        refs[text] = wave
        path = Path(f"data/clips/c{i}.wav")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, SR, subtype="FLOAT")
        records.append(Record(id=f"c{i}", audio=str(path), duration=len(wave) / SR,
                              sample_rate=SR, speaker="lat_f2", language="es", text=text,
                              source="test", sha256="0" * 64, split="test"))
    records.append(records[0].model_copy(update={"id": "c_missing", "audio": "data/nope.wav"}))
    records.append(records[1].model_copy(update={"id": "c_blank", "text": " ¿? "}))
    write_manifest(ev.TEST_SPLIT, records)
    # base: one other voice at 16 kHz for every text; fine-tuned: the reference itself, except
    # for TEXTS[2], where it says something else entirely (noise) and must show up as worse.
    base = FakeSynth({t: _voice(100, 1500, 0.7, sr=16000) for t in TEXTS}, 16000, "base")
    noise = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    fine = FakeSynth({t: (noise if t == TEXTS[2] else refs[t]) for t in TEXTS}, SR, "fine")
    known = {w.tobytes(): t for t, w in refs.items()}

    def transcribe(waves, sample_rate):
        # Reads back exactly the reference recordings; anything else is heard as "eh".
        return [known.get(np.asarray(w, np.float32).tobytes(), "eh") for w in waves]

    params = Params.model_validate({
        "download": {"sources": [{"kind": "local", "path": "x"}]},
        # batch 1: chunks of two utterances, so scoring and trimming run over several chunks
        "asr": {"batch_size": 1},
        "evaluate": {"bootstrap_samples": 200, "samples_in_report": 2},
    })
    return params, records, base, fine, transcribe, voice_scorer()


def voice_scorer():
    from habla.wheel_data import WheelDataError

    try:
        return ev.WheelVoiceScorer()
    except WheelDataError as exc:  # the eval-models extra is part of every habla install path
        pytest.skip(str(exc))


def test_evaluate_scores_pairs_writes_metrics_csv_report_and_rejects(project):
    params, records, base, fine, transcribe, voice = project
    results = ev.evaluate(params, records, base, fine, transcribe, "fake-asr", "lat_f2",
                          voice)

    assert results["n_utterances"] == 4
    assert results["rejected"] == {"missing": 1, "no_text": 1}
    assert results["reference"]["cer"] == 0.0
    # 3 of 4 read back exactly; the fourth was heard as "eh"
    assert results["finetuned"]["cer"] == pytest.approx(cer(TEXTS[2], "eh") / 4)
    assert results["base"]["cer"] > 0.5
    d = results["delta"]["mcd"]
    assert (d["n"], d["better"], d["worse"]) == (4, 3, 1)
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert results["method"]["mcd"]["n_mels"] == 80 and results["vocoder"]["base"] == "griffinlim"
    assert base.speakers == [None] * 4 and fine.speakers == ["lat_f2"] * 4

    # the fine-tuned "voice" is the reference recording itself for 3 of 4 sentences
    rows = {}
    with open(ev.UTTERANCES_CSV, newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert float(rows["c0"]["spk_utt_finetuned"]) == pytest.approx(1.0, abs=1e-5)
    assert float(rows["c0"]["spk_utt_base"]) < 0.999
    assert float(rows["c0"]["mcd_sptk_finetuned"]) == pytest.approx(0.0, abs=1e-6)
    sim = results["delta"]["spk_utt"]
    assert sim["mean"] > 0 and (sim["better"], sim["worse"]) == (3, 1)  # higher is better
    for system in ("reference", "base", "finetuned"):
        assert 1.0 <= results[system]["dnsmos_ovrl"] <= 5.0
        ci = results["ci"][system]["dnsmos_ovrl"]
        assert ci["ci_low"] <= results[system]["dnsmos_ovrl"] <= ci["ci_high"]
    headline = json.loads(ev.EVAL_JSON.read_text())
    assert set(headline) == {"utterances", "reference", "base", "finetuned"}
    assert sum(len(v) for v in headline.values() if isinstance(v, dict)) <= 15
    assert json.loads(ev.EVAL_DETAILS.read_text())["delta"]["spk_sim"]["n"] == 4

    # the reference recordings read back perfectly: no finite ratio to them
    assert results["vs_reference"]["finetuned"]["cer"] is None

    saved = json.loads(ev.EVAL_DETAILS.read_text())
    assert saved["delta"]["cer"]["better"] == 3
    with open(ev.UTTERANCES_CSV, newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"c0", "c1", "c2", "c3"}
    assert float(rows["c0"]["mcd_finetuned"]) == pytest.approx(0.0, abs=1e-3)
    assert float(rows["c2"]["mcd_finetuned"]) > float(rows["c2"]["mcd_base"])
    assert float(rows["c0"]["duration_ratio_base"]) == pytest.approx(0.7 / 0.6, rel=1e-3)
    # machine-dependent figures stay out of the tracked files (a rerun must not change them)
    assert not any(k.startswith("rtf") for k in rows["c1"]) and "seconds" not in saved
    assert results["timing"]["rtf_base"] >= 0

    page = (ev.REPORT_DIR / "index.html").read_text()
    assert page.count("<audio") == 3 * 3  # two samples + the one that got worse
    assert "c2" in page.split("Samples")[0]  # listed under "got worse"
    for href in ("audio/c0.reference.wav", "audio/c1.fine-tuned.wav", "audio/c2.base.wav"):
        assert (ev.REPORT_DIR / href).is_file()
    assert not (ev.REPORT_DIR / "audio" / "c3.base.wav").exists()  # not shown, not kept
    reasons = sorted(r.reason for r in read_rejects(ev.REPORT_DIR / "rejects.jsonl"))
    assert reasons == ["missing", "no_text"]


def test_a_rerun_writes_the_same_files_apart_from_the_volatile_header(project):
    """A forced rerun of evaluate must give identical outputs (DVC would see a change
    otherwise): only the report's data-volatile parts (date, durations, ...) may differ."""
    params, records, base, fine, transcribe, voice = project
    ev.MERGED_MODEL.mkdir(parents=True)
    save_info(ev.MERGED_MODEL, ModelInfo(family="fastspeech2", speaker="lat_f2"))
    (ev.MERGED_MODEL / "README.md").write_text("# habla model\n\n## How to load\n\nx\n")

    def outputs() -> dict[str, bytes]:
        files = [ev.EVAL_JSON, ev.EVAL_DETAILS, ev.UTTERANCES_CSV,
                 *sorted(p for p in ev.REPORT_DIR.rglob("*") if p.is_file())]
        return {str(p): p.read_bytes() for p in files}

    ev.evaluate(params, records, base, fine, transcribe, "fake-asr", "lat_f2", voice)
    first = outputs()
    Path("logs").mkdir()
    Path("logs/merge.json").write_text('{"stage": "merge", "seconds": 12.0}')  # a new log
    ev.evaluate(params, records, base, fine, transcribe, "fake-asr", "lat_f2", voice)
    second = outputs()
    page = str(ev.REPORT_DIR / "index.html")
    assert first[page] != second[page]  # the header moved on (durations, the merge log)
    assert strip_volatile(first.pop(page).decode()) == strip_volatile(second.pop(page).decode())
    assert first == second
    card = (ev.REPORT_DIR / "model_card.md").read_text()
    assert card.startswith("---\nlicense: other") and "## Evaluation" in card
    html = ev.REPORT_DIR.joinpath("index.html").read_text()
    assert 'id="row-c2"' in html and 'class="w-sub"' in html  # c2 was heard as "eh"


def test_adapted_speaker_comes_from_params_then_the_model_then_the_test_split(project):
    params, records = project[0], project[1]
    assert ev.adapted_speaker(params, records, Path("nowhere")) == "lat_f2"  # most frequent
    Path("m").mkdir()
    save_info(Path("m"), ModelInfo(family="fastspeech2", default_speaker="es_m3"))
    assert ev.adapted_speaker(params, records, Path("m")) == "es_m3"
    params.model.speaker = "otra"
    assert ev.adapted_speaker(params, records, Path("m")) == "otra"


def test_max_utterances_picks_the_same_subset_for_the_same_seed():
    recs = [Record(id=f"r{i:02d}", audio="a.wav", duration=1, sample_rate=SR, speaker="s",
                   language="es", source="t", sha256="0" * 64) for i in range(20)]
    first = [r.id for r in ev.select(recs, 5, seed=3)]
    assert first == [r.id for r in ev.select(list(reversed(recs)), 5, seed=3)]
    assert first != [r.id for r in ev.select(recs, 5, seed=4)]
    assert len(ev.select(recs, None, 3)) == 20 and first == sorted(first)


def test_a_synthesizer_that_returns_nothing_is_scored_as_silence_not_dropped(project):
    params, records, base, fine, transcribe, voice = project
    fine.waves[TEXTS[1]] = np.zeros(0, np.float32)
    results = ev.evaluate(params, records, base, fine, transcribe, "fake-asr", "lat_f2",
                          voice)
    assert results["n_utterances"] == 4
    with open(ev.UTTERANCES_CSV, newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["id"] == "c1")
    assert float(row["duration_finetuned"]) == pytest.approx(1024 / SR, abs=1e-4)
    assert float(row["mcd_finetuned"]) > 1.0 and float(row["cer_finetuned"]) > 0.5
    assert float(row["spk_sim_finetuned"]) == 0.0  # silence is nobody's voice


def test_nan_audio_from_a_model_stops_the_stage_with_its_name(project):
    params, records, base, fine, transcribe, voice = project
    fine.waves[TEXTS[0]] = np.full(100, np.nan, np.float32)
    with pytest.raises(StageError, match="fine: synthesis of 'uno dos tres' produced NaN"):
        ev.evaluate(params, records, base, fine, transcribe, "fake-asr", "lat_f2",
                          voice)


def test_run_refuses_model_folders_without_habla_json(project):
    params = project[0]
    Path("models/base").mkdir(parents=True)
    with pytest.raises(StageError, match="models/base: not a habla model folder"):
        ev.run(params)


def test_run_without_a_merged_model_says_which_stage_to_run(project):
    params = project[0]
    with pytest.raises(StageError, match="models/merged: no merged model.*merge stage"):
        ev.run(params)


@pytest.mark.slow
def test_run_end_to_end_with_real_model_folders_and_whisper(tmp_path, monkeypatch):
    """The real wiring: load_synthesizer on tiny random speecht5 folders, faster-whisper."""
    pytest.importorskip("habla.families.speecht5")
    from test_speecht5 import TEXTS as T5_TEXTS
    from test_speecht5 import make_base

    from habla.families.speecht5 import SpeechT5Family
    from habla.tokenizer import save_tokenizer, train_tokenizer

    monkeypatch.chdir(tmp_path)
    make_base(tmp_path / "raw")
    save_tokenizer(train_tokenizer(T5_TEXTS * 5, "char"), tmp_path / "tok")
    family = SpeechT5Family()
    model = family.load_base(str(tmp_path / "raw"))
    family.hook_tokenizer(model, tmp_path / "tok", str(tmp_path / "raw"))
    family.add_speaker(model, "lat_f2")
    for out in (Path("models/base"), ev.MERGED_MODEL):  # models/base: model.base default
        family.save_merged(model, out)
        save_tokenizer((tmp_path / "tok/spm.model").read_bytes(), out / "tokenizer")
        save_info(out, family.info)
    records = []
    for i, text in enumerate(T5_TEXTS[:2]):
        wave = _voice(140 + 20 * i, 800, 0.8)
        path = Path(f"data/clips/t{i}.wav")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, SR)
        records.append(Record(id=f"t{i}", audio=str(path), duration=0.8, sample_rate=SR,
                              speaker="lat_f2", language="es", text=text, source="test",
                              sha256="0" * 64, split="test"))
    write_manifest(ev.TEST_SPLIT, records)
    params = Params.model_validate({
        "download": {"sources": [{"kind": "local", "path": "x"}]},
        "asr": {"cpu_threads": 1}, "model": {"speaker": "lat_f2"},
        "evaluate": {"bootstrap_samples": 100},
    })
    summary = ev.run(params)
    assert summary["utterances"] == 2
    results = json.loads(ev.EVAL_DETAILS.read_text())
    assert results["family"]["finetuned"] == "speecht5"
    assert results["vocoder"]["base"] == family.info.vocoder
    # identical folders, seeded synthesis: fine-tuned and base must score the same
    assert results["delta"]["mcd"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert (ev.REPORT_DIR / "index.html").is_file()


def test_summary_gives_each_system_its_ratio_to_the_reference_recordings():
    rows = []
    for i in range(20):
        ref = 0.1 + 0.01 * i
        rows.append({"cer_reference": ref, "wer_reference": 2 * ref,
                     "cer_base": 2 * ref, "wer_base": 4 * ref,
                     "cer_finetuned": 1.1 * ref, "wer_finetuned": 2.2 * ref,
                     **{f"{m}_{s}": 1.0 for m in ev.MEASURES if m not in ("cer", "wer")
                        for s in ("base", "finetuned", "reference")},
                     **{f"duration_ratio_{s}": 1.0 for s in ("base", "finetuned")}})
    out = ev.summarise(rows, samples=200, seed=0)
    ft, base = out["vs_reference"]["finetuned"]["cer"], out["vs_reference"]["base"]["cer"]
    assert ft["ratio"] == pytest.approx(1.1) and base["ratio"] == pytest.approx(2.0)
    assert ft["ci_low"] == pytest.approx(1.1) and ft["n"] == 20
    assert out["vs_reference"]["finetuned"]["wer"]["ratio"] == pytest.approx(1.1)
