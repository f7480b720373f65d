"""Benchmark: word start accuracy of forced alignment against eSpeak NG's own word events.

In: N synthetic sentences (habla's sentence generator, eSpeak voices), padded with silence.
Out: median / 90th-percentile absolute word start error (ms), aligned fraction and throughput
(audio seconds per wall second) for `align_whisper`, a CTC model or alignment by synthesis
with the shipped base model (`--method tts`), printed as JSON.
Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/timestamps.py --clips 40
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
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--voices", default="es-419+f2,es-419+klatt,es+m3")
    ap.add_argument("--method", choices=["whisper", "ctc", "tts"], default="whisper")
    ap.add_argument("--base", default="models/base", help="model.base for --method tts")
    ap.add_argument("--ctc-model", default="MMS_FA")
    ap.add_argument("--model", default="whisper-base", help="asr.model for --method whisper")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from habla.align import CtcAligner, align_whisper, aligned_fraction
    from habla.asr import load_asr
    from habla.config import AsrParams
    from habla.sources.espeak import Espeak
    from habla.sources.sentences import sentence

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    tts = Espeak(seed=7)
    voices = args.voices.split(",")
    waves, texts, truths, audio_s = [], [], [], 0.0
    for i in range(args.clips):
        text = sentence(1000 + i)
        wave, starts = tts.synthesize(text, voices[i % len(voices)], rate=140, pitch=60)
        lead = float(rng.uniform(0.1, 0.4))  # clips from segment keep 0.1 s+ of margin
        pad = np.zeros(int(lead * tts.sample_rate), np.float32)
        waves.append(np.concatenate([pad, wave, pad[: len(pad) // 2]]))
        texts.append(text)
        truths.append([s + lead for _w, s in starts])
        audio_s += len(waves[-1]) / tts.sample_rate

    t0 = time.perf_counter()
    if args.method == "whisper":
        asr = AsrParams(model=args.model, cpu_threads=args.threads)
        model = load_asr(asr)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        aligned = align_whisper(model, waves, tts.sample_rate, texts, asr.language)
    elif args.method == "tts":
        from habla.align_tts import TtsAligner

        tts_aligner = TtsAligner("fastspeech2", args.base)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        aligned = []
        for w, t in zip(waves, texts, strict=True):
            # the closest base speaker per clip (the stage picks one per dataset speaker)
            speaker = tts_aligner.speaker_for(f"clip{len(aligned)}", [(w, tts.sample_rate, t)])
            aligned.append(tts_aligner.align(w, tts.sample_rate, t, speaker).words)
    else:
        aligner = CtcAligner(args.ctc_model)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        aligned = [aligner.align(w, tts.sample_rate, t) for w, t in zip(waves, texts, strict=True)]
    wall = time.perf_counter() - t0

    errors, fractions, first_word = [], [], []
    for words, truth in zip(aligned, truths, strict=True):
        fractions.append(aligned_fraction(words))
        if len(words) != len(truth):
            raise SystemExit(f"word count mismatch: {[w.word for w in words]} vs {truth}")
        for k, (w, t) in enumerate(zip(words, truth, strict=True)):
            if w.aligned:
                errors.append(abs(w.start - t) * 1000)
                if k == 0:
                    first_word.append(abs(w.start - t) * 1000)
    err = np.array(errors)
    print(json.dumps({
        "method": f"ctc:{args.ctc_model}" if args.method == "ctc" else args.method,
        "model": {"whisper": args.model, "ctc": args.ctc_model, "tts": args.base}[args.method],
        "clips": args.clips, "voices": voices, "words": int(sum(len(t) for t in truths)),
        "aligned_fraction": round(float(np.mean(fractions)), 4),
        "start_error_ms_median": round(float(np.median(err)), 1),
        "start_error_ms_p90": round(float(np.percentile(err, 90)), 1),
        "first_word_error_ms_median": round(float(np.median(first_word)), 1),
        "audio_seconds": round(audio_s, 1), "align_seconds": round(wall, 2),
        "audio_seconds_per_second": round(audio_s / wall, 2), "load_seconds": round(load_s, 2),
        "threads": args.threads,
    }, indent=2))


if __name__ == "__main__":
    main()
