"""The merge stage: fold the phase-2 LoRA chain into a standalone model, checked for parity.

In: models/phase2 (adapter chain over `model.base`), data/splits/val.jsonl, metrics/phase*.json.
Out: models/merged/ (Hugging Face folder, tokenizer/, habla.json, speaker vectors, README.md
model card) and metrics/merge.json; the stage fails when merged and adapter outputs differ.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from habla.cli import StageError
from habla.config import Params
from habla.manifest import read_manifest, write_json

log = logging.getLogger("habla.merge")
PHASE_DIR = Path("models/phase2")
OUT = Path("models/merged")
METRICS = Path("metrics/merge.json")
SPLITS = Path("data/splits")


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (to prove the base was not written to)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _core(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def parity_outputs(family: Any, model: nn.Module, batch: dict[str, torch.Tensor]
                   ) -> torch.Tensor:
    """A deterministic forward of `batch` (teacher-forced: true durations / true frames)."""
    if hasattr(family, "parity_outputs"):
        return family.parity_outputs(model, batch)
    # Generic: the training forward (FastSpeech2 needs it for given durations) with dropout
    # and BatchNorm updates off, the spectrogram taken from the Hugging Face module.
    captured: list[torch.Tensor] = []
    handle = _core(model).register_forward_hook(
        lambda _m, _i, out: captured.append(out.spectrogram))
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            family.loss(model, batch)
    finally:
        handle.remove()
        model.eval()
    if not captured:
        raise StageError(f"merge: family {family.name} gives no spectrogram to compare")
    return captured[-1]


def parity(family: Any, adapted: nn.Module, merged: nn.Module, records: list[Any],
           tokenizer: Any) -> tuple[float, int]:
    """Largest |merged - adapted| over the outputs of `records` (one utterance at a time)."""
    from habla.audio import AudioError

    spec = family.features(adapted)
    worst, used = 0.0, 0
    for rec in records:
        try:
            batch = family.collate([family.make_example(rec, tokenizer, spec)])
        except (AudioError, ValueError) as exc:
            log.warning("merge: parity skips %s: %s", rec.id, exc)
            continue
        a = parity_outputs(family, adapted, batch)
        b = parity_outputs(family, merged, batch)
        if a.shape != b.shape:
            raise StageError(f"merge: output shapes differ on {rec.id}: {tuple(a.shape)} "
                             f"vs {tuple(b.shape)}")
        worst = max(worst, float((a - b).abs().max()))
        used += 1
    return worst, used


def _save_model(family: Any, model: nn.Module, folder: Path) -> None:
    if hasattr(family, "save_model"):
        family.save_model(model, folder)
    else:
        _core(model).save_pretrained(str(folder), safe_serialization=True)


def run(params: Params) -> dict[str, Any]:
    from habla.families.base import resolve_model_dir
    from habla.modelcard import file_hashes, read_metrics, render
    from habla.train import load_adapted

    meta_path = PHASE_DIR / "habla.json"
    if not meta_path.is_file():
        raise StageError(f"{meta_path}: missing (run phase2 first)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("family") != params.model.family or meta["base"]["path"] != params.model.base:
        raise StageError(f"{PHASE_DIR} was trained as {meta.get('family')} on "
                         f"{meta['base']['path']}, but params say {params.model.family} on "
                         f"{params.model.base}: rerun phase1 and phase2")
    base_dir = resolve_model_dir(params.model.base, params.model.revision)
    before = tree_hashes(base_dir)

    family, adapted, tokenizer = load_adapted(PHASE_DIR)
    # merge into a copy: the adapter model stays as it is, for the parity check
    merged = copy.deepcopy(adapted).merge_and_unload().eval()

    val = read_manifest(SPLITS / "val.jsonl")[: params.merge.parity_utterances]
    if not val:
        raise StageError(f"{SPLITS / 'val.jsonl'}: no validation utterances for the parity check")
    diff, used = parity(family, adapted, merged, val, tokenizer)
    tol = params.merge.parity_tolerance
    ok = used > 0 and diff <= tol
    write_json(METRICS, {"parity_max_abs_diff": diff, "parity_utterances": used,
                         "parity_tolerance": tol, "parity_ok": ok})
    if used == 0:
        raise StageError(f"merge: none of {len(val)} validation utterances could be used")
    if not ok:
        raise StageError(f"merge: merged model differs from the adapter model by {diff:.3g} "
                         f"(> merge.parity_tolerance {tol}) on {used} validation utterances")

    tmp = OUT.with_name(f".{OUT.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_model(family, merged, tmp)
    shutil.copytree(PHASE_DIR / "tokenizer", tmp / "tokenizer")
    out_meta = {k: v for k, v in meta.items() if k not in ("adapter_chain", "training")}
    out_meta.update({"merged_from": str(PHASE_DIR), "adapter_chain": meta["adapter_chain"],
                     "parity_max_abs_diff": diff})
    (tmp / "habla.json").write_text(json.dumps(out_meta, indent=2, ensure_ascii=False,
                                               sort_keys=True), encoding="utf-8")
    used_params = params.model_dump(include={"seed", "lr", "model", "tokenize", "phase1",
                                             "phase2", "merge"}, mode="json")
    data = file_hashes([SPLITS / f"{s}.jsonl" for s in ("train", "val", "test")])
    figures = read_metrics([Path("metrics/phase1.json"), Path("metrics/phase2.json"),
                            METRICS])
    (tmp / "README.md").write_text(render(out_meta, used_params, data, figures, str(OUT)),
                                   encoding="utf-8")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)

    if tree_hashes(base_dir) != before:
        raise StageError(f"merge: the base folder {base_dir} changed while merging")
    return {"parity_max_abs_diff": diff, "parity_utterances": used, "out": str(OUT)}
