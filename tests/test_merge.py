"""The merge stage on a tiny speecht5 phase-2 folder built with peft (no training loop)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_speecht5 import TEXTS, make_base, make_clip

from habla.config import Params
from habla.errors import StageError
from habla.families.speecht5 import SpeechT5Family
from habla.manifest import write_manifest
from habla.model_folder import BaseRef, save_info
from habla.stages import merge
from habla.tokenizer import save_tokenizer, train_tokenizer


def make_project(root):
    """models/base, models/tokenizer, models/phase2 (a non-zero LoRA chain), val split."""
    from peft import LoraConfig, get_peft_model

    make_base(root / "models/base")
    save_tokenizer(train_tokenizer(TEXTS * 5, "char"), root / "models/tokenizer")
    family = SpeechT5Family()
    model = family.load_base("models/base")
    family.hook_tokenizer(model, root / "models/tokenizer", "models/base")
    family.add_speaker(model, "lat_f2")
    target, save = family.lora_targets(2)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=target,
                                             modules_to_save=save))
    torch.manual_seed(1)
    with torch.no_grad():  # as if trained: every adapter weight moves away from zero
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    phase = root / "models/phase2"
    model.save_pretrained(str(phase / "adapter"))
    shutil.copytree(root / "models/tokenizer", phase / "tokenizer")
    save_info(phase, family.info.model_copy(update={
        "base": BaseRef(path="models/base"), "adapter_chain": ["adapter"], "speaker": "lat_f2",
        "phase": 2}))
    (root / "data/clips").mkdir(parents=True)
    records = [make_clip(root / f"data/clips/v{i}.wav", t, i) for i, t in enumerate(TEXTS)]
    for r in records:
        r.audio = str(r.audio).replace(f"{root}/", "")
    write_manifest(root / "data/splits/val.jsonl", records)
    (root / "metrics").mkdir()
    (root / "metrics/phase2.json").write_text(json.dumps({"best_val_loss": 1.5, "steps": 3}))


def params(**merge_params) -> Params:
    return Params.model_validate({
        "download": {"sources": [{"kind": "local", "path": "raw"}]},
        "model": {"family": "speecht5", "base": "models/base"},
        "merge": {"parity_utterances": 2, **merge_params}})


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path)
    return tmp_path


def test_merge_writes_a_loadable_folder_with_card_and_leaves_the_base_untouched(project):
    from transformers import SpeechT5ForTextToSpeech

    before = merge.tree_hashes(project / "models/base")
    summary = merge.run(params())
    assert merge.tree_hashes(project / "models/base") == before
    out = project / "models/merged"
    for name in ("config.json", "model.safetensors", "tokenizer/spm.model", "habla.json",
                 "speakers.safetensors", "README.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((project / "metrics/merge.json").read_text())
    assert metrics["parity_ok"] and metrics["parity_utterances"] == 2
    assert summary["parity_max_abs_diff"] <= 1e-3
    card = (out / "README.md").read_text()
    assert "models/base" in card and "best_val_loss = 1.5" in card and "habla synth" in card
    assert "data/splits/val.jsonl" in card and "sha256" in card
    plain = SpeechT5ForTextToSpeech.from_pretrained(out)  # no habla needed
    assert plain.config.vocab_size == plain.speecht5.encoder.prenet.embed_tokens.num_embeddings
    meta = json.loads((out / "habla.json").read_text())
    assert meta["family"] == "speecht5" and meta["speakers"] == ["lat_f2"]


def test_merged_weights_differ_from_the_base_so_the_adapter_was_folded_in(project):
    from safetensors.torch import load_file

    merge.run(params())
    base = load_file(project / "models/base/model.safetensors")
    merged = load_file(project / "models/merged/model.safetensors")
    key = "speecht5.encoder.wrapped_encoder.layers.0.attention.q_proj.weight"
    assert not torch.equal(base[key], merged[key])


def test_merge_fails_above_the_parity_tolerance_and_records_the_difference(project):
    with pytest.raises(StageError, match="parity_tolerance"):
        merge.run(params(parity_tolerance=1e-12))
    metrics = json.loads((project / "metrics/merge.json").read_text())
    assert metrics["parity_ok"] is False and metrics["parity_max_abs_diff"] > 1e-12
    assert not (project / "models/merged").exists()


def test_merge_refuses_a_phase2_folder_trained_for_another_family(project):
    p = params()
    p.model.family = "fastspeech2"
    with pytest.raises(StageError, match="rerun phase1 and phase2"):
        merge.run(p)


def test_speecht5_runs_phase1_phase2_and_merge_through_the_stages(tmp_path, monkeypatch):
    """The hub family end to end through the real stage code (a tiny base saved to a folder,
    loaded by path the way a hub id is): a few steps of each phase, then merge."""
    from habla.stages import phase1, phase2

    monkeypatch.chdir(tmp_path)
    make_base(tmp_path / "models/base")
    save_tokenizer(train_tokenizer(TEXTS * 5, "char"), tmp_path / "models/tokenizer")
    for split, seeds in (("train", range(4)), ("val", range(4, 6))):
        records = [make_clip(tmp_path / f"data/clips/{split}{i}.wav", TEXTS[i % len(TEXTS)], i)
                   for i in seeds]
        for r in records:
            r.audio = str(r.audio).replace(f"{tmp_path}/", "")
        write_manifest(tmp_path / f"data/splits/{split}.jsonl", records)
    small = {"max_steps": 2, "warmup_steps": 1, "batch_size": 2, "eval_every": 1,
             "save_every": 1, "lora": {"r": 4, "alpha": 8}}
    p = Params.model_validate({
        "lr": 1e-3, "download": {"sources": [{"kind": "local", "path": "raw"}]},
        "model": {"family": "speecht5", "base": "models/base"},
        "phase1": small, "phase2": small, "merge": {"parity_utterances": 2}})
    base_before = merge.tree_hashes(tmp_path / "models/base")
    assert phase1.run(p)["steps"] == 2
    assert phase2.run(p)["steps"] == 2
    summary = merge.run(p)
    assert summary["parity_max_abs_diff"] <= 1e-3
    assert merge.tree_hashes(tmp_path / "models/base") == base_before
    meta = json.loads((tmp_path / "models/merged/habla.json").read_text())
    assert meta["family"] == "speecht5" and "lat_f2" in meta["speakers"]
