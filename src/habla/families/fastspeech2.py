"""The `fastspeech2` family: transformers' FastSpeech2ConformerModel with a learned speaker id.

In: a base model folder (HF `save_pretrained` + tokenizer/ + habla.json) or a fresh config;
manifest records with text and word times. Out: training batches (log-mel, per-token
durations, normalised log-F0/energy), the loss, and Griffin-Lim audio from text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import FastSpeech2ConformerConfig, FastSpeech2ConformerModel

import habla.features as feats
import habla.vocoder as vocoder
from habla import atomic
from habla.audio import read_mono, resample
from habla.errors import StageError
from habla.families.base import Family
from habla.features import FeatureSpec
from habla.model_folder import ModelInfo, load_info, resolve_model_dir, save_info
from habla.tokenizer import load_tokenizer, token_letters, word_spans

# ~4.8 M parameters: what trained to intelligible speech in 40 CPU minutes (field notes).
# reduction_factor stays 1: r > 1 mishandles the mask in the training path.
SMALL_CONFIG: dict[str, Any] = {
    "hidden_size": 192, "encoder_layers": 2, "decoder_layers": 2,
    "encoder_linear_units": 512, "decoder_linear_units": 512,
    "positionwise_conv_kernel_size": 1, "decoder_kernel_size": 15, "reduction_factor": 1,
    "duration_predictor_channels": 192, "pitch_predictor_channels": 192,
    "energy_predictor_channels": 192, "speech_decoder_postnet_units": 192,
}
# The text side: what phase 1 trains in full. LoRA on attention alone cannot move pitch.
PROSODY_MODULES = ["encoder.embed", "duration_predictor", "pitch_predictor", "energy_predictor",
                   "pitch_embed", "energy_embed", "speaker_id_embedding"]
# Phase 2 adds LoRA on the decoder's attention and the feed-forward convolutions, and trains
# the 15 k-parameter mel projection in full: on the demo, against LoRA on attention and a
# LoRA'd feat_out, that took the fine-tuned CER from 0.27 to 0.23 at the same 400 steps.
DECODER_MODULES = ["speech_decoder_postnet.feat_out"]
_ENC_ATTN = r"encoder\.conformer_layers\.\d+\.self_attn\.linear_(q|k|v|out)"
_PHASE2 = (r"(encoder|decoder)\.conformer_layers\.\d+\."
           r"(self_attn\.linear_(q|k|v|out)|feed_forward\.conv[12])")


def _unwrap(model: nn.Module) -> FastSpeech2ConformerModel:
    """The FastSpeech2ConformerModel inside a PeftModel / accelerate wrapper."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


class FastSpeech2(Family):
    name: ClassVar[str] = "fastspeech2"

    def __init__(self) -> None:
        super().__init__()
        self.loaded_from: tuple[str, Path] | None = None
        self._timing_tok: tuple[Path, Any] | None = None  # timed_mel's base tokenizer

    # ---------------------------------------------------------------- loading
    def new_model(self, vocab_size: int, speakers: list[str], spec: FeatureSpec | None = None,
                  **overrides: Any) -> FastSpeech2ConformerModel:
        """A randomly initialised model (for pretraining); `self.info` describes it."""
        spec = spec or feats.DEFAULT_SPEC
        if not speakers:
            raise ValueError("new_model: need at least one speaker name")
        # num_speakers >= 2: transformers only builds the speaker embedding for > 1
        config = FastSpeech2ConformerConfig(
            **{**SMALL_CONFIG, "vocab_size": vocab_size, "num_mel_bins": spec.n_mels,
               "num_speakers": max(2, len(speakers)), **overrides})
        self.info = ModelInfo(family=self.name, features=feats.spec_to_dict(spec),
                              speakers=list(speakers), default_speaker=speakers[0])
        return FastSpeech2ConformerModel(config)

    def load_base(self, base: str, revision: str | None = None) -> torch.nn.Module:
        folder = resolve_model_dir(base, revision)
        info = load_info(folder)
        if info.family != self.name:
            raise StageError(f"{folder}: a {info.family!r} model, not {self.name!r} (set "
                             "model.family to match model.base)")
        self.info = info
        self.loaded_from = (base, folder)  # hook_tokenizer reuses it (no second hub fetch)
        model = FastSpeech2ConformerModel.from_pretrained(str(folder))
        return model.eval()

    def features(self, model: torch.nn.Module) -> FeatureSpec:
        return feats.spec_from_dict(self.info.features or {})

    def hook_tokenizer(self, model: torch.nn.Module, tokenizer_dir: Path,
                       base: str) -> dict[str, Any]:
        loaded = self.loaded_from
        base_dir = loaded[1] if loaded and loaded[0] == base else resolve_model_dir(base)
        new_sp = load_tokenizer(tokenizer_dir)
        base_sp = load_tokenizer(base_dir / "tokenizer")
        inner = _unwrap(model)
        old = inner.encoder.embed
        if old.num_embeddings != base_sp.get_piece_size():
            raise StageError(
                f"{base_dir}: the text embedding has {old.num_embeddings} rows but "
                f"{base_dir}/tokenizer/spm.model has {base_sp.get_piece_size()} pieces; this "
                "base model and its tokenizer do not belong together")
        base_rows = {base_sp.id_to_piece(i): i for i in range(base_sp.get_piece_size())}
        n_new = new_sp.get_piece_size()
        with torch.no_grad():
            # pieces the base never saw start at the average embedding: a neutral sound
            weight = old.weight.mean(dim=0, keepdim=True).repeat(n_new, 1)
            copied, fresh = 0, []
            for i in range(n_new):
                piece = new_sp.id_to_piece(i)
                if piece in base_rows:
                    weight[i] = old.weight[base_rows[piece]]
                    copied += 1
                else:
                    fresh.append(piece)
            new = nn.Embedding(n_new, old.embedding_dim, padding_idx=0)
            new.weight.copy_(weight)
        inner.encoder.embed = new
        inner.config.vocab_size = n_new
        inner.vocab_size = n_new
        return {"base_pieces": base_sp.get_piece_size(), "pieces": n_new, "copied": copied,
                "fresh": len(fresh), "fresh_pieces": fresh[:40]}

    def add_speaker(self, model: torch.nn.Module, name: str) -> None:
        speakers = self.info.speakers
        if name in speakers:
            return
        inner = _unwrap(model)
        old = inner.speaker_id_embedding
        speakers.append(name)
        n = max(len(speakers), old.num_embeddings)
        with torch.no_grad():
            weight = torch.cat([old.weight, old.weight.mean(0, keepdim=True)
                                .repeat(n - old.num_embeddings, 1)])
            new = nn.Embedding(n, old.embedding_dim)
            new.weight.copy_(weight)
        inner.speaker_id_embedding = new
        inner.config.num_speakers = n

    def speaker_index(self, name: str | None) -> int:
        speakers = self.info.speakers
        name = name or self.info.default_speaker or (speakers[0] if speakers else None)
        if name not in speakers:
            raise ValueError(f"unknown speaker {name!r}; this model knows {speakers}")
        return speakers.index(name)

    # ---------------------------------------------------------------- training
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        if phase == 1:
            return _ENC_ATTN, list(PROSODY_MODULES)
        if phase == 2:
            return _PHASE2, [*PROSODY_MODULES, *DECODER_MODULES]
        raise ValueError(f"fastspeech2 has LoRA phases 1 and 2, not {phase}")

    def make_example(self, record: Any, tokenizer: Any, spec: FeatureSpec) -> dict[str, Any]:
        if not record.text or not record.text.strip():
            raise ValueError(f"{record.id}: no label text")
        words = record.words or record.truth_words
        if not words:
            raise ValueError(f"{record.id}: no word times ('words' or 'truth_words')")
        wave, sr = read_mono(record.audio)
        wave = resample(wave, sr, spec.sample_rate)
        ids, owners, letter_of = token_letters(tokenizer, record.text, words)
        if not ids:
            raise ValueError(f"{record.id}: text has no tokens")
        targets = feats.clip_targets(wave, owners, words, spec, letter_of)
        return {"id": record.id, "speaker": record.speaker, "input_ids": torch.tensor(ids),
                "seconds": len(wave) / spec.sample_rate, "frames": targets["mel"].shape[0],
                **targets}

    def prosody_stats(self, examples: list[dict[str, Any]]) -> dict[str, float]:
        """Pitch/energy normalisation from training examples (a new base only: adaptation
        keeps the base's statistics, which its predictors were trained against)."""
        stats = feats.prosody_stats(examples)
        self.info.stats = stats
        return stats

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        stats = self.info.stats
        if not stats:
            raise ValueError("collate: no pitch/energy stats (habla.json 'stats'); compute them "
                             "with prosody_stats() before training")
        n_tok = max(len(e["input_ids"]) for e in examples)
        n_frm = max(e["frames"] for e in examples)
        b = len(examples)
        n_mels = examples[0]["mel"].shape[1]
        ids = torch.zeros(b, n_tok, dtype=torch.long)
        mask = torch.zeros(b, n_tok, dtype=torch.long)
        dur = torch.zeros(b, n_tok, dtype=torch.long)
        pitch = torch.zeros(b, n_tok, 1)
        energy = torch.zeros(b, n_tok, 1)
        mel = torch.full((b, n_frm, n_mels), -100.0)  # -100: the model's padding marker
        spk = torch.zeros(b, 1, dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = e["input_ids"]
            mask[i, :n] = 1
            dur[i, :n] = torch.as_tensor(e["durations"])
            pitch[i, :n, 0] = torch.from_numpy(feats.normalise(
                e["log_f0"], stats["log_f0_mean"], stats["log_f0_std"]))
            energy[i, :n, 0] = torch.from_numpy(feats.normalise(
                e["log_energy"], stats["log_energy_mean"], stats["log_energy_std"]))
            mel[i, : e["frames"]] = e["mel"]
            spk[i, 0] = self.speaker_index(e["speaker"])
        return {"input_ids": ids, "attention_mask": mask, "duration_labels": dur,
                "pitch_labels": pitch, "energy_labels": energy, "spectrogram_labels": mel,
                "speaker_ids": spk}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        if not model.training:
            raise RuntimeError("FastSpeech2Conformer computes its loss only in train() mode; "
                               "for validation switch dropout off instead (habla.train)")
        out = model(**batch, return_dict=True)
        return out.loss, {}

    # ---------------------------------------------------------------- inference
    def synthesize(self, model: torch.nn.Module, text: str, tokenizer: Any,
                   speaker: Any = None, griffin_lim_iters: int = 32) -> tuple[np.ndarray, int]:
        spec = self.features(model)
        ids = list(tokenizer.encode(text))
        if not ids:
            raise ValueError(f"synthesize: {text!r} has no tokens")
        device = next(model.parameters()).device
        sid = self.speaker_index(speaker if isinstance(speaker, str) else None)
        model.eval()
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=device),
                        speaker_ids=torch.tensor([[sid]], device=device), return_dict=True)
        wave = vocoder.griffin_lim(out.spectrogram[0], spec, n_iter=griffin_lim_iters)
        return wave, spec.sample_rate


    def timed_mel(self, model: torch.nn.Module, text: str, words: list[str],
                  speaker: str | None = None
                  ) -> tuple[np.ndarray, list[tuple[int, int] | None], list[list[int] | None]]:
        """The base's free-running mel of `text`, each word's frames and each of its letters'
        first frame, from its predicted durations (tokenised with the base's own tokenizer,
        as it was trained)."""
        if self.loaded_from is None:
            raise RuntimeError("timed_mel: load a base model with load_base() first")
        folder = self.loaded_from[1]
        if self._timing_tok is None or self._timing_tok[0] != folder:
            self._timing_tok = (folder, load_tokenizer(folder / "tokenizer"))
        ids, owners, letter_of = token_letters(self._timing_tok[1], text, words)
        if not ids:
            raise ValueError(f"timed_mel: {text!r} has no tokens")
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=device),
                        speaker_ids=torch.tensor([[self.speaker_index(speaker)]], device=device),
                        return_dict=True)
        mel = out.spectrogram[0].float().cpu().numpy()
        durations = out.duration_outputs[0].cpu().numpy().astype(np.int64)
        edges = np.concatenate([[0], np.cumsum(durations)])
        spans: list[tuple[int, int] | None] = []
        letters: list[list[int] | None] = []
        chars = word_spans(text, words)
        for index in range(len(words)):
            tokens = [i for i, o in enumerate(owners) if o == index]
            if not tokens or edges[tokens[-1] + 1] <= edges[tokens[0]]:
                spans.append(None)  # no tokens, or the model gave them no frames
                letters.append(None)
                continue
            start, end = int(edges[tokens[0]]), int(min(edges[tokens[-1] + 1], len(mel)))
            spans.append((start, end))
            n_letters = chars[index][1] - chars[index][0] if chars[index] else 0
            letters.append(_letter_frames(tokens, letter_of, edges, end, n_letters))
        return mel, spans, letters


def _letter_frames(tokens: list[int], letter_of: list[int | None], edges: np.ndarray,
                   end: int, n_letters: int) -> list[int] | None:
    """First frame of each letter of a word from its tokens' frames: a token's first letter
    starts with the token, letters inside a multi-letter token are spaced evenly across it."""
    firsts = [letter_of[t] for t in tokens]
    if (any(k is None for k in firsts) or firsts != sorted(set(firsts)) or firsts[0] != 0
            or firsts[-1] >= n_letters):
        return None
    frames: list[int] = []
    for j, t in enumerate(tokens):
        lo = int(min(edges[t], end))
        hi = int(min(max(edges[t + 1], lo), end))
        count = (firsts[j + 1] if j + 1 < len(tokens) else n_letters) - firsts[j]
        frames.extend(lo + (hi - lo) * k // count for k in range(count))
    return frames


def save_model_folder(model: torch.nn.Module, out_dir: str | Path, tokenizer_dir: str | Path,
                      info: ModelInfo, readme: str) -> Path:
    """A standalone model folder: save_pretrained + tokenizer/ + habla.json + README.md."""
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _unwrap(model).save_pretrained(str(out), safe_serialization=True)
    tok = out / "tokenizer"
    if tok.resolve() != Path(tokenizer_dir).resolve():
        tok.mkdir(exist_ok=True)
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, tok / f.name)
    save_info(out, info)
    atomic.write_text(out / "README.md", readme)
    return out
