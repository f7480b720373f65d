"""Pretrain a fastspeech2 base model from random init (full training, no LoRA).

In: data/clips/manifest.jsonl with label text and ground-truth word times (`truth_words`, a
synthetic corpus) or aligned `words`. Out: models/base/ (HF folder + tokenizer/ + habla.json +
README.md), checkpoints/pretrain/<run key>/, dvclive/pretrain/, metrics/pretrain.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from typing import Any

import torch

from habla import paths
from habla.config import Params
from habla.errors import StageError
from habla.families.fastspeech2 import FastSpeech2, save_model_folder
from habla.manifest import Rejects, read_manifest, sha256_file, write_json
from habla.model_folder import ModelInfo
from habla.tokenizer import save_tokenizer, train_tokenizer
from habla.train import TrainConfig, run_key, train

log = logging.getLogger("habla.pretrain")
CLIPS = paths.CLIPS_MANIFEST
OUT = paths.BASE


def _is_val(record_id: str, fraction: float) -> bool:
    # by a hash of the id: the split does not move when clips are added or reordered
    return int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def model_card(info: ModelInfo, summary: dict[str, Any], minutes: float) -> str:
    prov = info.provenance or {}
    return f"""---
library_name: transformers
tags: [text-to-speech, fastspeech2, spanish]
language: [es]
---
# habla base: FastSpeech2Conformer, Spanish, {summary['total_params'] / 1e6:.1f} M parameters

Trained from random initialisation by habla's `recipes/base-es` on
{prov['train_hours']:.2f} h of synthetic Castilian speech ({prov['train_clips']} clips, eSpeak NG
voices: {', '.join(info.speakers)}), with durations from the synthesiser's own word times.
Character SentencePiece tokenizer in `tokenizer/`; log-mel features and pitch/energy
statistics in `habla.json`; vocoder: Griffin-Lim (no neural vocoder).

| | |
|---|---|
| steps | {summary['steps']} |
| best validation loss | {summary['best_val_loss']} (step {summary['best_step']}) |
| training time | {minutes:.1f} min (this machine; logs/pretrain.steps.json) |

Load without habla:

```python
from transformers import FastSpeech2ConformerModel
model = FastSpeech2ConformerModel.from_pretrained("models/base")
```

Limits: synthetic voices only; it sounds like eSpeak, not like a person. Meant as a base for
LoRA adaptation (`habla phase1`/`phase2`), not for direct use.
"""


def run(params: Params) -> dict[str, Any]:
    pp = params.pretrain
    clips = read_manifest(CLIPS)
    usable = [r for r in clips if r.text and (r.truth_words or r.words)]
    if not usable:
        raise StageError(f"{CLIPS}: no clip has both text and word times (truth_words/words)")
    val_recs = [r for r in usable if _is_val(r.id, pp.val_fraction)]
    train_recs = [r for r in usable if not _is_val(r.id, pp.val_fraction)]

    work = OUT.with_name(f".{OUT.name}.tmp")
    if work.exists():
        shutil.rmtree(work)
    tok_dir = work / "tokenizer"
    tokenizer = save_tokenizer(train_tokenizer([r.text for r in train_recs], "char"), tok_dir)
    speakers = sorted({r.speaker for r in train_recs})

    family = FastSpeech2()
    torch.manual_seed(params.seed)
    model = family.new_model(
        tokenizer.get_piece_size(), speakers, hidden_size=pp.hidden_size,
        encoder_layers=pp.layers, decoder_layers=pp.layers,
        encoder_linear_units=pp.linear_units, decoder_linear_units=pp.linear_units)
    spec = family.features(model)
    rejects = Rejects("pretrain")
    train_ex = family.make_examples(train_recs, tokenizer, spec, 0, rejects)
    val_ex = family.make_examples(val_recs, tokenizer, spec, 0, rejects)
    if not train_ex:
        raise StageError(f"pretrain: every clip was rejected: {rejects.counts()}")
    family.prosody_stats(train_ex)
    cfg = TrainConfig(
        phase="pretrain", lr=pp.lr, max_steps=pp.max_steps, warmup_steps=pp.warmup_steps,
        schedule=pp.schedule, batch_size=pp.batch_size, max_frames=pp.batch_frames,
        grad_accum=pp.grad_accum, eval_every=pp.eval_every, save_every=pp.save_every,
        precision=pp.precision, grad_clip=pp.grad_clip, weight_decay=pp.weight_decay,
        seed=params.seed, max_minutes=pp.max_minutes)
    key = run_key({"config": cfg.__dict__, "pretrain": pp.model_dump(),
                   "clips": sha256_file(CLIPS), "seed": params.seed})
    summary = train(model, family, train_ex, val_ex, cfg, paths.CHECKPOINTS / "pretrain" / key,
                    live_dir=paths.live_dir("pretrain"), timings=paths.training_log("pretrain"))

    info = family.info.model_copy(update={"provenance": {
        "recipe": "recipes/base-es", "run_key": key, "clips_manifest_sha256": sha256_file(CLIPS),
        "train_clips": len(train_ex), "val_clips": len(val_ex),
        "train_hours": sum(e["seconds"] for e in train_ex) / 3600,
        "sources": sorted({r.source for r in train_recs}), "rejects": rejects.counts(),
        "steps": summary["steps"], "best_val_loss": summary["best_val_loss"]}})
    model.eval()
    timings = json.loads(paths.training_log("pretrain").read_text("utf-8"))
    save_model_folder(model, work, tok_dir, info,
                      model_card(info, summary, timings["train_seconds"] / 60))
    if OUT.exists():
        shutil.rmtree(OUT)
    work.rename(OUT)
    if len(rejects):
        rejects.write(paths.PRETRAIN_REJECTS)
    write_json(paths.PRETRAIN_METRICS, summary)
    size_mb = (OUT / "model.safetensors").stat().st_size / 2**20
    return {"steps": summary["steps"], "best_val_loss": summary["best_val_loss"],
            "model_mb": round(size_mb, 1), "speakers": speakers, "clips": len(train_ex)}
