"""The voice a Chatterbox model speaks with, and speaking with it.

In: a speaker's training clips (for the merged model's built-in voice) or a folder's conds.pt,
and text. Out: conds.pt in upstream's format (T3's conditioning: voice-encoder embedding, up to
150 prompt tokens from the first 6 s, exaggeration; S3Gen's reference: prompt tokens, 24 kHz mel
and x-vector from the first 10 s), and 24 kHz audio from text, marked with upstream's Perth
watermark unless `chatterbox.synthesis.watermark` is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import habla.families.chatterbox.upstream as upstream
from habla import atomic
from habla.audio import read_mono, resample
from habla.errors import StageError
from habla.families.chatterbox.clips import PROMPT_TOKENS, reference_clip
from habla.families.chatterbox.text import prepare

SPEECH_VOCAB = 6561  # S3 codes; T3 also emits start/stop and unused ids above them
PROMPT_SECONDS, REFERENCE_SECONDS = 6, 10  # upstream's ENC_COND_LEN and DEC_COND_LEN
_watermarker: Any = None


@torch.no_grad()
def reference_conditionals(family: Any, records: list[Any], speaker: str | None
                           ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
    """(T3Cond, S3Gen reference, which clip) for `speaker` from one of its clips."""
    rec = reference_clip(records, speaker) if speaker else None
    if rec is None:
        return None
    wave, sr = read_mono(rec.audio)
    wave24 = resample(wave, sr, upstream.SAMPLE_RATE).astype(np.float32)
    wave16 = resample(wave, sr, upstream.S3_RATE).astype(np.float32)
    s3gen, ve = family.s3gen.eval(), family.ve.eval()
    gen = s3gen.embed_ref(torch.from_numpy(wave24[: REFERENCE_SECONDS * upstream.SAMPLE_RATE]),
                          upstream.SAMPLE_RATE, device="cpu")
    prompt = wave16[: PROMPT_SECONDS * upstream.S3_RATE]
    tokens, _ = s3gen.tokenizer.forward([torch.from_numpy(prompt)], max_len=PROMPT_TOKENS)
    embedding = np.asarray(ve.embeds_from_wavs([wave16], sample_rate=upstream.S3_RATE))
    t3_cond = upstream.module("models.t3.modules.cond_enc").T3Cond(
        speaker_emb=torch.from_numpy(embedding.mean(0, keepdims=True)).float(),
        cond_prompt_speech_tokens=torch.atleast_2d(tokens),
        emotion_adv=0.5 * torch.ones(1, 1, 1))
    return t3_cond, gen, {"id": rec.id, "sha256": rec.sha256, "seconds": rec.duration}


def save_conditionals(conds: tuple[Any, dict[str, Any], Any], path: Path) -> None:
    """What upstream's `Conditionals.save` writes: {"t3": T3Cond fields, "gen": reference}."""
    with atomic.atomic_target(path) as tmp:
        torch.save({"t3": dict(conds[0].__dict__), "gen": conds[1]}, tmp)


def _fresh(t3_cond: Any, exaggeration: float, device: torch.device) -> Any:
    # upstream's inference caches the prompt's embedding on the T3Cond it is given
    cls = type(t3_cond)
    return cls(speaker_emb=t3_cond.speaker_emb, clap_emb=t3_cond.clap_emb,
               cond_prompt_speech_tokens=t3_cond.cond_prompt_speech_tokens,
               emotion_adv=exaggeration * torch.ones(1, 1, 1)).to(device=device)


def watermark(wave: np.ndarray) -> np.ndarray:
    global _watermarker
    if _watermarker is None:
        import perth

        if perth.PerthImplicitWatermarker is None:
            raise StageError("chatterbox: resemble-perth's watermarker does not load; install "
                             "the chatterbox extra or set chatterbox.synthesis.watermark: false")
        _watermarker = perth.PerthImplicitWatermarker()
    return np.asarray(_watermarker.apply_watermark(wave, sample_rate=upstream.SAMPLE_RATE),
                      dtype=np.float32)


@torch.inference_mode()
def speak(family: Any, t3: torch.nn.Module, text: str) -> np.ndarray:
    """24 kHz audio of `text` in the folder's built-in voice (conds.pt)."""
    if family.conds is None:
        raise StageError(f"chatterbox: {family.folder} has no conds.pt, so no voice to speak "
                         "with (merge writes one from the adapted speaker's clips)")
    settings = family.setting("synthesis")
    t3_cond, gen = family.conds
    device = next(t3.parameters()).device
    ids, _ = family.text.encode(prepare(text))
    tokens_in = torch.tensor([ids, ids], device=device)  # conditional and unconditional (CFG)
    # a cap that follows the text: about 2.5 tokens per character is normal speech
    cap = min(int(settings["max_new_tokens"]), 50 + 5 * len(text))
    t3.eval()
    speech = t3.inference(t3_cond=_fresh(t3_cond, float(settings["exaggeration"]), device),
                          text_tokens=tokens_in, max_new_tokens=cap,
                          temperature=float(settings["temperature"]),
                          cfg_weight=float(settings["cfg_weight"]),
                          repetition_penalty=float(settings["repetition_penalty"]),
                          min_p=float(settings["min_p"]), top_p=float(settings["top_p"]))[0]
    speech = speech[speech < SPEECH_VOCAB]
    if speech.numel() == 0:
        return np.zeros(0, dtype=np.float32)
    s3gen = family.s3gen.to(device).eval()
    ref = {k: v.to(device) if torch.is_tensor(v) else v for k, v in gen.items()}
    wave, _ = s3gen.inference(speech_tokens=speech.to(device), ref_dict=ref)
    wave = wave.squeeze(0).float().cpu().numpy()
    return watermark(wave) if settings["watermark"] else wave
