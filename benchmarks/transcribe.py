"""Benchmark: real-time factor of Whisper decoding one clip at a time vs batched, same clips.

In: N synthetic clips (habla's sentence generator, eSpeak voices). Out: RTF (compute seconds
per audio second) of `transcribe_arrays(batched=False)` and `(batched=True)`, their ratio,
whether both gave the same texts, and mean CER against the sentences, printed as JSON.
Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/transcribe.py --clips 16
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--voices", default="es-419+klatt,es-419+f2")
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from habla.asr import load_asr, transcribe_arrays
    from habla.config import AsrParams
    from habla.sources.espeak import Espeak
    from habla.sources.sentences import sentence
    from habla.text import cer

    tts = Espeak(seed=3)
    voices = args.voices.split(",")
    texts = [sentence(2000 + i) for i in range(args.clips)]
    waves = [tts.synthesize(t, voices[i % len(voices)], 140, 60)[0] for i, t in enumerate(texts)]
    audio_s = sum(len(w) for w in waves) / tts.sample_rate
    params = AsrParams(model=args.model, device=args.device, compute_type=args.compute_type,
                       batch_size=args.batch_size, cpu_threads=args.threads)
    model = load_asr(params)
    transcribe_arrays(model, waves[:1], tts.sample_rate, params)  # warm-up: first-call setup

    timings, outputs = {}, {}
    for mode in ("sequential", "batched"):
        t0 = time.perf_counter()
        outputs[mode] = transcribe_arrays(model, waves, tts.sample_rate, params,
                                          batched=mode == "batched")
        timings[mode] = time.perf_counter() - t0
    same = [a["text"] == b["text"] for a, b in zip(outputs["sequential"], outputs["batched"],
                                                   strict=True)]
    print(json.dumps({
        "model": args.model, "device": args.device, "compute_type": args.compute_type,
        "threads": args.threads, "clips": args.clips, "batch_size": args.batch_size,
        "audio_seconds": round(audio_s, 1),
        "rtf_sequential": round(timings["sequential"] / audio_s, 4),
        "rtf_batched": round(timings["batched"] / audio_s, 4),
        "speedup_batched_over_sequential": round(timings["sequential"] / timings["batched"], 2),
        "same_text_fraction": round(float(np.mean(same)), 3),
        "mean_cer_batched": round(float(np.mean([cer(t, o["text"]) for t, o in
                                                 zip(texts, outputs["batched"], strict=True)])),
                                  4),
    }, indent=2))


if __name__ == "__main__":
    main()
