"""LoRA adaptation of the base model to one speaker: phase 1 (text side) and phase 2 (+decoder).

In: `model.base` (never written to), models/tokenizer, data/splits/{train,val}.jsonl, and for
phase 2 models/phase1. Out: models/phase<N>/ (adapter chain, tokenizer, habla.json),
checkpoints/phase<N>/<run key>/, dvclive/phase<N>/ and metrics/phase<N>.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from habla.config import Params
from habla.manifest import Rejects, read_manifest, sha256_file, write_json

log = logging.getLogger("habla.phase")
SPLITS = Path("data/splits")
TOKENIZER = Path("models/tokenizer")


def _sha(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def adapt(params: Params, phase: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from habla.cli import StageError
    from habla.families import get_family
    from habla.families.base import resolve_model_dir
    from habla.tokenizer import load_tokenizer
    from habla.train import TrainConfig, code_hash, prepare_examples, run_key, train

    name = f"phase{phase}"
    pp = params.phase1 if phase == 1 else params.phase2
    family = get_family(params.model.family)
    base = params.model.base
    base_dir = resolve_model_dir(base, params.model.revision)
    # a hub download sits in .../snapshots/<commit>: record the commit actually used
    resolved = base_dir.name if base_dir.parent.name == "snapshots" else None
    base_info = {"path": base, "revision": params.model.revision, "commit": resolved,
                 "sha256": _sha(base_dir / "model.safetensors")}

    train_recs = read_manifest(SPLITS / "train.jsonl")
    val_recs = read_manifest(SPLITS / "val.jsonl") if (SPLITS / "val.jsonl").exists() else []
    if not train_recs:
        raise StageError(f"{SPLITS / 'train.jsonl'}: no training clips")
    speaker = params.model.speaker or Counter(r.speaker for r in train_recs).most_common(1)[0][0]
    train_recs = [r for r in train_recs if r.speaker == speaker]
    val_recs = [r for r in val_recs if r.speaker == speaker]
    if not train_recs:
        known = sorted({r.speaker for r in read_manifest(SPLITS / "train.jsonl")})
        raise StageError(f"model.speaker {speaker!r} has no clips in {SPLITS / 'train.jsonl'}; "
                         f"speakers there: {known}")

    model = family.load_base(base, params.model.revision)
    try:
        family.set_vocoder(params.model.vocoder)
    except ValueError as exc:
        raise StageError(f"params.yaml: model.vocoder: {exc}") from None
    tok_info = family.hook_tokenizer(model, TOKENIZER, base)
    family.add_speaker(model, speaker)
    family.meta["default_speaker"] = speaker
    out = Path("models") / name
    chain: list[str] = []
    earlier_dirs: list[Path] = []
    if phase == 2:
        prev = Path("models/phase1")
        prev_meta = json.loads((prev / "habla.json").read_text(encoding="utf-8"))
        if prev_meta["base"].get("sha256") != base_info["sha256"] \
                or prev_meta["speaker"] != speaker:
            raise StageError(f"{prev}: phase 1 was trained on base {prev_meta['base']} for "
                             f"speaker {prev_meta['speaker']!r}, not {base_info} / {speaker!r}: "
                             "rerun phase1")
        for entry in prev_meta["adapter_chain"]:
            model = PeftModel.from_pretrained(model, str(prev / entry)).merge_and_unload()
        earlier_dirs = [prev / e for e in prev_meta["adapter_chain"]]
        chain = [f"chain/phase1_{i}" for i in range(len(earlier_dirs))]

    # LoRA's A matrices are drawn from torch's global RNG: seed it here, or every run starts
    # from different adapters (two identical phase-1 runs: val loss 2.1991 vs 2.2005)
    torch.manual_seed(params.seed)
    targets, to_save = family.lora_targets(phase)
    lora = LoraConfig(r=pp.lora.r, lora_alpha=pp.lora.alpha, lora_dropout=pp.lora.dropout,
                      target_modules=pp.lora.target_modules or targets,
                      modules_to_save=pp.lora.modules_to_save or to_save, bias="none")
    model = get_peft_model(model, lora)

    tokenizer = load_tokenizer(TOKENIZER)
    spec = family.features(model)
    rejects = Rejects(name)
    train_ex = prepare_examples(family, train_recs, tokenizer, spec, rejects)
    val_ex = prepare_examples(family, val_recs, tokenizer, spec, rejects)
    if not train_ex:
        raise StageError(f"{name}: every training clip was rejected: {rejects.counts()}")
    cfg = TrainConfig(
        phase=name, lr=params.lr * pp.lr_factor, max_steps=pp.max_steps,
        warmup_steps=pp.warmup_steps, schedule=pp.schedule, batch_size=pp.batch_size,
        grad_accum=pp.grad_accum, eval_every=pp.eval_every, save_every=pp.save_every,
        precision=pp.precision, grad_clip=pp.grad_clip, weight_decay=pp.weight_decay,
        seed=params.seed)
    key = run_key({
        "config": cfg.__dict__, "model": params.model.model_dump(), "lora": lora.to_dict(),
        "base": base_info, "speaker": speaker, "tokenizer": _sha(TOKENIZER / "spm.model"),
        "train": _sha(SPLITS / "train.jsonl"), "val": _sha(SPLITS / "val.jsonl"),
        "earlier": [_sha(d / "adapter_model.safetensors") for d in earlier_dirs],
        "code": code_hash()})
    summary = train(model, family, train_ex, val_ex, cfg, Path("checkpoints") / name / key,
                    live_dir=Path("dvclive") / name)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for src, dst in zip(earlier_dirs, chain, strict=True):
        shutil.copytree(src, out / dst)
    chain.append("adapter")
    # the resized text embedding is in modules_to_save, so peft need not save it again
    model.save_pretrained(str(out / "adapter"), save_embedding_layers=False)
    shutil.copytree(TOKENIZER, out / "tokenizer")
    inherited = {k: v for k, v in family.meta.items() if k != "provenance"}
    meta = {**inherited, "base_provenance": family.meta.get("provenance"), "phase": phase,
            "base": base_info, "adapter_chain": chain,
            "speaker": speaker, "tokenizer": tok_info, "lora": json.loads(json.dumps(
                lora.to_dict(), default=str)), "run_key": key, "training": summary,
            "rejects": rejects.counts()}
    (out / "habla.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False,
                                               sort_keys=True), encoding="utf-8")
    if len(rejects):
        rejects.write(out / "rejects.jsonl")
    write_json(Path("metrics") / f"{name}.json", {**summary, "speaker": speaker, "lr": cfg.lr})
    return {"speaker": speaker, **{k: summary[k] for k in (
        "steps", "best_val_loss", "final_train_loss", "trainable_params", "train_clips")}}


def run(params: Params) -> dict[str, Any]:
    return adapt(params, phase=1)
