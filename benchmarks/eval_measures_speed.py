"""Seconds per utterance of the evaluation measures on this CPU: speaker similarity (GE2E),
DNSMOS, SPTK MCD and habla's log-mel MCD.

Renders Spanish sentences with eSpeak NG in two voices (reference es-419+f2, "synthesis"
es+m3), then times each measure over all utterances (models loaded once, timed apart).
Measures whose model files are not installed (habla[eval-models]) are skipped.
Usage: python benchmarks/eval_measures_speed.py [--utterances 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from habla.sources.sentences import sentence  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    args = ap.parse_args()

    import torch

    from habla import dnsmos, mcd, mcd_sptk, speaker_similarity
    from habla.sources.espeak import Espeak
    from habla.wheel_data import WheelDataError

    torch.set_num_threads(args.threads)
    tts = Espeak(seed=0)
    texts = [sentence(i) for i in range(args.utterances)]
    refs = [tts.synthesize(t, "es-419+f2", rate=140, pitch=75)[0] for t in texts]
    syns = [tts.synthesize(t, "es+m3")[0] for t in texts]
    sr = tts.sample_rate
    n = args.utterances
    audio_s = sum(len(w) for w in syns) / sr
    print(f"{n} utterances, {audio_s / n:.2f} s of synthesis each on average, "
          f"{args.threads} thread(s)")

    def report(name: str, seconds: float, load: float | None = None) -> None:
        extra = f", model load {load:.2f} s" if load is not None else ""
        print(f"  {name:36s} {seconds / n:.3f} s/utt  (RTF {seconds / audio_s:.3f}){extra}")

    t0 = time.perf_counter()
    [mcd.mcd(s, sr, r, sr) for s, r in zip(syns, refs, strict=True)]
    report("MCD habla log-mel (pair)", time.perf_counter() - t0)
    mcd_sptk.mcd(syns[0], sr, refs[0], sr)  # builds the cached warping matrices
    t0 = time.perf_counter()
    [mcd_sptk.mcd(s, sr, r, sr) for s, r in zip(syns, refs, strict=True)]
    report("MCD SPTK order 24 (pair)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    [mcd_sptk.mcd(s, sr, r, sr, order=34) for s, r in zip(syns, refs, strict=True)]
    report("MCD SPTK order 34 (pair)", time.perf_counter() - t0)

    try:
        t0 = time.perf_counter()
        encoder = speaker_similarity.load_encoder()
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        speaker_similarity.embed(encoder, syns, sr)
        report("speaker embedding (clip, batched)", time.perf_counter() - t0, load)
    except WheelDataError as exc:
        print(f"  speaker similarity skipped: {exc}")
    try:
        t0 = time.perf_counter()
        model = dnsmos.Dnsmos(threads=args.threads)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.score_batch(syns, sr)
        report("DNSMOS P.835 + P.808 (clip, all windows)", time.perf_counter() - t0, load)
        t0 = time.perf_counter()
        model.score_batch(syns, sr, max_windows=1)
        report("DNSMOS, first 9 s window only (gate)", time.perf_counter() - t0)
    except WheelDataError as exc:
        print(f"  DNSMOS skipped: {exc}")


if __name__ == "__main__":
    main()
