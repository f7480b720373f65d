"""The merge stage: fold the phase-2 LoRA chain into a standalone model, checked for parity.

In: models/phase2 (adapter chain over `model.base`, with what trained it), data/splits/val.jsonl
and metrics/phase*.json. Out: models/merged/ (the family's model files, e.g. an ASR model's
CTranslate2 export in ct2/; tokenizer/ when the family uses the project's; habla.json; the
README.md model card) and metrics/merge.json; the stage fails when merged and adapter outputs
differ beyond `merge.parity_tolerance`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from habla import atomic, paths
from habla.adapt import load_adapted
from habla.audio import AudioError
from habla.config import Params
from habla.errors import StageError
from habla.families import Family, get_family
from habla.manifest import read_manifest, write_json
from habla.model_folder import load_info, save_info
from habla.modelcard import file_hashes, read_metrics, render

log = logging.getLogger("habla.merge")


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (to prove the base was not written to)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def parity(family: Family, adapted: nn.Module, merged: nn.Module, records: list[Any],
           tokenizer: Any) -> tuple[float, int]:
    """Largest |merged - adapted| over the outputs of `records` (one example at a time)."""
    spec = family.features(adapted)
    worst, used = 0.0, 0
    for rec in records:
        try:
            examples = family.make_examples([rec], tokenizer, spec, phase=2)
        except (AudioError, ValueError) as exc:
            log.warning("merge: parity skips %s: %s", rec.id, exc)
            continue
        for example in examples:
            batch = family.collate([example])
            a = family.parity_outputs(adapted, batch)
            b = family.parity_outputs(merged, batch)
            if a.shape != b.shape:
                raise StageError(f"merge: output shapes differ on {rec.id}: {tuple(a.shape)} "
                                 f"vs {tuple(b.shape)}")
            worst = max(worst, float((a - b).abs().max()))
            used += 1
    return worst, used


def run(params: Params) -> dict[str, Any]:
    phase_dir, out = paths.phase_dir(2), paths.MERGED
    info = load_info(phase_dir)
    if info.family != params.model.family or info.base is None \
            or info.base.path != params.model.base:
        raise StageError(f"{phase_dir} was trained as {info.family} on "
                         f"{info.base.path if info.base else '?'}, but params say "
                         f"{params.model.family} on {params.model.base}: rerun phase1 and "
                         "phase2")
    base_dir = get_family(params.model.family).resolve(params.model.base, params.model.revision)
    before = tree_hashes(base_dir)

    family, adapted, tokenizer = load_adapted(phase_dir)
    family.configure(params, "merge")
    # merge into a copy: the adapter model stays as it is, for the parity check
    merged = copy.deepcopy(adapted).merge_and_unload().eval()

    val = read_manifest(paths.VAL_SPLIT)[: params.merge.parity_utterances]
    if not val:
        raise StageError(f"{paths.VAL_SPLIT}: no validation utterances for the parity check")
    diff, used = parity(family, adapted, merged, val, tokenizer)
    tol = params.merge.parity_tolerance
    ok = used > 0 and diff <= tol
    metrics = {"parity_max_abs_diff": diff, "parity_utterances": used,
               "parity_tolerance": tol, "parity_ok": ok}
    write_json(paths.MERGE_METRICS, metrics)
    if used == 0:
        raise StageError(f"merge: none of {len(val)} validation utterances could be used")
    if not ok:
        raise StageError(f"merge: merged model differs from the adapter model by {diff:.3g} "
                         f"(> merge.parity_tolerance {tol}) on {used} validation utterances")

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    family.save_merged(merged, tmp)
    export = family.export_parity(merged, tmp, val)  # e.g. an ASR model's CTranslate2 export
    if export:
        write_json(paths.MERGE_METRICS, {**metrics, **export})
    if (phase_dir / "tokenizer").is_dir():
        shutil.copytree(phase_dir / "tokenizer", tmp / "tokenizer")
    # what phase 2 recorded (features, speakers, vocoder, base, training params), merged
    out_info = info.model_copy(update={"training": None, "merged_from": str(phase_dir),
                                       "parity_max_abs_diff": diff,
                                       "settings": {**info.settings, **family.info.settings}})
    save_info(tmp, out_info)
    data = file_hashes([paths.TRAIN_SPLIT, paths.VAL_SPLIT, paths.TEST_SPLIT])
    figures = read_metrics([paths.phase_metrics(1), paths.phase_metrics(2),
                            paths.MERGE_METRICS])
    atomic.write_text(tmp / "README.md", render(out_info.model_dump(mode="json"),
                                                out_info.trained_with or {}, data, figures,
                                                str(out)))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)

    if tree_hashes(base_dir) != before:
        raise StageError(f"merge: the base folder {base_dir} changed while merging")
    return {"parity_max_abs_diff": diff, "parity_utterances": used, **export, "out": str(out)}
