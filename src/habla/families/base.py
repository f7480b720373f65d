"""The small interface every model family implements (one module per family).

Training (`habla.train`), merging and evaluation only talk to a family through this
interface: load a base, hook up a tokenizer, name LoRA targets, turn manifest records into
training examples, compute the loss of a batch, save a merged model, and synthesise (TTS) or
transcribe (ASR). A family declares its task; a new family is one new module that subclasses
`Family` and is registered in `habla.families.FAMILIES`. What a family knows about the model
it loaded (speakers, vocoder, features, ...) lives in `self.info`, the folder's typed
`habla.json` (`habla.model_folder.ModelInfo`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from habla.audio import AudioError
from habla.features import FeatureSpec
from habla.manifest import Rejects
from habla.model_folder import ModelInfo, Task, resolve_model_dir
from habla.text import normalize
from habla.tokenizer import load_tokenizer, unknown_surfaces


def letters_lacking(text: str, lacks: Callable[[str], bool]) -> str:
    """Each letter of `text` for which `lacks(letter)` holds, once, in order: what a family's
    own tokenizer cannot say. Digits are left out (those families spell them in words)."""
    return "".join(c for c in dict.fromkeys(text) if normalize(c) and not c.isdigit()
                   and lacks(c))


class Family(ABC):
    name: ClassVar[str]
    task: ClassVar[Task] = "tts"
    # False: the family keeps the base's own tokenizer (Whisper); the tokenize stage's
    # SentencePiece model is then neither loaded, nor copied into phase and merged folders
    uses_project_tokenizer: ClassVar[bool] = True

    def __init__(self) -> None:
        self.info = ModelInfo(family=self.name, task=self.task)

    # ---- loading
    def configure(self, params: Any, stage: str) -> None:
        """Read the family's own params section (e.g. `whisper:`) before loading; `stage` is
        'phase1', 'phase2' or 'merge'. What training needs goes into `self.info.settings`, so
        that a phase folder's habla.json brings it back when the folder is loaded. Default:
        nothing."""
        return None

    @classmethod
    def recognizes(cls, folder: Path) -> bool:
        """A folder without habla.json that is this family's own layout (an upstream
        checkpoint, e.g. a hub snapshot). Default: no."""
        return False

    @classmethod
    def claims(cls, path_or_id: str) -> bool:
        """A hub id this family downloads itself (only some files of a large repo)."""
        return False

    def resolve(self, base: str, revision: str | None = None) -> Path:
        """The local folder for a folder path or hub id."""
        return resolve_model_dir(base, revision)

    def synthesis_tokenizer(self, folder: Path) -> Any:
        """The tokenizer `synthesize` gets: the folder's tokenizer/ (SentencePiece). Families
        with their own tokenizer in the folder return None."""
        return load_tokenizer(folder / "tokenizer")

    def unsayable(self, tokenizer: Any, text: str) -> str:
        """The letters and digits of `text` this model has no token for, each once, in order
        ('' when it has them all): what it would skip silently. Unknown punctuation is not
        counted: it separates words, as in `habla.text.normalize`. Default: the SentencePiece
        tokenizer `synthesis_tokenizer` gave."""
        if tokenizer is None:
            return ""
        _tokens, _unknown, surfaces = unknown_surfaces(tokenizer, text)
        return "".join(dict.fromkeys(c for c in surfaces if normalize(c)))

    def text_budget(self, model: nn.Module, tokenizer: Any, text: str) -> tuple[int, int | None]:
        """(the text tokens `text` takes, the most the model reads at once or None where its
        config does not say). Default: SentencePiece pieces + </s>, against the position
        table (speecht5: max_text_positions, fastspeech2: max_source_positions)."""
        tokens = len(tokenizer.encode(text)) + 1 if tokenizer is not None else 0
        config = getattr(model, "config", None)
        for key in ("max_text_positions", "max_source_positions"):
            if isinstance(limit := getattr(config, key, None), int):
                return tokens, limit
        return tokens, None

    @abstractmethod
    def load_base(self, base: str, revision: str | None = None) -> nn.Module:
        """A hub id or a local folder; the folder is never written to. Sets `self.info`."""

    @abstractmethod
    def features(self, model: nn.Module) -> FeatureSpec:
        """The audio features the model trains on (its mel, for TTS; its input, for ASR)."""

    @abstractmethod
    def hook_tokenizer(self, model: nn.Module, tokenizer_dir: Path,
                       base: str) -> dict[str, Any]:
        """Swap in the tokenize stage's vocabulary (resize embeddings, initialise rows that
        match base pieces, fail clearly when vocabulary and embeddings disagree), or say why
        it does not apply; returns what was done, for habla.json."""

    def add_speaker(self, model: nn.Module, name: str) -> None:
        """Make `model` able to speak as `name` before adaptation (e.g. a new embedding row).
        Families that condition on speaker vectors computed from audio need do nothing."""
        return None

    def set_vocoder(self, name: str, revision: str | None = None) -> None:
        """Use vocoder `name` ('griffinlim' or a neural vocoder this family can load); the
        choice is written to habla.json. Families without a neural vocoder accept only
        Griffin-Lim."""
        if name.lower().replace("-", "") != "griffinlim":
            raise ValueError(f"model family '{self.name}' has no neural vocoder: "
                             f"model.vocoder must be 'griffinlim', not {name!r}")
        self.info.vocoder = "griffinlim"

    # ---- training
    @abstractmethod
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        """(target_modules, modules_to_save) for LoRA phase 1 or 2."""

    def lora_options(self, phase: int) -> dict[str, Any]:
        """Extra peft.LoraConfig arguments for the phase (e.g. fan_in_fan_out for GPT-2's
        Conv1D layers). Default: none."""
        return {}

    def make_example(self, record: Any, tokenizer: Any, spec: FeatureSpec) -> dict[str, Any]:
        """One manifest record (label text, words, audio) to tensors for training; raise
        ValueError or AudioError for a record that cannot be used."""
        raise NotImplementedError(f"model family '{self.name}' builds examples in "
                                  "make_examples()")

    def make_examples(self, records: list[Any], tokenizer: Any, spec: FeatureSpec,
                      phase: int, rejects: Rejects | None = None) -> list[dict[str, Any]]:
        """Training examples for `phase` (1 or 2; 0: pretraining) from manifest records, each
        with at least "frames" (a length, for batching) and "seconds" (audio seconds it
        covers). Unusable records go to `rejects` with a reason (or raise when `rejects` is
        None). The default makes one example per record with `make_example`; families that
        pack several clips into one example override this."""
        out = []
        for rec in records:
            try:
                out.append(self.make_example(rec, tokenizer, spec))
            except AudioError as exc:
                if rejects is None:
                    raise
                rejects.add(rec.id, exc.reason, exc.detail)
            except ValueError as exc:
                if rejects is None:
                    raise
                rejects.add(rec.id, "no_training_target", str(exc))
            except Exception as exc:  # one clip never stops the others
                if rejects is None:
                    raise
                rejects.add(rec.id, "internal_error", repr(exc))
        return out

    # True for families whose make_examples caches what frozen encoders compute per clip
    # (habla.clip_cache): with several processes, each fills the cache for its share of the
    # clips first, then every process reads the whole cache
    caches_examples: ClassVar[bool] = False

    def prepare_training(self, model: nn.Module, examples: list[dict[str, Any]]) -> None:
        """Anything the family derives from the training examples before the first step
        (e.g. normalisation statistics). Default: nothing."""
        return None

    @abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch (and named parts for logging)."""

    def parity_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A deterministic output of `batch` to compare the merged model with the adapter
        model (merge's parity check). Default: the training forward with dropout and
        BatchNorm updates off, and the spectrogram of the Hugging Face output."""
        captured: list[torch.Tensor] = []
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        handle = core.register_forward_hook(
            lambda _m, _i, out: captured.append(out.spectrogram))
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout | nn.modules.batchnorm._BatchNorm):
                m.eval()
        try:
            torch.manual_seed(0)
            with torch.no_grad():
                self.loss(model, batch)
        finally:
            handle.remove()
            model.eval()
        if not captured:
            raise RuntimeError(f"family {self.name} gives no spectrogram to compare")
        return captured[-1]

    # ---- model folders
    def save_merged(self, model: nn.Module, folder: Path) -> None:
        """Write the merged model's own files into `folder` (habla.json, the tokenizer and
        the model card are written by the merge stage). Default: `save_pretrained`."""
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        core.save_pretrained(str(folder), safe_serialization=True)

    def export_parity(self, model: nn.Module, folder: Path, records: list[Any]
                      ) -> dict[str, Any]:
        """How far the files `save_merged` wrote into `folder` agree with `model` on
        `records`, when they hold more than `save_pretrained` (e.g. an export for another
        runtime); merge writes it to metrics/merge.json. Default: nothing to compare."""
        return {}

    # ---- inference
    def speakers(self) -> list[str]:
        """Speaker names the loaded model can render (empty: it uses speaker vectors)."""
        return list(self.info.speakers)

    def timed_mel(self, model: nn.Module, text: str, words: list[str],
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

    def synthesize(self, model: nn.Module, text: str, tokenizer: Any,
                   speaker: str | None = None, griffin_lim_iters: int = 32
                   ) -> tuple[np.ndarray, int]:
        """Free-running synthesis of `text` (TTS families) to a waveform and its sample rate,
        as `speaker` (a name from `speakers()`; None: the default). `griffin_lim_iters`
        applies when the vocoder is Griffin-Lim."""
        raise NotImplementedError(f"model family '{self.name}' ({self.task}) does not speak")
