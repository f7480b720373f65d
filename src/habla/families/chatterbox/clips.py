"""Per-clip inputs of Chatterbox's T3: S3 speech tokens, a voice-encoder embedding, and the
other clip of the same speaker that conditions it.

In: manifest records (audio path, sha256, speaker) and the frozen S3Tokenizer (inside S3Gen)
and VoiceEncoder. Out: per clip {speech_tokens, speaker_emb}, computed once per audio content
and encoder weights (`habla.clip_cache`: adding clips computes only the new ones), and a seeded
prompt choice that is never the target clip (resemble-ai/chatterbox#556: a model conditioned on
its own target learns to copy it, then fails when it speaks from another reference).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import habla.families.chatterbox.upstream as upstream
from habla.audio import read_mono, resample
from habla.clip_cache import ClipCache
from habla.manifest import sha256_file

CACHE_VERSION = 1  # bump when what is stored per clip changes
PROMPT_TOKENS = 150  # upstream: 6 s of the reference at 25 tokens/s (T3Config)


def encoder_settings(folder: Path) -> dict[str, Any]:
    """What shapes the cached tensors: the encoder weights (by content) and the code."""
    return {"family": "chatterbox", "version": CACHE_VERSION,
            "upstream": upstream.UPSTREAM_VERSION,
            "s3gen": sha256_file(folder / upstream.S3GEN_FILE),
            "ve": sha256_file(folder / upstream.VE_FILE)}


class ClipEncoder:
    """S3 tokens and a voice-encoder embedding per clip, through the clip cache."""

    def __init__(self, s3gen: torch.nn.Module, ve: torch.nn.Module, settings: dict[str, Any],
                 device: str = "cpu", root: Path | None = None) -> None:
        self.s3gen, self.ve, self.device = s3gen, ve, device
        self.cache = ClipCache(settings) if root is None else ClipCache(settings, root)

    def encode(self, record: Any) -> dict[str, torch.Tensor]:
        return self.cache.get_or_compute(record.sha256, lambda: self.compute(record.audio))

    @torch.no_grad()
    def compute(self, audio: str | Path) -> dict[str, torch.Tensor]:
        wave, sr = read_mono(audio)
        wave16 = resample(wave, sr, upstream.S3_RATE).astype(np.float32)
        tokenizer = self.s3gen.tokenizer.to(self.device)
        tokens, lengths = tokenizer.forward([torch.from_numpy(wave16)])
        tokens = tokens[0, : int(lengths[0])].to("cpu", torch.int32)
        self.ve.to(self.device)
        embedding = self.ve.embeds_from_wavs([wave16], sample_rate=upstream.S3_RATE)
        return {"speech_tokens": tokens,
                "speaker_emb": torch.from_numpy(np.asarray(embedding).mean(0)).float()}


def _weight(seed: int, target: str, candidate: str) -> str:
    return hashlib.sha256(f"{seed}:{target}:{candidate}".encode()).hexdigest()


def choose_prompt(target: Any, pool: Sequence[Any], seed: int) -> Any | None:
    """The clip that conditions `target`: another clip (other id and other audio) of the
    same speaker, by rendezvous hashing, so the choice is seeded, independent of the pool's
    order, and changes only for targets whose winner is a newly added clip."""
    others = [c for c in pool if c.speaker == target.speaker and c.id != target.id
              and c.sha256 != target.sha256]
    if not others:
        return None
    return max(others, key=lambda c: _weight(seed, target.sha256, c.sha256))


def reference_clip(records: Sequence[Any], speaker: str, seconds: float = 8.0) -> Any | None:
    """The speaker's clip that becomes the merged model's built-in voice (conds.pt): the one
    closest to `seconds` long (upstream reads up to 6 s for T3's prompt, 10 s for S3Gen)."""
    own = [r for r in records if r.speaker == speaker]
    if not own:
        return None
    return min(own, key=lambda r: (abs(r.duration - seconds), r.id))
