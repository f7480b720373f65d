"""Chatterbox multilingual (Resemble AI, MIT) as a habla family: LoRA on its T3 text-to-token
transformer; S3Gen (tokens to 24 kHz audio) and the voice encoder stay frozen.

In: `ResembleAI/chatterbox` (hub id, pinned with model.revision) or a local folder in the same
layout, and manifest records with label text and word times. Out: training examples (S3 tokens,
a voice-encoder embedding and a prompt from another clip of the speaker, `[es]` grapheme ids),
the shifted masked loss (plus the optional word-time guide), a merged folder that upstream's
`ChatterboxMultilingualTTS.from_local` reads without habla (with the target voice in
conds.pt), and synthesis. Upstream code is imported only when the family is used
(`pip install --no-deps chatterbox-tts`, see upstream.INSTALL).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from habla import paths
from habla.errors import StageError
from habla.families.base import Family, letters_lacking
from habla.families.chatterbox import upstream
from habla.features import FeatureSpec
from habla.manifest import read_manifest
from habla.model_folder import ModelInfo, has_info, load_info

log = logging.getLogger(__name__)

# S3Gen's own mel (24 kHz, 80 bins, 20 ms hop): what MCD and the report describe
SPEC = FeatureSpec(sample_rate=upstream.SAMPLE_RATE, n_fft=1920, hop_length=480,
                   win_length=1920, n_mels=80, f_min=0.0, f_max=8000.0)
VOCODER = "s3gen"
# T3's Llama projections. Phase 1 (the text side): LoRA on every layer's attention with the
# text embedding and text head trained in full; phase 2 adds the feed-forward projections
# (README "Chatterbox": the measured comparison of text-side splits).
ATTENTION = r"t3\.tfmr\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"
PROJECTIONS = r"t3\.tfmr\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
TEXT_MODULES = ["text_emb", "text_head"]
# the guide's preset (params.yaml `phase*.lora`): Chatterbox LoRA guide for es-419 voices
GUIDE_LORA = {"r": 32, "alpha": 64, "dropout": 0.05}
DEFAULT_SETTINGS: dict[str, Any] = {
    "language": "es", "new_tokens": False, "gradient_checkpointing": False,
    "text_loss_weight": 1.0, "word_guide": {"weight": 0.0, "heads": [[12, 15], [13, 11], [9, 2]],
                                            "sigma": 0.15},
    "synthesis": {"watermark": True, "temperature": 0.8, "cfg_weight": 0.5,
                  "exaggeration": 0.5, "repetition_penalty": 2.0, "min_p": 0.05, "top_p": 1.0,
                  "max_new_tokens": 1000},
}


def _core(model: nn.Module) -> nn.Module:
    """The TrainableT3 inside accelerate / DDP / peft wrappers."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


def _conditionals(path: Path) -> tuple[Any, dict[str, Any]]:
    """conds.pt as upstream's `Conditionals.load` reads it (without importing its module,
    which loads the watermarker): (T3Cond, S3Gen reference dict)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    t3_cond = upstream.module("models.t3.modules.cond_enc").T3Cond(**data["t3"])
    return t3_cond, data["gen"]


class ChatterboxFamily(Family):
    name: ClassVar[str] = "chatterbox"
    caches_examples = True  # S3 tokens and voice embeddings, per clip

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self.s3gen: nn.Module | None = None
        self.ve: nn.Module | None = None
        self.text: Any = None  # text.GraphemeText
        self.conds: tuple[Any, dict[str, Any]] | None = None
        self.seed = 1234
        self._encoder: Any = None
        self._extended = False

    # ---- settings
    def setting(self, key: str) -> Any:
        value = self.info.settings.get(key, DEFAULT_SETTINGS[key])
        if isinstance(value, dict):
            return {**DEFAULT_SETTINGS[key], **value}
        return value

    def configure(self, params: Any, stage: str) -> None:
        """Read params `chatterbox.*` into `info.settings` (saved with the model): training
        settings in the phases, synthesis settings at merge."""
        cb = params.chatterbox
        if stage.startswith("phase"):
            self.seed = params.seed
            updates = {"language": cb.language, "new_tokens": cb.new_tokens,
                       "gradient_checkpointing": cb.gradient_checkpointing,
                       "text_loss_weight": cb.text_loss_weight}
            if stage == "phase2":
                updates["word_guide"] = cb.word_guide.model_dump(mode="json")
            self.info.settings.update(updates)
        elif stage == "merge":
            self.info.settings["synthesis"] = cb.synthesis.model_dump(mode="json")

    # ---- loading
    @classmethod
    def recognizes(cls, folder: Path) -> bool:
        return upstream.is_chatterbox_folder(folder)

    @classmethod
    def claims(cls, path_or_id: str) -> bool:
        return path_or_id == upstream.HUB_ID and not Path(path_or_id).is_dir()

    def resolve(self, base: str, revision: str | None = None) -> Path:
        folder = Path(base)
        if folder.is_dir():
            return folder
        if not self.claims(base) and base.count("/") != 1:
            raise StageError(f"chatterbox: model '{base}' is neither a folder nor a hub id")
        return upstream.download(base, revision)

    def synthesis_tokenizer(self, folder: Path) -> Any:
        return None  # the grapheme tokenizer in the folder, loaded with the model

    def unsayable(self, tokenizer: Any, text: str) -> str:
        """Letters the folder's grapheme tokenizer maps to [UNK] or drops (after upstream's
        lowercase + NFKD). Digits are spelt out before tokenizing; the languages upstream
        converts first (zh, ja, he, ko, ru) are left to its converter."""
        from habla.families.chatterbox.text import CONVERTED_LANGUAGES

        if self.text is None or self.text.language in CONVERTED_LANGUAGES:
            return ""
        return letters_lacking(text, lambda c: bool(self.text.missing([c])))

    def text_budget(self, model: nn.Module, tokenizer: Any, text: str) -> tuple[int, int | None]:
        from habla.families.chatterbox.text import prepare

        ids, _ = self.text.encode(prepare(text))
        return len(ids) - 2, int(_core(model).t3.hp.max_text_tokens)  # [START] [STOP] extra

    def load_base(self, base: str, revision: str | None = None) -> nn.Module:
        folder = self.resolve(base, revision)
        try:
            upstream.check_folder(folder)
        except Exception as exc:
            raise StageError(str(exc)) from None
        settings = dict(self.info.settings)
        if has_info(folder):
            self.info = load_info(folder)
            if self.info.family != self.name:
                raise StageError(f"{folder}: a {self.info.family!r} model, not {self.name!r} "
                                 "(set model.family to match model.base)")
        else:
            self.info = ModelInfo(family=self.name)
        self.info.settings = {**self.info.settings, **settings}
        self.info.features = dict(SPEC.__dict__)
        self.info.vocoder = VOCODER
        t3, self.s3gen, self.ve = upstream.load_models(folder)
        for frozen in (self.s3gen, self.ve):
            frozen.requires_grad_(False)
        self.folder = folder
        from habla.families.chatterbox.text import GraphemeText

        self.text = GraphemeText(folder / upstream.TOKENIZER_FILE, self.setting("language"))
        self.conds = (_conditionals(folder / upstream.CONDS_FILE)
                      if (folder / upstream.CONDS_FILE).is_file() else None)
        if self.setting("gradient_checkpointing"):
            # the fix users found for out-of-memory (gokhaneraslan/chatterbox-finetuning#1)
            t3.tfmr.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        from habla.families.chatterbox.model import TrainableT3

        return TrainableT3(t3)

    def set_vocoder(self, name: str, revision: str | None = None) -> None:
        if name.lower() != VOCODER:
            raise ValueError(f"model family 'chatterbox' speaks through S3Gen (frozen): "
                             f"model.vocoder must be '{VOCODER}', not {name!r}")
        self.info.vocoder = VOCODER

    def features(self, model: nn.Module) -> FeatureSpec:
        return SPEC

    def hook_tokenizer(self, model: nn.Module, tokenizer_dir: Path,
                       base: str) -> dict[str, Any]:
        """Chatterbox keeps its grapheme tokenizer (the tokenize stage's SentencePiece model
        only says which characters the data uses). Characters it lacks map to [UNK], unless
        `chatterbox.new_tokens` adds them as new tokens whose embedding and head rows start at
        the mean of the existing rows (a language the base never saw)."""
        from habla.tokenizer import load_tokenizer

        sp = load_tokenizer(tokenizer_dir)
        symbols = [sp.id_to_piece(i).replace("▁", " ") for i in range(sp.get_piece_size())
                   if not sp.is_control(i) and not sp.is_unknown(i)]
        base_vocab = len(self.text)
        missing = self.text.missing(symbols)
        tag = f"[{self.text.language}]"
        has_tag = self.text.tok.token_to_id(tag) is not None
        added: list[int] = []
        if self.setting("new_tokens") and (missing or not has_tag):
            added = self.text.add(missing)
            self._resize(_core(model).t3, len(self.text))
            self._extended = True
        elif not has_tag:
            raise StageError(f"chatterbox: the base tokenizer has no language tag {tag}: set "
                             "chatterbox.new_tokens: true to add it (a new language)")
        if missing and not added:
            log.warning("chatterbox: %d characters of the data are not in the tokenizer and "
                        "read as [UNK]: %s (chatterbox.new_tokens adds them)", len(missing),
                        "".join(missing))
        return {"tokenizer": upstream.TOKENIZER_FILE, "language": self.text.language,
                "base_vocab": base_vocab, "vocab": len(self.text),
                "missing": missing[:40], "new_tokens": len(added)}

    @staticmethod
    def _resize(t3: nn.Module, rows: int) -> None:
        with torch.no_grad():
            old_emb, old_head = t3.text_emb, t3.text_head
            n_old = old_emb.num_embeddings
            emb = nn.Embedding(rows, old_emb.embedding_dim)
            emb.weight[:n_old] = old_emb.weight
            emb.weight[n_old:] = old_emb.weight.mean(0)
            head = nn.Linear(old_head.in_features, rows, bias=False)
            head.weight[:n_old] = old_head.weight
            head.weight[n_old:] = old_head.weight.mean(0)
        t3.text_emb, t3.text_head = emb, head
        t3.hp.text_tokens_dict_size = rows

    # ---- training
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        return (ATTENTION if phase == 1 else PROJECTIONS), list(TEXT_MODULES)

    def _clip_encoder(self) -> Any:
        if self._encoder is None:
            from habla.families.chatterbox.clips import ClipEncoder, encoder_settings

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._encoder = ClipEncoder(self.s3gen, self.ve, encoder_settings(self.folder),
                                        device)
        return self._encoder

    def make_example(self, record: Any, tokenizer: Any, spec: FeatureSpec) -> dict[str, Any]:
        raise NotImplementedError("chatterbox builds examples in make_examples()")

    def make_examples(self, records: list[Any], tokenizer: Any, spec: FeatureSpec,
                      phase: int, rejects: Any = None) -> list[dict[str, Any]]:
        from habla.families.chatterbox.clips import PROMPT_TOKENS, choose_prompt
        from habla.families.chatterbox.text import prepare
        from habla.families.speecht5 import word_token_spans

        encoder = self._clip_encoder()
        pool = {r.id: r for r in records}
        if paths.TRAIN_SPLIT.is_file():  # prompts may come from any training clip
            pool.update({r.id: r for r in read_manifest(paths.TRAIN_SPLIT) if r.id not in pool})
        hp = upstream.module("models.t3.modules.t3_config").T3Config()  # the special ids
        out = []
        for rec in records:
            try:
                if not rec.text:
                    raise ValueError(f"record '{rec.id}' has no label text")
                prompt_rec = choose_prompt(rec, list(pool.values()), self.seed)
                if prompt_rec is None:
                    if rejects is None:
                        raise ValueError(f"no other clip of speaker '{rec.speaker}' to "
                                         f"condition '{rec.id}' on")
                    rejects.add(rec.id, "no_prompt_clip", f"speaker '{rec.speaker}' has no "
                                "other clip to condition on")
                    continue
                words = list(rec.words or [])
                ids, owners = self.text.encode(prepare(rec.text), words)
                tokens = encoder.encode(rec)["speech_tokens"].long()
                prompt = encoder.encode(prompt_rec)
                if len(ids) > hp.max_text_tokens or len(tokens) + 2 > hp.max_speech_tokens:
                    raise ValueError(f"record '{rec.id}' is too long for T3 ({len(ids)} text "
                                     f"ids, {len(tokens)} speech tokens)")
                if len(tokens) == 0:
                    raise ValueError(f"record '{rec.id}' gave no speech tokens")
                speech = torch.cat([torch.tensor([hp.start_speech_token]), tokens,
                                    torch.tensor([hp.stop_speech_token])])
                spans = word_token_spans(owners, words, len(tokens) / upstream.TOKENS_PER_SECOND)
                out.append({"id": rec.id, "text": torch.tensor(ids, dtype=torch.long),
                            "speech": speech, "prompt": prompt["speech_tokens"][:PROMPT_TOKENS]
                            .long(), "speaker_emb": prompt["speaker_emb"],
                            "token_spans": torch.from_numpy(spans), "prompt_id": prompt_rec.id,
                            "frames": len(speech), "seconds": float(rec.duration)})
            except Exception as exc:  # one clip never stops the others
                if rejects is None:
                    raise
                reason = "no_training_target" if isinstance(exc, ValueError) else "internal_error"
                rejects.add(rec.id, reason, str(exc) if reason != "internal_error" else repr(exc))
        return out

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(examples)
        lt = max(len(e["text"]) for e in examples)
        ls = max(len(e["speech"]) for e in examples)
        lp = max(len(e["prompt"]) for e in examples)
        batch = {"text": torch.zeros(n, lt, dtype=torch.long),
                 "text_lens": torch.tensor([len(e["text"]) for e in examples]),
                 "speech": torch.zeros(n, ls, dtype=torch.long),
                 "speech_lens": torch.tensor([len(e["speech"]) for e in examples]),
                 "prompt": torch.zeros(n, lp, dtype=torch.long),
                 "prompt_lens": torch.tensor([len(e["prompt"]) for e in examples]),
                 "speaker_emb": torch.stack([e["speaker_emb"] for e in examples]),
                 "token_spans": torch.zeros(n, lt, 2)}
        for i, e in enumerate(examples):
            batch["text"][i, : len(e["text"])] = e["text"]
            batch["speech"][i, : len(e["speech"])] = e["speech"]
            batch["prompt"][i, : len(e["prompt"])] = e["prompt"]
            batch["token_spans"][i, : len(e["text"])] = e["token_spans"]
        return batch

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        from habla.families.chatterbox.model import guide_loss, shifted_loss

        guide = self.setting("word_guide")
        weight = float(guide["weight"])
        if weight > 0:
            # attention weights need the eager kernel (SDPA does not return them)
            _core(model).t3.tfmr.config._attn_implementation = "eager"
        out = model(**{k: v for k, v in batch.items() if k != "token_spans"},
                    output_attentions=weight > 0)
        speech = shifted_loss(out["speech_logits"], batch["speech"], batch["speech_lens"])
        text = shifted_loss(out["text_logits"], batch["text"], batch["text_lens"])
        total = speech + float(self.setting("text_loss_weight")) * text
        parts = {"speech": float(speech.detach()), "text": float(text.detach())}
        if weight > 0:
            heads = [tuple(h) for h in guide["heads"]]
            layers = len(out["attentions"])
            if any(layer >= layers for layer, _ in heads):
                raise StageError(f"chatterbox.word_guide.heads {heads}: T3 has only {layers} "
                                 "layers")
            attn = guide_loss(out, batch, heads, float(guide["sigma"]))
            total = total + weight * attn
            parts["word_guide"] = float(attn.detach())
        return total, parts

    def parity_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            out = model(**{k: v for k, v in batch.items() if k != "token_spans"})
        return out["speech_logits"]

    # ---- model folders
    def save_merged(self, model: nn.Module, folder: Path) -> None:
        """Upstream's layout: the merged T3, S3Gen and the voice encoder copied unchanged,
        the grapheme tokenizer (with any new tokens) and conds.pt, the adapted speaker's voice
        from one of its training clips, which `from_local` loads as the built-in voice."""
        folder.mkdir(parents=True, exist_ok=True)
        t3 = _core(model).t3
        upstream.save_t3(t3, folder / upstream.T3_FILE)
        for name in (upstream.S3GEN_FILE, upstream.VE_FILE, upstream.CANGJIE_FILE,
                     upstream.SIZES_FILE):
            if (self.folder / name).is_file():
                shutil.copy2(self.folder / name, folder / name)
        if self._extended:
            self.text.save(folder / upstream.TOKENIZER_FILE)
        else:
            shutil.copy2(self.folder / upstream.TOKENIZER_FILE, folder / upstream.TOKENIZER_FILE)
        speaker = self.info.default_speaker
        records = read_manifest(paths.TRAIN_SPLIT) if paths.TRAIN_SPLIT.is_file() else []
        from habla.families.chatterbox.voice import reference_conditionals, save_conditionals

        conds = reference_conditionals(self, records, speaker)
        if conds is not None:
            save_conditionals(conds, folder / upstream.CONDS_FILE)
            self.info.settings["reference_clip"] = conds[2]
        elif (self.folder / upstream.CONDS_FILE).is_file():
            log.warning("chatterbox: no training clip of %r for conds.pt; keeping the base's",
                        speaker)
            shutil.copy2(self.folder / upstream.CONDS_FILE, folder / upstream.CONDS_FILE)

    # ---- inference
    def synthesize(self, model: nn.Module, text: str, tokenizer: Any,
                   speaker: str | None = None, griffin_lim_iters: int = 32
                   ) -> tuple[np.ndarray, int]:
        from habla.families.chatterbox.voice import speak

        return speak(self, _core(model).t3, text), SPEC.sample_rate

