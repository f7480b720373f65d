"""Whisper LoRA training cost per clip: one clip per 30-s window against packed windows.

In: nothing (renders its own eSpeak es-419 clips; loads the offline 'whisper-base'). Out: a
table of CPU-seconds per training clip (forward + backward + AdamW step, LoRA r=16 on every
attention projection) for phase-1 and phase-2 labels, unpacked and packed, and one JSON line.
Run: `OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/train_asr.py [--steps 3]`.
Measured 2026-11-30 (2 shared cores, 1 thread, ~5 s clips): 3.07 CPU-s per clip one per
window, 0.65 packed (5.2 clips per window, 4.7x); phase 2: 2.92 against 0.69 (4.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from habla.audio import resample  # noqa: E402
from habla.sources.espeak import Espeak  # noqa: E402
from habla.sources.sentences import sentence  # noqa: E402
from habla.whisper_ct2 import load_whisper  # noqa: E402
from habla.whisper_data import (  # noqa: E402
    SAMPLE_RATE,
    Clip,
    label_lengths,
    one_per_window,
    pack_windows,
    window_example,
)
from habla.whisper_train import add_lora, batch_loss, collate, lora_config  # noqa: E402

VOICES = (("es-419+f2", 140, 75), ("es-419+klatt", 150, 60))  # params.yaml voice, a klatt one

CONFIGS = (  # name, label mode, packed
    ("phase1 one/window", "text", False),
    ("phase1 packed, text", "text", True),
    ("phase1 packed, clips", "clips", True),
    ("phase2 one/window", "words", False),
    ("phase2 packed, words", "words", True),
)


def render_clips(indices: range | list[int], seed: int = 0) -> list[Clip]:
    """sentence(i) in the two voices alternately, 16 kHz, with eSpeak's word starts."""
    tts = Espeak(seed=seed)
    clips = []
    for k, i in enumerate(indices):
        text = sentence(i)
        voice, rate, pitch = VOICES[k % 2]
        wave, starts = tts.synthesize(text, voice, rate, pitch)
        clips.append(Clip(resample(wave, tts.sample_rate, SAMPLE_RATE).astype(np.float32), text,
                          tuple(s for _w, s in starts), id=str(i)))
    return clips


def plan(clips: list[Clip], tokenizer, mode: str, packed: bool, seed: int) -> list:
    if not packed:
        return one_per_window(len(clips), seed)
    return pack_windows([c.duration for c in clips],
                        label_lengths(clips, tokenizer, "es", mode), seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    ap.add_argument("--batch", type=int, default=2, help="windows per step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clips = render_clips(range(200_000, 200_000 + args.clips))
    durations = [c.duration for c in clips]
    print(f"{len(clips)} clips, mean {np.mean(durations):.2f} s, max {max(durations):.2f} s; "
          f"whisper-base, LoRA r=16 on q/k/v/out_proj, batch {args.batch} windows, "
          f"{args.threads} thread(s)")
    whisper = load_whisper("whisper-base")
    tok = whisper.processor.tokenizer
    model = add_lora(whisper.model, lora_config(r=16), seed=args.seed)
    model.train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = []
    for name, mode, packed in CONFIGS:
        windows = plan(clips, tok, mode, packed, args.seed)
        need = (args.steps + 1) * args.batch
        if len(windows) < need:
            raise SystemExit(f"{name}: {len(windows)} windows, need {need}: raise --clips")
        cpu = wall = feat = 0.0
        n_clips = n_tokens = 0
        for step in range(args.steps + 1):  # step 0 warms up, untimed
            group = windows[step * args.batch:(step + 1) * args.batch]
            t0 = time.process_time()
            batch = collate([window_example(clips, w, tok, "es", mode) for w in group], 50257)
            t1, w1 = time.process_time(), time.perf_counter()
            loss, figures = batch_loss(model, batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step:
                feat += t1 - t0
                cpu += time.process_time() - t1
                wall += time.perf_counter() - w1
                n_clips += sum(len(w) for w in group)
                n_tokens += figures["tokens"]
        rows.append({"setting": name, "clips_per_window": n_clips / (args.steps * args.batch),
                     "cpu_s_per_step": cpu / args.steps, "cpu_s_per_clip": cpu / n_clips,
                     "label_tokens_per_window": n_tokens / (args.steps * args.batch),
                     "data_cpu_s_per_clip": feat / n_clips, "wall_s_per_step": wall / args.steps})
    base = {r["setting"].split()[0]: r["cpu_s_per_clip"] for r in rows if "one/" in r["setting"]}
    print(f"{'setting':24} {'clips/win':>9} {'tok/win':>8} {'CPU-s/step':>10} "
          f"{'CPU-s/clip':>10} {'vs 1/win':>8} {'data s/clip':>11}")
    for r in rows:
        r["speedup"] = base[r["setting"].split()[0]] / r["cpu_s_per_clip"]
        print(f"{r['setting']:24} {r['clips_per_window']:9.2f} {r['label_tokens_per_window']:8.0f}"
              f" {r['cpu_s_per_step']:10.2f} {r['cpu_s_per_clip']:10.2f} {r['speedup']:7.2f}x"
              f" {r['data_cpu_s_per_clip']:11.3f}")
    print(json.dumps({"benchmark": "train_asr", "threads": args.threads, "batch": args.batch,
                      "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
