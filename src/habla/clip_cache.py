"""Per-clip tensors computed once and kept by content: speech tokens, speaker embeddings,
codec codes, conditioning features (families whose training inputs come from frozen encoders).

In: a clip's audio sha256, the settings that shape the tensors (encoder id, sample rate, ...),
and a function computing them. Out: the tensors, from `data/cache/clips/<settings key>/` when a
run with the same settings has seen the same audio (one safetensors file per clip, written
atomically: a kill never leaves half an entry, and adding clips computes only the new ones).
Like checkpoints, the cache is resume state, not a DVC output: it is keyed by content, so a
stale entry cannot be read for other audio or settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from habla import atomic, paths

CLIP_CACHE = paths.CLIP_CACHE


class ClipCache:
    """Tensors per clip audio hash, under one folder per `settings` (a JSON-able dict)."""

    def __init__(self, settings: dict[str, Any], root: Path = CLIP_CACHE) -> None:
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        self.key = hashlib.sha256(blob).hexdigest()[:16]
        self.folder = root / self.key
        atomic.sweep(self.folder)  # what a killed run was writing
        self.settings = settings
        self.hits = 0
        self.misses = 0

    def path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.safetensors"

    def get(self, sha256: str) -> dict[str, torch.Tensor] | None:
        path = self.path(sha256)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except Exception:  # unreadable (a foreign or damaged file): computed again
            return None

    def put(self, sha256: str, tensors: dict[str, torch.Tensor]) -> None:
        if not (self.folder / "settings.json").is_file():
            atomic.write_text(self.folder / "settings.json",
                              json.dumps(self.settings, indent=1, sort_keys=True, default=str))
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic.atomic_target(self.path(sha256)) as tmp:
            save_file(contiguous, str(tmp))

    def get_or_compute(self, sha256: str, compute: Callable[[], dict[str, torch.Tensor]]
                       ) -> dict[str, torch.Tensor]:
        found = self.get(sha256)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        tensors = compute()
        self.put(sha256, tensors)
        return tensors
