"""The `whisper` family: Whisper speech recognition (transformers), adapted with LoRA.

In: a base as a hub id, a transformers folder, a CTranslate2 folder or the offline
'whisper-base' (habla.whisper_ct2: rebuilt exactly from CTranslate2); manifest records with a
label text (phase 1) and word times (phase 2, the timestamps stage's `words`). Out: training
windows of several clips each (habla.whisper_data), the loss, decoder logits for merge's
parity check, and a merged folder: transformers weights, processor and generation config,
with a CTranslate2 export in `ct2/` that faster-whisper and habla's `asr.model` load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from habla.asr import SAMPLE_RATE
from habla.audio import AudioError, read_mono, resample
from habla.config import Params
from habla.errors import StageError
from habla.families.base import Family
from habla.features import FeatureSpec, spec_from_dict, spec_to_dict
from habla.manifest import Rejects
from habla.model_folder import ModelInfo, has_info, load_info
from habla.text import normalize
from habla.whisper_ct2 import Whisper, export_ct2, load_whisper, save_whisper, whisper_folder
from habla.whisper_data import (
    IGNORE_INDEX,
    WINDOW_SECONDS,
    Clip,
    PackingParams,
    WhisperDataError,
    clip_tokens,
    log_mel,
    one_per_window,
    pack_windows,
    special_ids,
    window_example,
)
from habla.whisper_train import LORA_TARGETS, batch_loss, collate, decoder_logits

log = logging.getLogger("habla.whisper")

CT2_DIR = "ct2"  # the CTranslate2 export inside a merged folder
CT2_QUANTIZATION = "float16"  # how the export stores weights (as the registry's whisper-base)
EXPORT_CHECK_CLIPS = 4  # clips decoded by both the merged model and its export


def _core(model: nn.Module) -> nn.Module:
    """The WhisperForConditionalGeneration inside a PeftModel / accelerate wrapper."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


class WhisperFamily(Family):
    name: ClassVar[str] = "whisper"
    task: ClassVar[str] = "asr"
    uses_project_tokenizer: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.whisper: Whisper | None = None

    def configure(self, params: Params, stage: str) -> None:
        if not stage.startswith("phase"):
            return  # merge: the settings phase 2 trained with (its habla.json) stand
        w = params.whisper
        self.info.settings = {
            "language": params.asr.language, "task": w.task,
            "phase1_labels": w.phase1_labels, "phase2_labels": w.phase2_labels,
            "phase2_text_windows": w.phase2_text_windows,
            "pack": w.pack, "pack_gap": list(w.pack_gap), "seed": params.seed}

    def _setting(self, key: str, default: Any) -> Any:
        return self.info.settings.get(key, default)

    # ---------------------------------------------------------------- loading
    def resolve(self, base: str, revision: str | None = None) -> Path:
        return whisper_folder(base, revision)

    def load_base(self, base: str, revision: str | None = None) -> nn.Module:
        self.whisper = load_whisper(base, revision)
        config = self.whisper.model.config
        spec = FeatureSpec(sample_rate=SAMPLE_RATE, n_fft=400, hop_length=160, win_length=400,
                           n_mels=config.num_mel_bins, f_min=0.0, f_max=SAMPLE_RATE / 2)
        folder = Path(base)
        saved = load_info(folder) if folder.is_dir() and has_info(folder) else None
        if saved is not None and saved.family != self.name:
            raise StageError(f"{folder}: a {saved.family!r} model, not {self.name!r} (set "
                             "model.family to match model.base)")
        # settings from configure() win over those a merged base folder was trained with
        self.info = ModelInfo(
            family=self.name, task="asr", features=spec_to_dict(spec),
            settings={**(saved.settings if saved else {}), **self.info.settings},
            provenance=saved.provenance if saved else None)
        return self.whisper.model

    def features(self, model: nn.Module) -> FeatureSpec:
        return spec_from_dict(self.info.features or {})

    @property
    def tokenizer(self) -> Any:
        if self.whisper is None:
            raise RuntimeError("whisper: load_base first")
        return self.whisper.processor.tokenizer

    def hook_tokenizer(self, model: nn.Module, tokenizer_dir: Path,
                       base: str) -> dict[str, Any]:
        return {"applies": False, "pieces": len(self.tokenizer),
                "why": "Whisper keeps its own byte-level BPE tokenizer; a new SentencePiece "
                       "vocabulary (models/tokenizer) does not apply to it"}

    # ---------------------------------------------------------------- training
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        # every attention projection: encoder self-attention, decoder self- and cross-attention
        if phase in (1, 2):
            return list(LORA_TARGETS), []
        raise ValueError(f"whisper has LoRA phases 1 and 2, not {phase}")

    def _mode(self, phase: int) -> str:
        if phase == 1:
            return self._setting("phase1_labels", "text")
        if phase == 2:
            return self._setting("phase2_labels", "words")
        raise ValueError(f"whisper trains in phases 1 and 2, not {phase}")

    def _clip(self, record: Any, mode: str) -> Clip:
        if not record.text or not normalize(record.text):
            raise WhisperDataError(f"{record.id}: no label text")
        wave, rate = read_mono(record.audio)
        wave16 = resample(wave, rate, SAMPLE_RATE).astype(np.float32)
        starts = None
        if mode == "words":
            words = record.words or []
            if not words or not all(w.aligned and w.start is not None for w in words):
                placed = sum(w.aligned for w in words)
                raise WhisperDataError(f"{record.id}: phase 2 needs a start time for every "
                                       f"word; {placed} of {len(words)} words are aligned")
            starts = tuple(min(max(float(w.start), 0.0), len(wave16) / SAMPLE_RATE)
                           for w in words)
        return Clip(wave16, record.text, starts, id=record.id)

    def make_examples(self, records: list[Any], tokenizer: Any, spec: FeatureSpec,
                      phase: int, rejects: Rejects | None = None) -> list[dict[str, Any]]:
        """Clips packed into 30-s windows (or one per window with whisper.pack false), in a
        plan seeded by `seed` and the phase: the training loop reshuffles the windows every
        epoch, their contents stay. `tokenizer` (the project's SentencePiece) is not used."""
        mode = self._mode(phase)
        language, task = self._setting("language", "es"), self._setting("task", "transcribe")
        ids = special_ids(self.tokenizer, language, task)
        clips: list[Clip] = []
        lengths: list[int] = []
        for rec in records:
            try:
                clip = self._clip(rec, mode)
                n_tokens = len(clip_tokens(self.tokenizer, ids, clip, mode))
                if clip.duration > WINDOW_SECONDS:
                    raise WhisperDataError(f"{rec.id}: {clip.duration:.1f} s is longer than a "
                                           "30-s window")
            except AudioError as exc:
                if rejects is None:
                    raise
                rejects.add(rec.id, exc.reason, exc.detail)
                continue
            except ValueError as exc:  # WhisperDataError: no text, no word times
                if rejects is None:
                    raise
                rejects.add(rec.id, "no_training_target", str(exc))
                continue
            clips.append(clip)
            lengths.append(n_tokens)
        if not clips:
            return []
        seed = int(self._setting("seed", 0)) * 10 + phase
        if self._setting("pack", True):
            gap = self._setting("pack_gap", [0.2, 1.0])
            plan = pack_windows([c.duration for c in clips], lengths, seed,
                                PackingParams(gap_min=gap[0], gap_max=gap[1]))
        else:
            plan = one_per_window(len(clips), seed)
        # phase 2 rehearses transcription: a seeded share of its windows keeps plain-text
        # labels, or timestamp training alone wears down the <|notimestamps|> mode
        share = float(self._setting("phase2_text_windows", 0.0)) if phase == 2 else 0.0
        as_text = np.random.default_rng(seed).random(len(plan)) < share
        n_mels = spec.n_mels
        out = []
        for placement, text_only in zip(plan, as_text, strict=True):
            example = window_example(clips, placement, self.tokenizer, language,
                                     "text" if text_only else mode, n_mels, task)
            out.append({"example": example, "frames": len(example.decoder_input_ids),
                        "seconds": sum(clips[i].duration for i, _ in placement),
                        "clips": [clips[i].id for i, _ in placement]})
        return out

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        return collate([e["example"] for e in examples], pad)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        return batch_loss(model, batch)

    def parity_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoder logits at the label positions (teacher-forced, dropout off)."""
        return decoder_logits(model, batch)[batch["labels"] != IGNORE_INDEX]

    # ---------------------------------------------------------------- model folders
    def save_merged(self, model: nn.Module, folder: Path) -> None:
        """A transformers folder (weights, processor, generation config) and its CTranslate2
        export in `folder/ct2` (float16 weights; faster-whisper quantises at load time)."""
        if self.whisper is None:
            raise RuntimeError("whisper: load_base first")
        core = _core(model)
        save_whisper(self.whisper._replace(model=core), folder)
        export_ct2(folder, Path(folder) / CT2_DIR, CT2_QUANTIZATION)

    def export_parity(self, model: nn.Module, folder: Path, records: list[Any]
                      ) -> dict[str, Any]:
        """Greedy transcripts (notimestamps, the way habla transcribes) of the merged model
        (transformers, fp32) and of its CTranslate2 export (faster-whisper, float32 compute):
        how many of the first records' texts are identical."""
        from faster_whisper import WhisperModel

        language, task = self._setting("language", "es"), self._setting("task", "transcribe")
        export = WhisperModel(str(Path(folder) / CT2_DIR), device="cpu", compute_type="float32",
                              cpu_threads=torch.get_num_threads())
        core = _core(model).eval()
        same, compared, differ = 0, 0, []
        for rec in records[:EXPORT_CHECK_CLIPS]:
            try:
                wave, rate = read_mono(rec.audio)
            except AudioError:
                continue
            wave16 = resample(wave, rate, SAMPLE_RATE).astype(np.float32)
            with torch.no_grad():
                out = core.generate(input_features=torch.from_numpy(log_mel(wave16))[None],
                                    language=language, task=task, max_new_tokens=128)
            hf_text = self.tokenizer.decode(out[0], skip_special_tokens=True).strip()
            segments, _ = export.transcribe(
                wave16, language=language, task=task, beam_size=1, temperature=0.0,
                without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                max_new_tokens=128, log_prob_threshold=None, no_speech_threshold=None,
                compression_ratio_threshold=None)
            ct2_text = " ".join(s.text.strip() for s in segments).strip()
            compared += 1
            if hf_text == ct2_text:
                same += 1
            else:
                differ.append({"id": rec.id, "transformers": hf_text, "ct2": ct2_text})
        if differ:
            log.warning("merge: the CTranslate2 export decodes %d of %d clips differently: %s",
                        len(differ), compared, differ)
        return {"export_texts_compared": compared, "export_texts_identical": same}
