"""The whisper family through the real stages, on a tiny random Whisper saved as a
transformers folder (the hub path, offline) and as a CTranslate2 folder: packing, both LoRA
phases, exact resume after a kill, merge parity and the export, evaluation and the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_whisper import make_asr_project, tiny_whisper

from habla.config import FAMILY_TASKS, Params, ParamsError, load_params
from habla.families import FAMILIES, get_family
from habla.manifest import read_manifest, sha256_file
from habla.whisper_ct2 import export_ct2, load_whisper, state_dict_equal

REPO = Path(__file__).resolve().parents[1]
SMALL = {"max_steps": 2, "warmup_steps": 1, "batch_size": 2, "eval_every": 1, "save_every": 1,
         "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}


def params(base: str = "tiny-hf", **sections) -> Params:
    return Params.model_validate({
        "seed": 3, "lr": 3e-3, "download": {"sources": [{"kind": "local", "path": "raw"}]},
        "model": {"family": "whisper", "base": base},
        "asr": {"cpu_threads": 1, "batch_size": 1, "max_new_tokens": 24},
        "phase1": SMALL, "phase2": SMALL, "merge": {"parity_utterances": 2},
        "evaluate": {"bootstrap_samples": 200, "samples_in_report": 2}, **sections})


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """tiny-hf/ and tiny-ct2/ (the same random Whisper) and data/splits with clips."""
    root = tmp_path_factory.mktemp("asr")
    tiny_whisper(root / "tiny-hf")
    export_ct2(root / "tiny-hf", root / "tiny-ct2", "float32")
    make_asr_project(root, n_train=8, n_val=2, n_test=3)
    return root


@pytest.fixture()
def project(template, tmp_path, monkeypatch):
    root = tmp_path / "p"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def trained(template, tmp_path_factory):
    """A project after phase1, phase2 and merge (read-only: copy before changing it)."""
    from habla.stages import merge, phase1, phase2

    root = tmp_path_factory.mktemp("trained") / "p"
    shutil.copytree(template, root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        before = sha256_file(root / "tiny-hf/model.safetensors")
        summaries = [stage.run(params()) for stage in (phase1, phase2, merge)]
        assert sha256_file(root / "tiny-hf/model.safetensors") == before  # never written to
    finally:
        os.chdir(cwd)
    return root, summaries


def test_every_family_declares_the_task_the_params_schema_gives_it():
    assert {name: cls.task for name, cls in FAMILIES.items()} == FAMILY_TASKS


def test_the_whisper_params_section_is_typed_and_names_the_fix(tmp_path):
    minimal = "download:\n  sources:\n    - {kind: local, path: raw}\n"
    path = tmp_path / "params.yaml"
    path.write_text(minimal + "whisper:\n  pack: false\n  pack_gap: [0.5, 0.1]\n")
    with pytest.raises(ParamsError, match=r"'whisper'.*pack_gap must be \[min, max\]"):
        load_params(path)
    path.write_text(minimal + "whisper:\n  phase2_labels: letters\n")
    with pytest.raises(ParamsError, match=r"'whisper.phase2_labels' = 'letters'.*'words'"):
        load_params(path)
    path.write_text(minimal + "whisper:\n  packing: true\n")
    with pytest.raises(ParamsError, match=r"unknown key 'whisper.packing'.*pack_gap"):
        load_params(path)
    # what `dvc exp run -S whisper.pack=false -S whisper.pack_gap=[0,0.5]` writes
    path.write_text(minimal + "whisper:\n  pack: 'false'\n  pack_gap: ['0', '0.5']\n")
    w = load_params(path).whisper
    assert w.pack is False and w.pack_gap == (0.0, 0.5)
    assert load_params(REPO / "recipes/asr-es419/params.yaml").model.task == "asr"


def test_packing_fills_windows_and_phase2_labels_put_timestamps_at_word_starts(project):
    family = get_family("whisper")
    family.configure(params(whisper={"phase2_text_windows": 0.0}), "phase1")
    model = family.load_base("tiny-hf")
    records = read_manifest("data/splits/train.jsonl")
    spec = family.features(model)
    one = family.make_examples(records, None, spec, phase=1)
    assert 1 < len(one) < len(records)  # several ~5-s clips per 30-s window
    assert sorted(c for e in one for c in e["clips"]) == sorted(r.id for r in records)
    again = family.make_examples(records, None, spec, phase=1)
    assert [e["clips"] for e in again] == [e["clips"] for e in one]  # seeded: the same plan
    words = family.make_examples(records[:1], None, spec, phase=2)[0]["example"]
    begin = family.tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    stamps = [t - begin for t in words.decoder_input_ids if t >= begin]
    starts = [w.start for w in records[0].words]
    # a segment per word: its start token, then its end (= the next word's start) token
    assert stamps[0::2] == [round(s / 0.02) for s in starts]
    text = family.make_examples(records[:1], None, spec, phase=1)[0]["example"]
    assert not any(t >= begin for t in text.decoder_input_ids[4:])  # <|notimestamps|> mode


def test_phase2_keeps_a_seeded_share_of_plain_text_windows(project):
    family = get_family("whisper")
    records = read_manifest("data/splits/train.jsonl") * 3  # enough windows to share
    begin = 50364  # <|0.00|>

    def text_windows(share: float) -> list[bool]:
        family.configure(params(whisper={"phase2_text_windows": share}), "phase1")
        spec = family.features(family.load_base("tiny-hf"))
        return [not any(t >= begin for t in e["example"].decoder_input_ids)
                for e in family.make_examples(records, None, spec, phase=2)]

    assert not any(text_windows(0.0)) and all(text_windows(1.0))
    half = text_windows(0.5)
    assert 0 < sum(half) < len(half) and half == text_windows(0.5)


def test_a_clip_without_word_times_is_rejected_for_phase2_not_invented(project):
    from habla.manifest import Rejects

    family = get_family("whisper")
    family.configure(params(), "phase1")
    spec = family.features(family.load_base("tiny-hf"))
    rec = read_manifest("data/splits/train.jsonl")[0]
    rec.words[2].aligned, rec.words[2].start = False, None
    rejects = Rejects("phase2")
    assert family.make_examples([rec], None, spec, phase=2, rejects=rejects) == []
    assert rejects.counts() == {"no_training_target": 1}
    assert len(family.make_examples([rec], None, spec, phase=1)) == 1  # phase 1 needs text


def test_phases_train_every_attention_projection_and_keep_whispers_tokenizer(trained):
    root, (s1, s2, _merge) = trained
    for phase, summary in ((1, s1), (2, s2)):
        assert summary["steps"] == 2 and np.isfinite(summary["best_val_loss"])
        metrics = json.loads((root / f"metrics/phase{phase}.json").read_text())
        assert metrics["train_clips"] == 8 and metrics["train_windows"] < 8  # packed
        info = json.loads((root / f"models/phase{phase}/habla.json").read_text())
        assert info["family"] == "whisper" and info["task"] == "asr"
        assert info["tokenizer"]["applies"] is False
        assert info["settings"]["language"] == "es" and info["settings"]["pack"] is True
        assert not (root / f"models/phase{phase}/tokenizer").exists()
    info = json.loads((root / "models/phase2/habla.json").read_text())
    assert info["adapter_chain"] == ["chain/phase1_0", "adapter"]
    assert info["lora"]["target_modules"] == ["k_proj", "out_proj", "q_proj", "v_proj"]
    assert info["base"]["sha256"] == sha256_file(root / "tiny-hf/model.safetensors")


def test_the_same_code_trains_from_a_ctranslate2_base(project):
    from habla.stages import phase1

    # the rebuild from CTranslate2 is exact (tests/test_whisper_ct2.py), so it trains alike
    assert state_dict_equal(load_whisper("tiny-hf").model, load_whisper("tiny-ct2").model) == []
    summary = phase1.run(params(base="tiny-ct2", phase1={**SMALL, "max_steps": 1}))
    info = json.loads(Path("models/phase1/habla.json").read_text())
    assert summary["steps"] == 1 and info["base"]["path"] == "tiny-ct2"
    assert info["base"]["sha256"] == sha256_file("tiny-ct2/model.bin")


def _run_phase1(root: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    env.pop("HABLA_KILL_AT", None)
    if kill_at:
        env["HABLA_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", "from habla.runner import run_stage; "
                           "run_stage('phase1')"], cwd=root, env=env, capture_output=True,
                          text=True)


def test_a_killed_phase1_resumes_to_exactly_the_adapter_of_an_uninterrupted_run(project):
    import yaml

    p = params(phase1={**SMALL, "max_steps": 3}).model_dump(mode="json")
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    straight = project.parent / "straight"
    shutil.copytree(project, straight)
    assert _run_phase1(straight).returncode == 0

    killed = _run_phase1(project, "train_step:2")  # right after the step-2 checkpoint
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not Path("models/phase1").exists()
    state = torch.load(next(Path("checkpoints/phase1").glob("*/last.pt")),
                       weights_only=False)["state"]
    assert state["step"] == 2
    resumed = _run_phase1(project)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert '"resumed_from_step": 2' in Path("logs/phase1.steps.json").read_text()
    name = "models/phase1/adapter/adapter_model.safetensors"
    assert (project / name).read_bytes() == (straight / name).read_bytes()
    assert (json.loads((project / "metrics/phase1.json").read_text())
            == json.loads((straight / "metrics/phase1.json").read_text()))


def test_merge_matches_the_adapter_and_writes_a_transformers_folder_and_its_export(trained):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    root, (_s1, _s2, summary) = trained
    merged = root / "models/merged"
    metrics = json.loads((root / "metrics/merge.json").read_text())
    assert metrics["parity_ok"] and metrics["parity_max_abs_diff"] < 1e-3
    assert metrics["export_texts_compared"] == 2 and summary["parity_utterances"] == 2
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "preprocessor_config.json", "habla.json", "README.md", "ct2/model.bin",
                 "ct2/config.json", "ct2/tokenizer.json", "ct2/preprocessor_config.json"):
        assert (merged / name).is_file(), name
    assert not (merged / "tokenizer").exists()  # no SentencePiece model beside Whisper's
    card = (merged / "README.md").read_text()
    assert "automatic-speech-recognition" in card and "models/merged/ct2" in card
    plain = WhisperForConditionalGeneration.from_pretrained(merged)  # no habla needed
    WhisperProcessor.from_pretrained(merged)
    base = load_whisper(str(root / "tiny-hf")).model
    key = "model.encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(plain.state_dict()[key], base.state_dict()[key])  # LoRA folded in
    # the export stores float16: its rebuild is the merged weights rounded to float16
    rebuilt = load_whisper(str(merged / "ct2")).model.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(rebuilt[k], v.half().float()), k


def test_the_export_decodes_as_the_merged_model_does(trained):
    """Greedy decoding of the merged transformers model (its weights rounded to float16, as
    the export stores them) and of its CTranslate2 export read the same tokens
    (faster-whisper stops this random model early: a prefix)."""
    from faster_whisper import WhisperModel

    from habla.audio import read_mono, resample
    from habla.whisper_data import log_mel

    root, _ = trained
    merged = load_whisper(str(root / "models/merged")).model
    with torch.no_grad():
        for p in merged.parameters():
            p.copy_(p.half().float())
    fw = WhisperModel(str(root / "models/merged/ct2"), device="cpu", compute_type="float32",
                      cpu_threads=1)
    for rec in read_manifest(root / "data/splits/test.jsonl")[:2]:
        wave, rate = read_mono(root / rec.audio)
        wave = resample(wave, rate, 16000).astype(np.float32)
        segments, _ = fw.transcribe(wave, language="es", beam_size=1, temperature=0.0,
                                    without_timestamps=True, condition_on_previous_text=False,
                                    vad_filter=False, max_new_tokens=30,
                                    log_prob_threshold=None, no_speech_threshold=None,
                                    compression_ratio_threshold=None)
        fw_tokens = [t for s in segments for t in s.tokens]
        # it stops at the first timestamp token (which HF's notimestamps decoding suppresses)
        fw_tokens = fw_tokens[:next((i for i, t in enumerate(fw_tokens) if t >= 50257),
                                    len(fw_tokens))]
        with torch.no_grad():
            out = merged.generate(input_features=torch.from_numpy(log_mel(wave))[None],
                                  language="es", task="transcribe", max_new_tokens=30)
        hf_tokens = [t for t in out[0].tolist() if t < 50257]
        assert len(fw_tokens) >= 5 and hf_tokens[:len(fw_tokens)] == fw_tokens


def test_the_fine_tuned_export_works_as_asr_model_for_transcribe_and_timestamps(trained):
    from habla.align import align_whisper
    from habla.asr import load_asr, transcribe_arrays
    from habla.audio import read_mono
    from habla.config import AsrParams

    root, _ = trained
    asr = AsrParams(model=str(root / "models/merged/ct2"), cpu_threads=1, batch_size=1,
                    max_new_tokens=16, compute_type="float32")
    model = load_asr(asr)
    recs = read_manifest(root / "data/splits/test.jsonl")[:2]
    waves = [read_mono(root / r.audio)[0] for r in recs]
    results = transcribe_arrays(model, waves, recs[0].sample_rate, asr)
    assert len(results) == 2 and all(r["text"] for r in results)
    words = align_whisper(model, waves, recs[0].sample_rate, [r.text for r in recs], "es")
    assert [len(w) for w in words] == [len(r.words) for r in recs]
    assert any(w.aligned for w in words[0])


def test_evaluate_scores_both_systems_alike_and_writes_the_report(trained, tmp_path,
                                                                monkeypatch):
    import csv

    from habla.stages import evaluate

    root = tmp_path / "p"
    shutil.copytree(trained[0], root)
    monkeypatch.chdir(root)
    summary = evaluate.run(params())
    results = json.loads(Path("metrics/eval_details.json").read_text())
    assert results["task"] == "asr" and results["n_utterances"] == summary["utterances"] == 3
    headline = json.loads(Path("metrics/eval.json").read_text())
    assert headline["utterances"] == 3 and "seconds" not in results
    assert headline["finetuned"]["wer"] == results["finetuned"]["wer"]
    assert headline["base"]["start_error_ms_median"] == results["base"]["start_error_ms"][
        "median_ms"]
    for system in ("base", "finetuned"):
        assert results[system]["wer"] >= 0 and "corpus" in results[system]
        assert results[system]["start_error_ms"]["words"] > 0
    assert results["delta"]["wer"]["n"] == 3 and results["ratio"]["wer"]["samples"] == 200
    assert results["method"]["decoding"]["compute_type"] == "int8"
    rows = list(csv.DictReader(open("metrics/eval_utterances.csv", encoding="utf-8")))
    assert [r["id"] for r in rows] == ["test0", "test1", "test2"]
    assert all(float(r["words_truth"]) > 0 and r["hyp_base"] for r in rows)
    page = Path("reports/index.html").read_text()
    assert page.count("<audio") == len(list(Path("reports/audio").glob("*.wav"))) >= 2
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # offline: no fetches
    assert 'class="sub"' in page or 'class="ins"' in page or 'class="del"' in page
    # the evaluated card carries the results, and `habla push` accepts it for this folder
    from habla import push
    from habla.modelcard import front_matter

    text = push.check("user/whisper-es")
    meta, body = front_matter(text)
    assert meta["pipeline_tag"] == "automatic-speech-recognition" and "whisper" in meta["tags"]
    assert meta["language"] == ["es"] and "base_model" not in meta  # a local base folder
    index = meta["model-index"][0]["results"][0]
    assert index["task"]["type"] == "automatic-speech-recognition"
    assert {m["type"]: m["value"] for m in index["metrics"]} == {
        "wer": round(results["finetuned"]["wer"], 4), "cer": round(results["finetuned"]["cer"], 4)}
    assert results["n_timed"] == 3 and "word-start error" in body
    assert f"| WER ↓ (mean per utterance) | {results['base']['wer']:.3f} | " \
           f"{results['finetuned']['wer']:.3f} |" in body
    assert "## Training data" in body and "## How to load" in body


def test_highlight_marks_substitutions_insertions_and_deletions():
    from habla.report.asr import highlight

    html = highlight("Hola, ¿qué tal amigo mío?", "ola que tal tal amigo")
    assert '<span class="sub" title="reference: hola">ola</span>' in html
    assert '<span class="sub" title="reference: qué">que</span>' in html
    assert '<span class="ins" title="inserted">tal</span>' in html
    assert html.endswith('<span class="del" title="missing">mío</span>')
    assert highlight("hola", "") == '<span class="del">hola</span>'


@pytest.mark.slow
def test_the_tiny_asr_recipe_runs_offline_with_the_real_whisper_base(tiny_recipes):
    project = tiny_recipes["recipes/asr-es419"] / "recipes/asr-es419"
    merge = json.loads((project / "metrics/merge.json").read_text())
    assert merge["parity_ok"] and merge["export_texts_identical"] == merge[
        "export_texts_compared"] >= 1
    results = json.loads((project / "metrics/eval_details.json").read_text())
    assert results["task"] == "asr" and results["n_utterances"] >= 1
    assert (project / "reports/index.html").is_file()
    summary = json.loads((project / "data/labels/transcribe_summary.json").read_text())
    assert summary["references_unverified"] == summary["clips_kept"]
