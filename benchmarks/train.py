"""Training speed of the default fastspeech2 base size: seconds per step, audio seconds/second.

In: nothing (renders its own espeak clips into a temp folder). Out: one JSON line on stdout.
Run: `OMP_WAIT_POLICY=PASSIVE python benchmarks/train.py [--steps 8] [--frames 4000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from habla.audio import resample, write_wav  # noqa: E402
from habla.families.fastspeech2 import FastSpeech2  # noqa: E402
from habla.manifest import Record, Word  # noqa: E402
from habla.sources.espeak import Espeak  # noqa: E402
from habla.sources.sentences import sentence  # noqa: E402
from habla.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402
from habla.train import make_batches  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--frames", type=int, default=4000, help="frames x clips per batch")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="habla-bench-"))
    os.chdir(root)
    tts = Espeak(seed=0)
    texts = [sentence(100_000 + i) for i in range(args.clips)]
    records = []
    for i, text in enumerate(texts):
        wave, starts = tts.synthesize(text, "es+klatt", rate=150, pitch=45)
        wave = resample(wave, tts.sample_rate, 24000)
        write_wav(f"c{i}.wav", wave, 24000)
        records.append(Record(id=f"c{i}", audio=f"c{i}.wav", duration=len(wave) / 24000,
                              sample_rate=24000, speaker="s", language="es", text=text,
                              source="bench", sha256="0" * 64,
                              truth_words=[Word(word=w, start=s) for w, s in starts]))
    sp = save_tokenizer(train_tokenizer(texts), root / "tok")
    family = FastSpeech2()
    torch.manual_seed(0)
    model = family.new_model(sp.get_piece_size(), ["s", "t", "u", "v"]).to(args.device)
    spec = family.features(model)
    t0 = time.perf_counter()
    examples = [family.make_example(r, sp, spec) for r in records]
    feature_s = time.perf_counter() - t0
    family.prosody_stats(examples)
    batches = make_batches([e["frames"] for e in examples], 32, args.frames, 0, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    times, audio = [], []
    for step in range(args.steps + 2):
        chunk = [examples[i] for i in batches[step % len(batches)]]
        batch = {k: v.to(args.device) for k, v in family.collate(chunk).items()}
        t = time.perf_counter()
        loss, _ = family.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # the first steps warm up allocators and kernels
            times.append(time.perf_counter() - t)
            audio.append(sum(e["seconds"] for e in chunk))
    print(json.dumps({
        "benchmark": "train_fastspeech2_default", "device": args.device,
        "threads": args.threads, "params_m": round(sum(p.numel() for p in model.parameters())
                                                   / 1e6, 2),
        "batch_frames": args.frames, "steps": len(times),
        "s_per_step": round(sum(times) / len(times), 3),
        "audio_s_per_s": round(sum(audio) / sum(times), 2),
        "features_s_per_audio_s": round(feature_s / sum(e["seconds"] for e in examples), 4),
    }))


if __name__ == "__main__":
    main()
