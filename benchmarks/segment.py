"""Segment-stage figures: throughput (workers 1 and 2), memory on a long file, incremental cost.

Renders eSpeak sentences into recordings in a temp folder, runs the stage's `segment_all` on
them and prints audio seconds per wall second, peak RSS for a long recording (in a fresh
process) and the wall time of adding one recording to N relative to a full run.
Usage: python benchmarks/segment.py [--recordings 8] [--long-minutes 25]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from habla.config import SegmentParams  # noqa: E402
from habla.manifest import Record, sha256_file  # noqa: E402
from habla.sources.sentences import sentence  # noqa: E402

# the corpus generator's own sentences (the same kind the pipeline renders)
SENTENCES = [sentence(i) for i in range(10)]


def render(root: Path, rid: str, seconds: float, seed: int) -> Record:
    """About `seconds` of eSpeak sentences with random 0.3-1.5 s pauses."""
    from habla.sources.espeak import Espeak

    es, rng, sr = Espeak(seed), np.random.default_rng(seed), 22050
    parts, total, k = [], 0.0, seed
    while total < seconds:
        w, _ = es.synthesize(SENTENCES[k % len(SENTENCES)], "es-419")
        pause = np.zeros(int(rng.uniform(0.3, 1.5) * sr), np.float32)
        parts += [w, pause]
        total += (len(w) + len(pause)) / sr
        k += 1
    path = root / "data/raw" / f"{rid}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.concatenate(parts)
    sf.write(path, wave, sr, subtype="PCM_16")
    return Record(id=rid, audio=path.relative_to(root).as_posix(), duration=len(wave) / sr,
                  sample_rate=sr, speaker="s", language="es", source="bench",
                  sha256=sha256_file(path))


def timed_run(records: list[Record], root: Path, workers: int) -> tuple[float, dict]:
    from habla.stages.segment import segment_all

    t0 = time.perf_counter()
    summary = segment_all(records, SegmentParams(workers=workers), root)
    return time.perf_counter() - t0, summary


def long_child(root: Path, minutes: float) -> None:
    """In a fresh process: RSS after imports and model load, then after the long run."""
    import torch

    from habla.stages.segment import segment_all
    from habla.vad import _silero

    torch.set_num_threads(1)
    _silero()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec = Record.model_validate_json((root / "long.json").read_text())
    tracemalloc.start()
    t0 = time.perf_counter()
    summary = segment_all([rec], SegmentParams(workers=1), root)
    wall = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"long file: {rec.duration / 60:.1f} min, {summary['clips_out']} clips, "
          f"{wall:.1f} s wall ({rec.duration / wall:.0f}x real time)")
    print(f"  peak RSS {peak:.0f} MB (after imports + model: {base:.0f} MB, growth "
          f"{peak - base:.0f} MB), numpy/Python peak {traced:.1f} MB (tracemalloc); "
          "the whole file as float32 would be "
          f"{rec.duration * rec.sample_rate * 4 / 2**20:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0, help="per recording")
    ap.add_argument("--long-minutes", type=float, default=25.0)
    ap.add_argument("--long-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.long_child:
        long_child(args.long_child, args.long_minutes)
        return

    tmp = Path(tempfile.mkdtemp(prefix="habla-bench-segment-"))
    try:
        src = tmp / "src"
        recs = [render(src, f"rec{k:02d}", args.seconds, k) for k in range(args.recordings + 1)]
        audio_s = sum(r.duration for r in recs[:-1])
        print(f"corpus: {len(recs) - 1} recordings, {audio_s:.0f} s of eSpeak speech, "
              f"silero VAD, cpu count {os.cpu_count()}")
        warm = tmp / "warm"  # imports and model load are not segmentation time
        shutil.copytree(src / "data", warm / "data")
        timed_run(recs[-1:], warm, 1)
        for workers in (1, 2):
            root = tmp / f"w{workers}"
            shutil.copytree(src / "data", root / "data")
            wall, summary = timed_run(recs[:-1], root, workers)
            print(f"workers={workers}: {wall:.1f} s wall, {audio_s / wall:.1f} audio s per "
                  f"wall s, {summary['clips_out']} clips")
        root = tmp / "w1"
        shutil.rmtree(root / "data/clips")
        full, _ = timed_run(recs[:-1], root, 1)
        noop, s0 = timed_run(recs[:-1], root, 1)
        one, s1 = timed_run(recs, root, 1)
        print(f"incremental (workers=1): full run of {len(recs) - 1}: {full:.1f} s; "
              f"no-op rerun: {noop:.2f} s ({s0['processed']} processed); "
              f"adding 1: {one:.1f} s ({s1['processed']} processed) = {one / full:.2f} "
              f"of the full run (one recording is {1 / (len(recs) - 1):.2f} of the audio)")

        # Long file: the corpus's audio repeated, written block by block.
        long_root = tmp / "long"
        path = long_root / "data/raw/long.wav"
        path.parent.mkdir(parents=True)
        waves = [sf.read(src / r.audio, dtype="float32")[0] for r in recs]
        with sf.SoundFile(path, "w", 22050, 1, subtype="PCM_16") as f:
            written, k = 0, 0
            while written < args.long_minutes * 60 * 22050:
                f.write(waves[k % len(waves)])
                written += len(waves[k % len(waves)])
                k += 1
        rec = Record(id="long", audio="data/raw/long.wav", duration=written / 22050,
                     sample_rate=22050, speaker="s", language="es", source="bench",
                     sha256=sha256_file(path))
        (long_root / "long.json").write_text(rec.model_dump_json())
        subprocess.run([sys.executable, __file__, "--long-child", str(long_root),
                        "--long-minutes", str(args.long_minutes)], check=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
