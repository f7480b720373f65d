"""The small interface every model family implements (one module per family).

Training (`habla.train`) and evaluation only talk to a family through this interface:
load a base, hook up a tokenizer, name LoRA targets, turn a manifest record into a training
example, compute the loss of a batch, and synthesise audio from text. A new family is one
new module that subclasses `Family` and registers itself in `habla.families.FAMILIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class FeatureSpec:
    """Log-mel settings a family trains on (its vocoder expects the same)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    f_min: float = 0.0
    f_max: float | None = None


class Family(ABC):
    name: ClassVar[str]

    # ---- loading
    @abstractmethod
    def load_base(self, base: str, revision: str | None = None) -> torch.nn.Module:
        """A hub id or a local folder; the folder is never written to."""

    @abstractmethod
    def features(self, model: torch.nn.Module) -> FeatureSpec: ...

    @abstractmethod
    def hook_tokenizer(self, model: torch.nn.Module, tokenizer_dir: Path,
                       base: str) -> dict[str, Any]:
        """Swap in the SentencePiece vocabulary: resize embeddings, initialise rows that
        match base pieces, fail clearly when vocabulary and embeddings disagree."""

    # ---- training
    @abstractmethod
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        """(target_modules, modules_to_save) for LoRA phase 1 or 2."""

    @abstractmethod
    def make_example(self, record: Any, tokenizer: Any, spec: FeatureSpec) -> dict[str, Any]:
        """One manifest record (label text, words, audio) to tensors for training."""

    @abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch (and named parts for logging)."""

    def add_speaker(self, model: torch.nn.Module, name: str) -> None:
        """Make `model` able to speak as `name` before adaptation (e.g. a new embedding row).
        Families that condition on speaker vectors computed from audio need do nothing."""
        return None

    def set_vocoder(self, name: str, revision: str | None = None) -> None:
        """Use vocoder `name` ('griffinlim' or a neural vocoder this family can load); the
        choice is written to the model folder's habla.json. Families without a neural
        vocoder accept only Griffin-Lim."""
        if name.lower().replace("-", "") != "griffinlim":
            raise ValueError(f"model family '{self.name}' has no neural vocoder: "
                             f"model.vocoder must be 'griffinlim', not {name!r}")
        getattr(self, "meta", {})["vocoder"] = "griffinlim"

    # ---- inference
    def speakers(self) -> list[str]:
        """Speaker names the loaded model can render (empty: it uses speaker vectors)."""
        return list(getattr(self, "meta", {}).get("speakers") or [])

    def timed_mel(self, model: torch.nn.Module, text: str, words: list[str],
                  speaker: str | None = None
                  ) -> tuple[np.ndarray, list[tuple[int, int] | None], list[list[int] | None]]:
        """The loaded base model's own rendering of `text`, for alignment by synthesis
        (`habla.align_tts`): a (frames, n_mels) natural-log mel; per entry of `words` (the
        text's words in order) its [start, end) frames, or None for a word with no tokens;
        and per word the first frame of each of its letters (`habla.tokenizer.word_spans`),
        or None where the family cannot tell. Only families that predict token durations
        can do this."""
        raise NotImplementedError(
            f"model family '{self.name}' does not predict token durations, so it cannot "
            "align by synthesis: use timestamps.method 'whisper' or 'ctc'")

    @abstractmethod
    def synthesize(self, model: torch.nn.Module, text: str, tokenizer: Any,
                   speaker: Any = None, griffin_lim_iters: int = 32) -> tuple[np.ndarray, int]:
        """Free-running synthesis of `text` to a waveform and its sample rate. `speaker` is a
        speaker name (fastspeech2) or a speaker vector (families that use vectors);
        `griffin_lim_iters` applies when the vocoder is Griffin-Lim."""


# ---- model folders (shared by every family)
META_FILE = "habla.json"


def resolve_model_dir(path_or_id: str, revision: str | None = None) -> Path:
    """A local model folder for a folder path or a hub id (downloaded to the HF cache)."""
    local = Path(path_or_id)
    if local.is_dir():
        return local
    if local.exists() or path_or_id.startswith((".", "/")) or path_or_id.count("/") != 1:
        raise FileNotFoundError(f"model '{path_or_id}': not a folder and not a hub id "
                                "('org/name')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path_or_id, revision=revision))
    except Exception as exc:  # offline, missing repo, bad revision: say which
        raise FileNotFoundError(f"model '{path_or_id}' (revision {revision}): not a local "
                                f"folder and could not be fetched from the hub: {exc}") from None


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The folder's habla.json (family, features, speakers, provenance)."""
    import json

    path = Path(folder) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a habla model folder needs it (family, "
                                "features, speakers)")
    return json.loads(path.read_text(encoding="utf-8"))
