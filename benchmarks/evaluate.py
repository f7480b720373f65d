"""Evaluate-stage figures: MCD throughput and ASR (WER/CER) throughput, in utterances per second.

Renders Spanish sentences with eSpeak NG in two voices (reference es-419+f2, "synthesis"
es+m3), then times `habla.mcd.mcd` on each pair and Whisper (`habla.asr`, params.yaml's
`asr` defaults) transcription + scoring of the synthesised side, batched as the stage does.
Usage: python benchmarks/evaluate.py [--utterances 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from habla.sources.sentences import sentence  # noqa: E402

# the corpus generator's own sentences (the same kind the pipeline renders)
SENTENCES = [sentence(i) for i in range(8)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch and CTranslate2 threads")
    args = ap.parse_args()

    import torch

    from habla import mcd, text
    from habla.asr import load_asr, transcribe_arrays
    from habla.config import AsrParams
    from habla.sources.espeak import Espeak

    torch.set_num_threads(args.threads)
    tts = Espeak(seed=0)
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.utterances)]
    refs = [tts.synthesize(t, "es-419+f2", rate=140, pitch=75)[0] for t in texts]
    syns = [tts.synthesize(t, "es+m3")[0] for t in texts]
    sr = tts.sample_rate
    audio_s = sum(len(w) for w in syns) / sr

    t0 = time.perf_counter()
    scores = [mcd.mcd(s, sr, r, sr) for s, r in zip(syns, refs, strict=True)]
    t_mcd = time.perf_counter() - t0

    asr_params = AsrParams(cpu_threads=args.threads)
    t0 = time.perf_counter()
    model = load_asr(asr_params)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    hyps = [r["text"] for r in transcribe_arrays(model, syns, sr, asr_params)]
    wers = [text.wer(t, h) for t, h in zip(texts, hyps, strict=True)]
    cers = [text.cer(t, h) for t, h in zip(texts, hyps, strict=True)]
    t_asr = time.perf_counter() - t0

    n = args.utterances
    print(f"{n} utterances, {audio_s / n:.2f} s each on average, {args.threads} thread(s)")
    print(f"MCD: {n / t_mcd:.1f} utterance pairs/s ({t_mcd / n * 1000:.0f} ms per pair), "
          f"mean MCD es+m3 vs es-419+f2 {np.mean(scores):.2f}")
    print(f"ASR ({asr_params.model}, {asr_params.compute_type}, batch {asr_params.batch_size}): "
          f"{n / t_asr:.2f} utterances/s, RTF {t_asr / audio_s:.3f}, model load {t_load:.1f} s; "
          f"WER {np.mean(wers):.3f} CER {np.mean(cers):.3f}")


if __name__ == "__main__":
    main()
