"""Model families by name, and the one way to load a finished model folder for synthesis.

In: a family name, or a model folder / hub id holding habla.json. Out: a `Family` instance,
or a `Synthesizer` whose `.synthesize(text, speaker)` gives (float32 waveform, sample rate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from habla.errors import StageError
from habla.families.base import Family
from habla.families.chatterbox import ChatterboxFamily
from habla.families.fastspeech2 import FastSpeech2
from habla.families.speecht5 import SpeechT5Family
from habla.families.whisper import WhisperFamily
from habla.families.xtts import Xtts
from habla.model_folder import has_info, load_info, resolve_model_dir

FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (FastSpeech2, SpeechT5Family, ChatterboxFamily, Xtts,
                              WhisperFamily)}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise StageError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]()


def family_of(path_or_id: str, revision: str | None = None) -> tuple[Family, Path]:
    """The family that reads a model folder or hub id, and its local folder: habla.json
    says which; an upstream checkpoint without one (a hub snapshot) is recognised by its
    layout."""
    for cls in FAMILIES.values():
        if cls.claims(path_or_id):
            family = cls()
            return family, family.resolve(path_or_id, revision)
    folder = resolve_model_dir(path_or_id, revision)
    if not has_info(folder):
        for cls in FAMILIES.values():
            if cls.recognizes(folder):
                return cls(), folder
    return get_family(load_info(folder).family), folder  # load_info: the clear error


class Synthesizer:
    """A loaded TTS model folder: text (+ speaker name) to a waveform, deterministically."""

    def __init__(self, path_or_id: str, device: str = "cpu", revision: str | None = None,
                 seed: int = 0, griffin_lim_iters: int = 32) -> None:
        self._family, self.folder = family_of(path_or_id, revision)
        if self._family.task != "tts":
            raise StageError(f"{self.folder}: a {self._family.name} ({self._family.task}) "
                             "model cannot speak")
        self.family = self._family.name
        self.model = self._family.load_base(str(self.folder), revision).to(device).eval()
        self.info = self._family.info
        self.tokenizer = self._family.synthesis_tokenizer(self.folder)
        self.vocoder_name: str = self.info.vocoder
        self.sample_rate: int = int((self.info.features or {})["sample_rate"])
        self.speakers: list[str] = list(self.info.speakers)
        self.default_speaker: str | None = self.info.default_speaker
        self.seed = seed
        self.griffin_lim_iters = griffin_lim_iters

    def unsayable(self, text: str) -> str:
        """The letters and digits of `text` this model has no token for ('' if none)."""
        return self._family.unsayable(self.tokenizer, text)

    def text_budget(self, text: str) -> tuple[int, int | None]:
        """(text tokens `text` takes, the most the model reads at once, None if unknown)."""
        return self._family.text_budget(self.model, self.tokenizer, text)

    def synthesize(self, text: str, speaker: str | None = None) -> tuple[np.ndarray, int]:
        name = speaker or self.default_speaker
        if self.speakers and name not in self.speakers:
            raise StageError(f"{self.folder}: unknown speaker {name!r}; known: "
                             f"{', '.join(self.speakers)}")
        torch.manual_seed(self.seed)  # dropout-in-eval families and Griffin-Lim phases
        return self._family.synthesize(self.model, text, self.tokenizer, speaker=name,
                                       griffin_lim_iters=self.griffin_lim_iters)


def load_synthesizer(path_or_id: str, device: str = "cpu", revision: str | None = None,
                     griffin_lim_iters: int = 32) -> Synthesizer:
    return Synthesizer(str(Path(path_or_id)) if Path(path_or_id).is_dir() else path_or_id,
                       device=device, revision=revision, griffin_lim_iters=griffin_lim_iters)
