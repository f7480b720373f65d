"""Scale-out figures: the same stages in 1 and 2 processes (train.processes), and what that
means for 100 hours of audio.

Builds a small project (the default pipeline on a synthetic es-419 corpus of --sentences
sentences) in a temp folder, runs the data stages once, then times transcribe and timestamps
(clips per second) and phase 2 (steps and audio seconds per second) with 1 and 2 processes
(CPU processes over gloo here; one per GPU on a GPU box). Last, it extrapolates the wall time
of 100 hours of audio on an 8-GPU box from per-process rates, and labels it as such.
Usage: python benchmarks/scale.py [--sentences 40] [--steps 20] [--gpu-audio-s-per-s 740]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_project(root: Path, sentences: int, steps: int) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    import helpers_pipeline as hp  # the test suite's throw-away project builder

    params = hp.tiny_params()
    params["download"]["sources"][0]["sentences"] = sentences
    params["download"]["sources"][0]["recording_seconds"] = [60.0, 120.0]
    params["phase2"].update(max_steps=steps, eval_every=steps, save_every=steps, batch_size=8)
    return hp.make_project(root, params)


def run(project: Path, script: str, processes: int) -> float:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["processes"] = processes
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(project / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "python"), f"stages/{script}.py"], cwd=project, env=env,
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=40)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--gpu-audio-s-per-s", type=float, default=740.0,
                    help="one GPU's training throughput (audio s per s) to extrapolate with; "
                    "default: phase-2 fastspeech2 on one H200, fp32, 4000 frames per batch, "
                    "measured in an earlier session (README)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "p", args.sentences, args.steps)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               "PYTHONPATH": str(project / "src")}
        subprocess.run([str(BIN / "dvc"), "repro", "phase1"], cwd=project, env=env, check=True,
                       capture_output=True)
        clips = len((project / "data/labels/transcribed.jsonl").read_text().splitlines())
        train_s = json.loads((project / "metrics/data.json").read_text())["train_hours"] * 3600
        rows = []
        for processes in (1, 2):
            shutil.rmtree(project / "data/cache/asr", ignore_errors=True)
            t_asr = run(project, "transcribe", processes)
            t_ali = run(project, "timestamps", processes)
            shutil.rmtree(project / "checkpoints/phase2", ignore_errors=True)
            t_train = run(project, "phase2", processes)
            batches = json.loads((project / "metrics/phase2.json").read_text())
            steps = batches["steps"]
            # audio per step: the phase's global batch (the same for 1 and 2 processes)
            audio_per_step = min(8, batches["train_clips"]) * train_s / batches["train_clips"]
            rows.append((processes, clips / t_asr, clips / t_ali, steps / t_train,
                         steps * audio_per_step / t_train))
        print(f"corpus: {clips} clips, {train_s / 60:.1f} training minutes; stage wall times "
              "include each process's start-up (imports, model loading)")
        print("| processes | transcribe clips/s | timestamps clips/s | phase-2 steps/s | "
              "phase-2 audio s/s |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.1f} |")
        hours = 100 * 3600
        per_gpu = args.gpu_audio_s_per_s
        print(f"\nExtrapolation, not a measurement: one training epoch over 100 h of audio on "
              f"8 GPUs at {per_gpu:.0f} audio s/s per GPU (linear scaling assumed) = "
              f"{hours / (per_gpu * 8) / 60:.1f} min per epoch.")
        card = json.loads((project / "metrics/data.json").read_text())
        mean_clip = train_s / max(1, int(card["train_clips"]))
        asr_audio = rows[0][1] * mean_clip  # audio s per s of one transcribe process
        print(f"Transcribing 100 h at this CPU's 1-process rate ({asr_audio:.1f} audio s/s) in "
              f"8 processes: {hours / (asr_audio * 8) / 3600:.1f} h (extrapolation; a GPU box "
              "was not measured for transcription).")


if __name__ == "__main__":
    main()
