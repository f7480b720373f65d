"""LoRA adaptation of a base model, phase by phase, and rebuilding an adapted model to use it.

In: params (`model.*`, `seed`, `lr`, the phase's section), the base (never written to),
models/tokenizer and data/splits/{train,val}.jsonl, and for phase 2 models/phase1.
Out: models/phase<N>/ (adapter chain, habla.json, and the tokenizer when the family uses the
project's), checkpoints/phase<N>/<run key>/, dvclive/phase<N>/ and metrics/phase<N>.json. TTS
families adapt to one speaker (the params' or the most frequent); ASR families train on every
speaker.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from habla import distributed, paths
from habla.config import Params
from habla.errors import HablaError, StageError, describe
from habla.families import Family, get_family
from habla.manifest import Rejects, read_manifest, sha256_file, write_json
from habla.model_folder import BaseRef, load_info, resolve_model_dir, save_info
from habla.tokenizer import load_tokenizer
from habla.train import TrainConfig, code_hash, json_default, run_key, train

log = logging.getLogger("habla.phase")


def _sha(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def base_ref(params: Params, family: Family | None = None) -> tuple[BaseRef, Path]:
    """The base as params name it, the commit a hub download resolved to, and its hash."""
    resolve = family.resolve if family is not None else resolve_model_dir
    base_dir = resolve(params.model.base, params.model.revision)
    # a hub download sits in .../snapshots/<commit>: record the commit actually used
    resolved = base_dir.name if base_dir.parent.name == "snapshots" else None
    # (the last name: Chatterbox's T3, the part LoRA adapts)
    names = ("model.safetensors", "model.bin", "model.pth", "t3_mtl23ls_v2.safetensors")
    weights = next((base_dir / n for n in names
                    if (base_dir / n).is_file()), None)
    return BaseRef(path=params.model.base, revision=params.model.revision, commit=resolved,
                   sha256=_sha(weights) if weights else None), base_dir


def _speaker(params: Params, family: Family, train_recs: list[Any]) -> str | None:
    if family.task != "tts":
        return None
    speaker = params.model.speaker or Counter(r.speaker for r in train_recs).most_common(1)[0][0]
    if not any(r.speaker == speaker for r in train_recs):
        known = sorted({r.speaker for r in train_recs})
        raise StageError(f"model.speaker {speaker!r} has no clips in {paths.TRAIN_SPLIT}; "
                         f"speakers there: {known}")
    return speaker


def _load_base(family: Family, path: str, revision: str | None) -> Any:
    """The family's base model; a folder the family cannot load (a truncated weights file, a
    config.json of another architecture) is a StageError naming it, not a traceback."""
    try:
        return family.load_base(path, revision)
    except HablaError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise StageError(f"{path}: cannot be loaded as a {family.name} base "
                         f"({describe(exc)}); check the folder, or set model.base to "
                         "another") from None


def adapt(params: Params, phase: int) -> dict[str, Any]:
    """Train LoRA phase `phase` (1 or 2) and write its folder, metrics and curves."""
    name = f"phase{phase}"
    pp = params.phase1 if phase == 1 else params.phase2
    family = get_family(params.model.family)
    family.configure(params, name)
    base = params.model.base
    ref, _ = base_ref(params, family)

    train_recs = read_manifest(paths.TRAIN_SPLIT)
    val_recs = read_manifest(paths.VAL_SPLIT) if paths.VAL_SPLIT.exists() else []
    if not val_recs:
        log.warning("%s: no validation clips: validation loss is nan and the last step is "
                    "kept as the best (rerun tokenize to make the split)", paths.VAL_SPLIT)
    if not train_recs:
        raise StageError(f"{paths.TRAIN_SPLIT}: no training clips")
    speaker = _speaker(params, family, train_recs)
    if speaker is not None:
        train_recs = [r for r in train_recs if r.speaker == speaker]
        val_recs = [r for r in val_recs if r.speaker == speaker]

    model = _load_base(family, base, params.model.revision)
    if family.task == "tts":
        try:
            family.set_vocoder(params.model.vocoder)
        except ValueError as exc:
            raise StageError(f"params.yaml: model.vocoder: {exc}") from None
    tok_info = family.hook_tokenizer(model, paths.TOKENIZER, base)
    if speaker is not None:
        family.add_speaker(model, speaker)
        family.info.default_speaker = speaker
    chain: list[str] = []
    earlier_dirs: list[Path] = []
    prev_info = None
    if phase == 2:
        prev = paths.phase_dir(1)
        prev_info = load_info(prev)
        if prev_info.base is None or prev_info.base.sha256 != ref.sha256 \
                or prev_info.speaker != speaker or prev_info.family != family.name:
            raise StageError(f"{prev}: phase 1 was trained as {prev_info.family} on base "
                             f"{prev_info.base} for speaker {prev_info.speaker!r}, not "
                             f"{family.name} on {ref} / {speaker!r}: rerun phase1")
        for entry in prev_info.adapter_chain or []:
            model = _load_adapter(model, prev / entry).merge_and_unload()
        earlier_dirs = [prev / e for e in prev_info.adapter_chain or []]
        chain = [f"chain/phase1_{i}" for i in range(len(earlier_dirs))]

    # LoRA's A matrices are drawn from torch's global RNG: seed it here, or every run starts
    # from different adapters (two identical phase-1 runs: val loss 2.1991 vs 2.2005)
    torch.manual_seed(params.seed)
    targets, to_save = family.lora_targets(phase)
    lora = LoraConfig(r=pp.lora.r, lora_alpha=pp.lora.alpha, lora_dropout=pp.lora.dropout,
                      target_modules=pp.lora.target_modules or targets,
                      modules_to_save=pp.lora.modules_to_save or to_save, bias="none",
                      **family.lora_options(phase))
    model = get_peft_model(model, lora)

    # families with their own tokenizer (Whisper) get None and use theirs
    tokenizer = load_tokenizer(paths.TOKENIZER) if family.uses_project_tokenizer else None
    spec = family.features(model)
    rejects = Rejects(name)
    if family.caches_examples and distributed.world_size() > 1:
        # each process encodes its share of the clips into the cache, then all read it all
        family.make_examples(distributed.shard(train_recs + val_recs), tokenizer, spec, phase,
                             Rejects(name))
        distributed.barrier()
    train_ex = family.make_examples(train_recs, tokenizer, spec, phase, rejects)
    val_ex = family.make_examples(val_recs, tokenizer, spec, phase, rejects)
    if not train_ex:
        raise StageError(f"{name}: every training clip was rejected: {rejects.counts()}")
    family.prepare_training(model, train_ex)
    cfg = TrainConfig(
        phase=name, lr=params.lr * pp.lr_factor, max_steps=pp.max_steps,
        warmup_steps=pp.warmup_steps, schedule=pp.schedule, batch_size=pp.batch_size,
        grad_accum=pp.grad_accum, eval_every=pp.eval_every, save_every=pp.save_every,
        precision=pp.precision, grad_clip=pp.grad_clip, weight_decay=pp.weight_decay,
        seed=params.seed, processes=params.train.processes)
    key = run_key({
        "config": cfg.__dict__, "model": params.model.model_dump(), "lora": lora.to_dict(),
        "base": ref.model_dump(), "speaker": speaker,
        "tokenizer": _sha(paths.TOKENIZER / "spm.model"),
        "train": _sha(paths.TRAIN_SPLIT), "val": _sha(paths.VAL_SPLIT),
        "earlier": [_sha(d / "adapter_model.safetensors") for d in earlier_dirs],
        "code": code_hash(), **({"settings": family.info.settings}
                                if family.info.settings else {})})
    summary = train(model, family, train_ex, val_ex, cfg, paths.CHECKPOINTS / name / key,
                    live_dir=paths.live_dir(name), timings=paths.training_log(name))
    if not distributed.is_main():
        return summary  # the main process writes the phase's folder, metrics and curves
    if any("clips" in e for e in train_ex):  # packed examples: windows of several clips
        for split, examples in (("train", train_ex), ("val", val_ex)):
            summary[f"{split}_windows"] = len(examples)
            summary[f"{split}_clips"] = sum(len(e["clips"]) for e in examples)

    out = paths.phase_dir(phase)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for src, dst in zip(earlier_dirs, chain, strict=True):
        shutil.copytree(src, out / dst)
    chain.append("adapter")
    # the resized text embedding is in modules_to_save, so peft need not save it again
    model.save_pretrained(str(out / "adapter"), save_embedding_layers=False)
    if family.uses_project_tokenizer:
        shutil.copytree(paths.TOKENIZER, out / "tokenizer")
    # what shaped this model, for the model card (phase 2 adds its section to phase 1's)
    trained_with = {**((prev_info and prev_info.trained_with) or {}),
                    "seed": params.seed, "lr": params.lr, name: pp.model_dump(mode="json")}
    info = family.info.model_copy(update={
        "provenance": None, "base_provenance": family.info.provenance, "phase": phase,
        "base": ref, "adapter_chain": chain, "speaker": speaker, "tokenizer": tok_info,
        "lora": json.loads(json.dumps(lora.to_dict(), default=json_default)), "run_key": key,
        "training": summary, "trained_with": trained_with, "rejects": rejects.counts()})
    save_info(out, info)
    if len(rejects):
        rejects.write(out / "rejects.jsonl")
    write_json(paths.phase_metrics(phase), {**summary, "speaker": speaker, "lr": cfg.lr})
    return {"speaker": speaker, **{k: summary[k] for k in (
        "steps", "best_val_loss", "final_train_loss", "trainable_params", "train_clips")},
            "rejects": rejects.counts()}  # the stage's line says what was left out


def _load_adapter(model: nn.Module, folder: Path) -> Any:
    """`model` with the LoRA adapter in `folder`; a missing or damaged adapter is a
    StageError naming it (rerun the phase that wrote it), not a traceback."""
    try:
        return PeftModel.from_pretrained(model, str(folder))
    except Exception as exc:  # safetensors, peft and torch raise their own types
        raise StageError(f"{folder}: cannot load this LoRA adapter ({describe(exc)}); "
                         "rerun the phase that wrote it (dvc repro --force "
                         f"{folder.parent.name})") from None


def load_adapted(phase_dir: Path) -> tuple[Family, nn.Module, Any]:
    """(family, unmerged PeftModel in eval mode, tokenizer) rebuilt from a phase folder:
    the base, the tokenizer hook-up, the speaker, then every adapter in its chain."""
    phase_dir = Path(phase_dir)
    info = load_info(phase_dir)
    if info.base is None or not info.adapter_chain:
        raise StageError(f"{phase_dir}: not an adapted model folder (no base or adapters in "
                         "habla.json): rerun phase1 and phase2")
    family = get_family(info.family)
    family.info.settings.update(info.settings)  # what configured the family when it trained
    model = _load_base(family, info.base.path, info.base.revision)
    if family.task == "tts":
        family.set_vocoder(info.vocoder)
    family.hook_tokenizer(model, phase_dir / "tokenizer", info.base.path)
    if info.speaker is not None:
        family.add_speaker(model, info.speaker)
    family.info.speakers = list(info.speakers)
    family.info.default_speaker = info.default_speaker
    for earlier in info.adapter_chain[:-1]:
        model = _load_adapter(model, phase_dir / earlier).merge_and_unload()
    model = _load_adapter(model, phase_dir / info.adapter_chain[-1])
    model.eval()
    tokenizer = load_tokenizer(phase_dir / "tokenizer") if family.uses_project_tokenizer \
        else None
    return family, model, tokenizer
