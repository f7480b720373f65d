"""Chatterbox T3 LoRA training speed and memory, tiny and real size, and the Perth watermark.

In: nothing (random weights; an eSpeak clip for the watermark). Out: one JSON line per
measurement: s/step and peak RSS of one LoRA step (3-s clip, 40 text ids, a 150-token prompt)
at the tiny test size and at the real multilingual size (536 M parameters), with and without
gradient checkpointing; and what the watermark does to a clip (SNR, detector score).
Each training measurement runs in its own process, so peak RSS is its own.
Run: `OMP_WAIT_POLICY=PASSIVE python benchmarks/chatterbox_train.py [--only tiny|real|watermark]`.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from habla.families.chatterbox import GUIDE_LORA, PROJECTIONS, TEXT_MODULES, upstream  # noqa: E402


def one_step(size: str, checkpointing: bool, steps: int) -> dict:
    from peft import LoraConfig, get_peft_model

    from habla.families.chatterbox.model import TrainableT3, shifted_loss

    torch.manual_seed(0)
    t0 = time.perf_counter()
    sizes = {"t3": dict(upstream.TINY_T3)} if size == "tiny" else None
    t3 = upstream.new_t3(sizes, 2454)
    if checkpointing:
        t3.tfmr.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(TrainableT3(t3), LoraConfig(
        r=GUIDE_LORA["r"], lora_alpha=GUIDE_LORA["alpha"], lora_dropout=GUIDE_LORA["dropout"],
        target_modules=PROJECTIONS, modules_to_save=TEXT_MODULES))
    build = time.perf_counter() - t0
    params = sum(p.numel() for p in t3.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_modules = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    batch = {"text": torch.randint(1, 200, (1, 40)), "text_lens": torch.tensor([40]),
             "speech": torch.randint(0, 6561, (1, 77)), "speech_lens": torch.tensor([77]),
             "prompt": torch.randint(0, 6561, (1, 150)), "prompt_lens": torch.tensor([150]),
             "speaker_emb": torch.randn(1, 256)}
    batch["text"][0, 0], batch["text"][0, -1] = 255, 0
    times = []
    model.train()
    for _ in range(steps):
        t = time.perf_counter()
        out = model(**batch)
        loss = shifted_loss(out["speech_logits"], batch["speech"], batch["speech_lens"]) + \
            shifted_loss(out["text_logits"], batch["text"], batch["text_lens"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return {"size": size, "gradient_checkpointing": checkpointing, "params_m": params / 1e6,
            "trainable_m": trainable / 1e6, "lora_modules": lora_modules,
            "build_s": round(build, 1), "s_per_step": [round(x, 2) for x in times],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "threads": torch.get_num_threads()}


def watermark() -> dict:
    import perth

    from habla.audio import resample
    from habla.sources.espeak import Espeak

    tts = Espeak(seed=0)
    wave, _ = tts.synthesize("La niña pagó trescientos pesos por el pan.", "es-419+f2")
    wave = resample(wave, tts.sample_rate, upstream.SAMPLE_RATE).astype(np.float32)
    marker = perth.PerthImplicitWatermarker()
    t = time.perf_counter()
    marked = np.asarray(marker.apply_watermark(wave, sample_rate=upstream.SAMPLE_RATE))
    seconds = time.perf_counter() - t
    n = min(len(marked), len(wave))
    noise = marked[:n] - wave[:n]
    snr = 10 * np.log10(np.sum(wave[:n] ** 2) / max(np.sum(noise**2), 1e-12))
    return {"what": "perth watermark", "audio_s": round(len(wave) / upstream.SAMPLE_RATE, 2),
            "apply_s": round(seconds, 2), "snr_db": round(float(snr), 1),
            "detector_marked": round(float(marker.get_watermark(marked, upstream.SAMPLE_RATE)), 3),
            "detector_clean": round(float(marker.get_watermark(wave, upstream.SAMPLE_RATE)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["tiny", "real", "watermark"])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(one_step(args.child[0], args.child[1] == "1", args.steps)), flush=True)
        return
    runs = [("tiny", "0"), ("real", "0"), ("real", "1")]
    for size, ckpt in runs:
        if args.only in (None, size):
            subprocess.run([sys.executable, __file__, "--child", size, ckpt,
                            "--steps", str(args.steps)], check=True)
    if args.only in (None, "watermark"):
        print(json.dumps(watermark()), flush=True)


if __name__ == "__main__":
    main()
