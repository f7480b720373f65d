"""Model families by name, and the one way to load a finished model folder for synthesis.

In: a family name, or a model folder / hub id holding habla.json. Out: a `Family` instance,
or a `Synthesizer` whose `.synthesize(text, speaker)` gives (float32 waveform, sample rate).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from habla.families.base import Family, read_meta, resolve_model_dir
from habla.families.fastspeech2 import FastSpeech2

FAMILIES: dict[str, type[Family]] = {"fastspeech2": FastSpeech2}
# speecht5 is written alongside; register it once its module exists
if importlib.util.find_spec("habla.families.speecht5") is not None:
    from habla.families import speecht5 as _speecht5

    for _cls in vars(_speecht5).values():
        if isinstance(_cls, type) and issubclass(_cls, Family) and _cls is not Family \
                and getattr(_cls, "name", None):
            FAMILIES[_cls.name] = _cls


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]()


class Synthesizer:
    """A loaded model folder: text (+ speaker name) to a waveform, deterministically."""

    def __init__(self, path_or_id: str, device: str = "cpu", revision: str | None = None,
                 seed: int = 0, griffin_lim_iters: int = 32) -> None:
        from habla.tokenizer import load_tokenizer

        self.folder = resolve_model_dir(path_or_id, revision)
        self.meta = read_meta(self.folder)
        self.family = self.meta["family"]
        self._family = get_family(self.family)
        self.model = self._family.load_base(str(self.folder), revision).to(device).eval()
        self.tokenizer = load_tokenizer(self.folder / "tokenizer")
        self.vocoder_name: str = self.meta.get("vocoder", "griffinlim")
        self.sample_rate: int = int(self.meta["features"]["sample_rate"])
        self.speakers: list[str] = list(self.meta.get("speakers") or [])
        self.default_speaker: str | None = self.meta.get("default_speaker")
        self.seed = seed
        self.griffin_lim_iters = griffin_lim_iters
        self._vectors: dict[str, torch.Tensor] = {}
        vectors = self.folder / "speakers.safetensors"
        if vectors.is_file():
            from safetensors.torch import load_file

            self._vectors = load_file(str(vectors))

    def synthesize(self, text: str, speaker: str | None = None) -> tuple[np.ndarray, int]:
        name = speaker or self.default_speaker
        if self.speakers and name not in self.speakers:
            raise ValueError(f"{self.folder}: unknown speaker {name!r}; known: {self.speakers}")
        spk: Any = self._vectors.get(name, name) if self._vectors else name
        torch.manual_seed(self.seed)  # dropout-in-eval families and Griffin-Lim phases
        return self._family.synthesize(self.model, text, self.tokenizer, speaker=spk,
                                       griffin_lim_iters=self.griffin_lim_iters)


def load_synthesizer(path_or_id: str, device: str = "cpu", revision: str | None = None,
                     griffin_lim_iters: int = 32) -> Synthesizer:
    return Synthesizer(str(Path(path_or_id)) if Path(path_or_id).is_dir() else path_or_id,
                       device=device, revision=revision, griffin_lim_iters=griffin_lim_iters)
