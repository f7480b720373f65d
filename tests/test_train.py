"""The training loop (schedules, batching, exact resume) and the phase1/phase2 stages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_fastspeech2 import TEXTS, TINY, folder_hashes, make_base, make_clips, make_tokenizer

from habla.config import Params
from habla.families.fastspeech2 import FastSpeech2
from habla.manifest import write_manifest
from habla.train import TrainConfig, TrainingInterrupted, lr_at, make_batches, train


def test_lr_schedules_warm_up_then_follow_their_shape():
    cfg = TrainConfig(phase="t", lr=1.0, max_steps=100, warmup_steps=10, schedule="cosine")
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.0)
    lin = TrainConfig(phase="t", lr=1.0, max_steps=110, warmup_steps=10, schedule="linear")
    assert lr_at(60, lin) == pytest.approx(0.5)
    inv = TrainConfig(phase="t", lr=1.0, max_steps=100, warmup_steps=4, schedule="inverse_sqrt")
    assert lr_at(15, inv) == pytest.approx(0.5)
    const = TrainConfig(phase="t", lr=0.3, max_steps=100, schedule="constant")
    assert lr_at(50, const) == 0.3


def test_batches_cover_every_example_once_and_respect_the_frame_cap():
    frames = [50 + (i * 37) % 400 for i in range(103)]
    batches = make_batches(frames, batch_size=8, max_frames=1200, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    assert all(len(b) <= 8 for b in batches)
    assert all(len(b) == 1 or len(b) * max(frames[i] for i in b) <= 1200 for b in batches)
    assert batches == make_batches(frames, 8, 1200, seed=1, epoch=0)
    assert batches != make_batches(frames, 8, 1200, seed=1, epoch=1)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project folder: clips, splits, tokenizer and a tiny random base."""
    root = tmp_path_factory.mktemp("proj")
    records = make_clips(root)
    make_base(root, records)
    make_tokenizer(root / "models/tokenizer", TEXTS)
    for r, split in zip(records, ["train"] * 6 + ["val"] * 2, strict=True):
        r.split = split
    write_manifest(root / "data/splits/train.jsonl", [r for r in records if r.split == "train"])
    write_manifest(root / "data/splits/val.jsonl", [r for r in records if r.split == "val"])
    return root, records


def _full_training_run(records, ckpt: Path, stop_after: int | None = None) -> dict:
    family = FastSpeech2()
    sp = make_tokenizer(ckpt.parent / "tok", TEXTS)
    torch.manual_seed(0)
    model = family.new_model(sp.get_piece_size(), ["lat_f2"], **TINY)
    spec = family.features(model)
    examples = [family.make_example(r, sp, spec) for r in records]
    family.prosody_stats(examples)
    cfg = TrainConfig(phase="t", lr=2e-3, max_steps=6, warmup_steps=2, batch_size=2,
                      grad_accum=2, eval_every=3, save_every=2, seed=7)
    train(model, family, examples[:6], examples[6:], cfg, ckpt, stop_after=stop_after)
    return model.state_dict()


def test_resume_after_a_kill_ends_at_the_same_weights_as_an_uninterrupted_run(
        project, tmp_path, monkeypatch):
    root, records = project
    monkeypatch.chdir(root)
    straight = _full_training_run(records, tmp_path / "a" / "ckpt")
    with pytest.raises(TrainingInterrupted):
        _full_training_run(records, tmp_path / "b" / "ckpt", stop_after=5)  # last save: step 4
    state = torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=False)["state"]
    assert state["step"] == 4
    resumed = _full_training_run(records, tmp_path / "b" / "ckpt")
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.allclose(straight[k], resumed[k], atol=1e-6), k


def _params(**phase) -> Params:
    small = {"max_steps": 4, "warmup_steps": 1, "batch_size": 3, "eval_every": 2,
             "save_every": 2, "lora": {"r": 4, "alpha": 8}, **phase}
    return Params.model_validate({
        "seed": 3, "lr": 3e-3,
        "download": {"sources": [{"kind": "synthetic", "voices": [
            {"speaker": "lat_f2", "voice": "es+f2"}]}]},
        "phase1": small, "phase2": {**small, "lr_factor": 0.5}})


def test_phase1_and_phase2_write_adapter_folders_that_load_and_merge(project, monkeypatch):
    from habla.adapt import load_adapted
    from habla.stages import phase1, phase2

    root, _ = project
    monkeypatch.chdir(root)
    base_before = folder_hashes(root / "models/base")
    s1 = phase1.run(_params())
    s2 = phase2.run(_params())
    assert folder_hashes(root / "models/base") == base_before  # the base is never written to
    assert s1["speaker"] == "lat_f2" and s1["steps"] == 4 and math.isfinite(s2["best_val_loss"])
    meta2 = json.loads((root / "models/phase2/habla.json").read_text())
    assert meta2["adapter_chain"] == ["chain/phase1_0", "adapter"]
    assert meta2["speakers"] == ["cast_a", "cast_b", "lat_f2"]
    assert meta2["base"]["sha256"] and meta2["tokenizer"]["fresh"] >= 0
    for name in ("phase1", "phase2"):
        metrics = json.loads((root / f"metrics/{name}.json").read_text())
        assert metrics["steps"] == 4 and metrics["trainable_params"] > 0
        curves = root / f"dvclive/{name}/plots/metrics"
        # only what the run computed, never how fast this machine ran it (reruns stay clean)
        assert sorted(p.name for p in curves.rglob("*.tsv")) == ["grad_norm.tsv", "loss.tsv",
                                                                  "loss.tsv", "lr.tsv"]
        assert not (root / f"dvclive/{name}/metrics.json").exists()
        assert json.loads((root / f"logs/{name}.steps.json").read_text())["train_seconds"] > 0
        assert len(list((root / f"checkpoints/{name}").glob("*/last.pt"))) >= 1

    family, model, sp = load_adapted(root / "models/phase2")
    assert not model.training
    ids = torch.tensor([sp.encode("hola casa")])
    spk = torch.tensor([[family.speaker_index("lat_f2")]])
    torch.manual_seed(0)
    with torch.no_grad():
        adapted = model(input_ids=ids, speaker_ids=spk, return_dict=True).spectrogram
        merged = model.merge_and_unload()(input_ids=ids, speaker_ids=spk,
                                          return_dict=True).spectrogram
    assert adapted.shape == merged.shape
    assert torch.allclose(adapted, merged, atol=1e-4)

    # what the merge stage writes: a standalone folder that loads without peft or habla meta
    from habla.families import load_synthesizer
    from habla.families.fastspeech2 import save_model_folder
    from habla.model_folder import load_info

    save_model_folder(model, root / "models/merged", root / "models/phase2/tokenizer",
                      load_info(root / "models/phase2"), "# merged\n")
    synth = load_synthesizer(str(root / "models/merged"))
    assert synth.default_speaker == "lat_f2"
    wave, sr = synth.synthesize("hola casa")
    assert sr == 24000 and len(wave) > 0


def test_a_rerun_with_another_lr_never_resumes_the_first_runs_checkpoint(project, monkeypatch):
    from habla.stages import phase1

    root, _ = project
    monkeypatch.chdir(root)
    phase1.run(_params(max_steps=2))
    before = {p.name for p in (root / "checkpoints/phase1").iterdir()}
    again = phase1.run(_params(max_steps=2, lr_factor=0.5))
    after = {p.name for p in (root / "checkpoints/phase1").iterdir()}
    assert len(after - before) == 1 and again["steps"] == 2


def test_two_phase1_runs_from_scratch_give_identical_adapters(project, monkeypatch):
    # whatever state torch's global RNG is in when the stage starts (LoRA init draws from it)
    import shutil

    from habla.stages import phase1

    root, _ = project
    monkeypatch.chdir(root)
    results = []
    for disturbance in (0, 99):
        shutil.rmtree(root / "checkpoints/phase1", ignore_errors=True)
        torch.manual_seed(disturbance)
        summary = phase1.run(_params(max_steps=2))
        results.append((summary["best_val_loss"],
                        (root / "models/phase1/adapter/adapter_model.safetensors").read_bytes()))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]


def test_pretrain_writes_a_base_folder_that_phase_one_can_adapt(tmp_path, monkeypatch):
    from habla.families import load_synthesizer
    from habla.stages import pretrain

    monkeypatch.chdir(tmp_path)
    records = make_clips(tmp_path, "cast_a", "es+klatt", 45, TEXTS[:5])
    for r in records:  # the synthetic corpus's ground truth, as segment writes it
        r.truth_words, r.words = r.words, None
    write_manifest(tmp_path / "data/clips/manifest.jsonl", records)
    params = Params.model_validate({
        "download": {"sources": [{"kind": "synthetic", "voices": [
            {"speaker": "cast_a", "voice": "es+klatt"}]}]},
        "pretrain": {"hidden_size": 32, "layers": 1, "linear_units": 64, "max_steps": 3,
                     "warmup_steps": 1, "eval_every": 3, "save_every": 3, "batch_frames": 1000,
                     "val_fraction": 0.3}})
    summary = pretrain.run(params)
    assert summary["steps"] == 3 and summary["speakers"] == ["cast_a"]
    base = tmp_path / "models/base"
    meta = json.loads((base / "habla.json").read_text())
    assert meta["family"] == "fastspeech2" and set(meta["stats"]) == {
        "log_f0_mean", "log_f0_std", "log_energy_mean", "log_energy_std"}
    assert "from_pretrained" in (base / "README.md").read_text()
    wave, sr = load_synthesizer(str(base)).synthesize("Hola.")
    assert sr == 24000 and len(wave) > 0
