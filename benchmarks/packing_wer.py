"""Held-out WER/CER after phase-1 LoRA at equal CPU budget: one clip per window vs packing.

In: nothing (renders eSpeak es-419 train and test sentences, disjoint; loads 'whisper-base').
Out: for one `--variant`, a JSON line (and `--out` file): training CPU-s, steps, clips seen,
then WER/CER of the merged model exported to CTranslate2 int8, decoded the way habla
transcribes (faster-whisper, one clip at a time, notimestamps, greedy).
Run each variant in its own 1-thread process, e.g.
`for v in base one packed-text packed-clips; do OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src
python benchmarks/packing_wer.py --variant $v --budget 240 --out runs/$v.json & done; wait`.
Measured 2026-11-30 (2 shared cores, the four runs side by side; 40 test clips, one seed):
base 0.750/0.254 WER/CER; one per window 0.098/0.040 (40 steps, 80 clips seen); packed text
0.042/0.011 and packed clips 0.040/0.011 (36 steps, 376 clips seen). Per-clip paired
bootstrap, one → packed clips: WER −0.053 [−0.111, −0.006]; one → packed text: WER −0.047
[−0.109, +0.010]. Packed text vs packed clips: no difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jiwer  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from train_asr import render_clips  # noqa: E402

from habla.asr import load_asr, transcribe_arrays  # noqa: E402
from habla.config import AsrParams  # noqa: E402
from habla.text import normalize, wer  # noqa: E402
from habla.whisper_ct2 import export_ct2, load_whisper, save_whisper  # noqa: E402
from habla.whisper_data import (  # noqa: E402
    label_lengths,
    one_per_window,
    pack_windows,
    window_example,
)
from habla.whisper_train import add_lora, batch_loss, collate, lora_config  # noqa: E402

VARIANTS = {"one": ("text", False), "packed-text": ("text", True),
            "packed-clips": ("clips", True)}


def train(whisper, clips, mode: str, packed: bool, budget: float, batch: int, lr: float,
          seed: int) -> tuple[torch.nn.Module, dict]:
    tok = whisper.processor.tokenizer
    model = add_lora(whisper.model, lora_config(r=16), seed=seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr)
    warmup = 5
    lengths = label_lengths(clips, tok, "es", mode)
    spent, steps, seen, epoch, losses = 0.0, 0, 0, 0, []
    while spent < budget:
        plan = (pack_windows([c.duration for c in clips], lengths, seed + epoch) if packed
                else one_per_window(len(clips), seed + epoch))
        for g in range(0, len(plan) - batch + 1, batch):
            t0 = time.process_time()
            group = plan[g:g + batch]
            data = collate([window_example(clips, w, tok, "es", mode) for w in group], 50257)
            for pg in optimiser.param_groups:
                pg["lr"] = lr * min(1.0, (steps + 1) / warmup)
            loss, figures = batch_loss(model, data)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            spent += time.process_time() - t0
            steps += 1
            seen += sum(len(w) for w in group)
            losses.append(figures["loss"])
            if spent >= budget:
                break
        epoch += 1
    return model, {"cpu_s": spent, "steps": steps, "clips_seen": seen,
                   "epochs": seen / len(clips), "loss_first5": float(np.mean(losses[:5])),
                   "loss_last10": float(np.mean(losses[-10:]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=["base", *VARIANTS], required=True)
    ap.add_argument("--budget", type=float, default=240.0, help="training CPU-seconds")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--batch", type=int, default=2, help="windows per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train_clips = render_clips(range(200_000, 200_000 + args.train), seed=0)
    test_clips = render_clips(range(300_000, 300_000 + args.test), seed=1)
    assert not {c.text for c in train_clips} & {c.text for c in test_clips}
    work = Path(tempfile.mkdtemp(prefix="habla-packing-"))
    result: dict = {"variant": args.variant, "budget_cpu_s": args.budget, "lr": args.lr,
                    "batch": args.batch, "train_clips": args.train, "test_clips": args.test}
    try:
        if args.variant == "base":
            from habla.asr import whisper_base_dir

            ct2 = whisper_base_dir()
        else:
            whisper = load_whisper("whisper-base")
            mode, packed = VARIANTS[args.variant]
            model, figures = train(whisper, train_clips, mode, packed, args.budget,
                                   args.batch, args.lr, args.seed)
            result.update(figures)
            merged = model.merge_and_unload()
            hf = save_whisper(whisper._replace(model=merged), work / "hf")
            ct2 = export_ct2(hf, work / "ct2", "float16")
        t0 = time.process_time()
        asr = AsrParams(model=str(ct2), compute_type="int8", cpu_threads=1, batch_size=1)
        outputs = transcribe_arrays(load_asr(asr), [c.wave for c in test_clips], 16000, asr,
                                    batched=False)
        refs = [normalize(c.text) for c in test_clips]
        hyps = [o["text"] for o in outputs]
        normed = [normalize(h) for h in hyps]
        result.update({  # corpus rates: errors over all test clips / their reference length
            "wer": float(jiwer.wer(refs, normed)), "cer": float(jiwer.cer(refs, normed)),
            "exact": sum(wer(c.text, h) == 0 for c, h in zip(test_clips, hyps, strict=True)),
            "wer_per_clip": [round(wer(c.text, h), 4)
                             for c, h in zip(test_clips, hyps, strict=True)],
            "eval_cpu_s": time.process_time() - t0, "hyps": hyps})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
