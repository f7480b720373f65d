"""XTTS-v2 LoRA training speed on this machine: seconds per step and peak memory, at the tiny
test size and at the real size (random weights: no hub needed), through habla's xtts family.

One step = the family's loss on 1 x 3 s clip (40 text tokens, 65 audio codes, cached
conditioning latents), backward, AdamW on the phase-2 LoRA (r 8, alpha 16 on the GPT-2
projections). Each size runs in its own process, so its peak RSS is its own.
Usage: python benchmarks/xtts_train.py [--size tiny|real|both] [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# model_args of XTTS-v2 (its config.json) and of tests/xtts_tiny.py
SIZES = {
    "real": {"gpt_layers": 30, "gpt_n_model_channels": 1024, "gpt_n_heads": 16,
             "gpt_number_text_tokens": 6681},
    "tiny": {"gpt_layers": 2, "gpt_n_model_channels": 128, "gpt_n_heads": 4,
             "gpt_number_text_tokens": 300},
}


def one_size(size: str, steps: int, threads: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from habla.families import xtts as fx

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    up = fx.upstream()
    config = up.XttsConfig()
    args = {**SIZES[size], "gpt_start_text_token": 261 if size == "real" else 3,
            "gpt_stop_text_token": 0, "gpt_num_audio_tokens": 1026,
            "gpt_start_audio_token": 1024, "gpt_stop_audio_token": 1025,
            "gpt_use_perceiver_resampler": True}
    for key, value in args.items():
        setattr(config.model_args, key, value)
    config.model_args.decoder_input_dim = config.model_args.gpt_n_model_channels
    t0 = time.perf_counter()
    core = up.Xtts(config)
    build_s = time.perf_counter() - t0
    family = fx.Xtts()
    family._model = core
    target, _ = family.lora_targets(2)
    model = get_peft_model(fx.XttsModel(core), LoraConfig(
        r=8, lora_alpha=16, target_modules=target, **family.lora_options(2)))
    lora_modules = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    dim = config.model_args.gpt_n_model_channels
    example = {"text": torch.randint(4, SIZES[size]["gpt_number_text_tokens"], (40,)),
               "codes": torch.randint(0, 1024, (65,)), "wav_length": 3 * 22050,
               "cond": torch.randn(32, dim)}
    batch = family.collate([example])
    model.train()
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        loss, _ = family.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    measured = times[1:]
    return {"size": size, "params_M": round(sum(p.numel() for p in core.parameters()) / 1e6, 1),
            "gpt_params_M": round(sum(p.numel() for p in core.gpt.parameters()) / 1e6, 1),
            "lora_modules": lora_modules,
            "trainable_M": round(sum(p.numel() for p in trainable) / 1e6, 3),
            "build_s": round(build_s, 1), "threads": threads, "steps": steps,
            "s_per_step_mean": round(sum(measured) / len(measured), 3),
            "s_per_step_min": round(min(measured), 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "loss": round(float(loss), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=["tiny", "real", "both"], default="both")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from habla.errors import StageError
    from habla.families.xtts import upstream

    try:
        upstream()
    except StageError as exc:
        print(f"xtts benchmark skipped: {exc}")
        return
    if args.size != "both":
        print(json.dumps(one_size(args.size, args.steps, args.threads)), flush=True)
        return
    for size in ("tiny", "real"):
        done = subprocess.run([sys.executable, __file__, "--size", size, "--steps",
                               str(args.steps), "--threads", str(args.threads)],
                              capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
        if done.returncode or not lines:
            sys.exit(f"xtts_train.py --size {size} failed:\n{done.stderr[-2000:]}")
        row = json.loads(lines[-1])
        print(f"xtts {size:4s}: {row['s_per_step_mean']:.3f} s/step (min "
              f"{row['s_per_step_min']:.3f}), peak RSS {row['peak_rss_mb']} MB, "
              f"{row['params_M']} M params ({row['gpt_params_M']} M GPT), "
              f"{row['lora_modules']} LoRA modules, {row['trainable_M']} M trainable, "
              f"1 x 3 s clip, {row['threads']} thread(s)", flush=True)


if __name__ == "__main__":
    main()
