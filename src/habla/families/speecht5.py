"""SpeechT5 (`SpeechT5ForTextToSpeech`) as a habla family: the Hugging Face hub path.

In: a hub id (`microsoft/speecht5_tts`) or a saved folder, the project's SentencePiece
tokenizer and clips with word times. Out: training batches, a loss (SpeechT5's own spectrogram
+ stop loss, plus a guided-attention loss whose prior is each word's frames) and free-running
synthesis through HiFi-GAN (`SpeechT5HifiGan`) or the project's Griffin-Lim.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from habla.audio import read_mono, resample
from habla.errors import StageError
from habla.families.base import Family
from habla.features import FeatureSpec
from habla.model_folder import has_info, load_info
from habla.tokenizer import EOS_ID, PAD_ID, encode, load_tokenizer, token_words
from habla.vocoder import griffin_lim, is_griffinlim

log = logging.getLogger(__name__)

# SpeechT5FeatureExtractor's mel, which microsoft/speecht5_hifigan expects: 16 kHz, 64 ms
# Hann window (1024), 16 ms hop (256), 80 slaney mels 80-7600 Hz, magnitude, log10.
SPEC = FeatureSpec(sample_rate=16000, n_fft=1024, hop_length=256, win_length=1024, n_mels=80,
                   f_min=80.0, f_max=7600.0)
MEL_FLOOR = 1e-10
SPEAKERS_FILE = "speakers.safetensors"
SPEAKER_MODULE = "habla_speakers"
# A word's tokens may attend anywhere inside the word's span; outside it the penalty rises
# with the distance in seconds (Gaussian, like the diagonal guide of Tachibana et al.).
WORD_PRIOR_SIGMA = 0.15
MIN_FRAMES = 16  # a barely trained model can stop after 2 frames; vocoders need a few
SYNTH_SEED = 0

_ENC_ATTN = r"speecht5\.encoder\.wrapped_encoder\.layers\.\d+\.attention\.(q|k|v|out)_proj"
_DEC = (r"speecht5\.decoder\.wrapped_decoder\.layers\.\d+\."
        r"((self_attn|encoder_attn)\.(q|k|v|out)_proj|feed_forward\.(intermediate|output)_dense)"
        r"|speecht5\.decoder\.prenet\.(layers\.\d+|final_layer|speaker_embeds_layer)")
_POSTNET = r"speech_decoder_postnet\.(feat_out|prob_out|layers\.\d+\.conv)"


class SpeakerTable(nn.Module):
    """One learned 512-d vector per voice (no speaker encoder offline).

    It rides on the model while training (peft trains and saves it as a `modules_to_save`
    module) and is written to `speakers.safetensors` beside the Hugging Face folder.
    """

    def __init__(self, names: list[str], vectors: torch.Tensor) -> None:
        super().__init__()
        self.names = list(names)
        self.weight = nn.Parameter(vectors.detach().clone().float())

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.weight[index]

    def vectors(self) -> dict[str, torch.Tensor]:
        return {n: self.weight[i].detach().clone().contiguous() for i, n in enumerate(self.names)}


def speaker_table(model: nn.Module) -> SpeakerTable | None:
    """The model's speaker table; under peft the trained copy, not the frozen original."""
    found: dict[str, SpeakerTable] = {
        name: mod for name, mod in model.named_modules() if isinstance(mod, SpeakerTable)
    }
    for name, mod in found.items():
        if ".modules_to_save." in name:
            return mod
    for name, mod in found.items():
        if ".original_module" not in name:
            return mod
    return next(iter(found.values()), None)


def read_speakers(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / SPEAKERS_FILE
    return load_file(str(path)) if path.is_file() else {}


def _core(model: nn.Module) -> nn.Module:
    """The SpeechT5ForTextToSpeech inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# ---------------------------------------------------------------- features
@lru_cache(maxsize=4)
def _mel_parts(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    from transformers.audio_utils import mel_filter_bank, window_function

    filters = mel_filter_bank(
        num_frequency_bins=spec.n_fft // 2 + 1, num_mel_filters=spec.n_mels,
        min_frequency=spec.f_min, max_frequency=spec.f_max or spec.sample_rate / 2,
        sampling_rate=spec.sample_rate, norm="slaney", mel_scale="slaney")
    window = window_function(window_length=spec.win_length, name="hann_window", periodic=True)
    return filters, window


def log10_mel(wave: np.ndarray, spec: FeatureSpec = SPEC) -> np.ndarray:
    """(frames, n_mels) log10 mel exactly as SpeechT5FeatureExtractor computes its targets."""
    from transformers.audio_utils import spectrogram

    filters, window = _mel_parts(spec)
    mel = spectrogram(np.asarray(wave, dtype=np.float32), window=window,
                      frame_length=spec.win_length, hop_length=spec.hop_length,
                      fft_length=spec.n_fft, mel_filters=filters, mel_floor=MEL_FLOOR,
                      log_mel="log10")
    return mel.T.astype(np.float32)


@lru_cache(maxsize=4)
def _slaney_to_htk(spec: FeatureSpec) -> torch.Tensor:
    """Maps a slaney mel to the HTK mel habla.vocoder inverts (through the linear spectrum)."""
    import torchaudio.functional as AF

    slaney = torch.from_numpy(_mel_parts(spec)[0]).float()  # (n_freqs, n_mels)
    htk = AF.melscale_fbanks(n_freqs=spec.n_fft // 2 + 1, f_min=spec.f_min,
                             f_max=spec.f_max or spec.sample_rate / 2, n_mels=spec.n_mels,
                             sample_rate=spec.sample_rate, norm=None, mel_scale="htk")
    return htk.T @ torch.linalg.pinv(slaney.T)  # (n_mels, n_mels)


def word_token_spans(owners: list[int | None], words: list[Any], duration: float
                     ) -> np.ndarray:
    """Per token, the [start, end] seconds it should attend to.

    A token of a timed word gets the word's span. A run of other tokens (spaces,
    punctuation, untimed words, the final </s>) shares the gap between the timed words
    around it, split evenly in order; with no timed word at all this is the diagonal.
    """
    def times(index: int | None) -> tuple[float, float] | None:
        if index is None:
            return None
        w = words[index]
        start = getattr(w, "start", None) if not isinstance(w, dict) else w.get("start")
        end = getattr(w, "end", None) if not isinstance(w, dict) else w.get("end")
        if start is None or end is None or end < start:
            return None
        return float(start), float(end)

    spans = np.zeros((len(owners), 2), dtype=np.float32)
    timed = [times(o) for o in owners]
    i = 0
    while i < len(owners):
        if timed[i] is not None:
            spans[i] = timed[i]
            i += 1
            continue
        j = i
        while j < len(owners) and timed[j] is None:
            j += 1
        left = timed[i - 1][1] if i > 0 else 0.0
        right = timed[j][0] if j < len(owners) else duration
        right = max(right, left)
        edges = np.linspace(left, right, j - i + 1)
        spans[i:j, 0], spans[i:j, 1] = edges[:-1], edges[1:]
        i = j
    return spans


def word_attention_loss(cross_attentions: tuple[torch.Tensor, ...], token_spans: torch.Tensor,
                        attention_mask: torch.Tensor, step_mask: torch.Tensor,
                        seconds_per_step: float, heads: int, sigma: float = WORD_PRIOR_SIGMA
                        ) -> torch.Tensor:
    """Mean attention mass a decoder step puts on tokens whose word is elsewhere in time.

    cross_attentions: per layer (B, H, steps, tokens); token_spans (B, tokens, 2) seconds;
    step_mask (B, steps) marks real (unpadded) decoder steps.
    """
    layers = [a[:, :heads] for a in cross_attentions if a is not None]
    if not layers:
        # decoder LayerDrop skipped every layer this step: no attention to guide
        return token_spans.new_zeros(())
    attn = torch.cat(layers, dim=1)  # (B, L*h, S, N)
    steps = attn.shape[2]
    centre = (torch.arange(steps, device=attn.device, dtype=torch.float32) + 0.5)
    centre = (centre * seconds_per_step)[None, :, None]  # (1, S, 1)
    start = token_spans[:, None, :, 0]
    end = token_spans[:, None, :, 1]
    distance = torch.clamp(start - centre, min=0) + torch.clamp(centre - end, min=0)
    penalty = 1.0 - torch.exp(-(distance**2) / (2 * sigma**2))  # (B, S, N)
    valid = step_mask[:, :, None].bool() & attention_mask[:, None, :].bool()
    weighted = (penalty * valid)[:, None] * attn
    return weighted.sum() / (valid.sum() * attn.shape[1]).clamp(min=1)


# ---------------------------------------------------------------- the family
class SpeechT5Family(Family):
    name = "speecht5"

    def __init__(self) -> None:
        super().__init__()
        self.reduction_factor = 2
        self.speaker_names: list[str] = []
        self.vocoder_name = "griffinlim"
        self._vocoder: nn.Module | None = None
        self.griffin_lim_iters = 32

    # ---- loading
    def load_base(self, base: str, revision: str | None = None) -> nn.Module:
        from transformers import SpeechT5ForTextToSpeech

        try:
            model = SpeechT5ForTextToSpeech.from_pretrained(base, revision=revision)
        except (OSError, ValueError) as exc:
            raise StageError(f"speecht5: cannot load base model '{base}'"
                             f"{f' (revision {revision})' if revision else ''}: {exc}") from None
        self.reduction_factor = int(model.config.reduction_factor)
        folder = Path(base)
        if folder.is_dir() and has_info(folder):
            self.info = load_info(folder)
            if self.info.family != self.name:
                raise StageError(f"{folder}: a {self.info.family!r} model, not {self.name!r} "
                                 "(set model.family to match model.base)")
        default = self.info.default_speaker
        if folder.is_dir():
            vectors = read_speakers(folder)
            if vectors:
                names = [n for n in self.info.speakers if n in vectors]
                names += sorted(n for n in vectors if n not in names)
                self._attach(model, names, torch.stack([vectors[n] for n in names]))
        self.set_vocoder(self.info.vocoder)
        self.info.features = dict(self.features(model).__dict__)
        self.info.speakers = list(self.speaker_names)
        self.info.default_speaker = default or (self.speaker_names[0] if self.speaker_names
                                                else None)
        return model

    def set_vocoder(self, name: str, revision: str | None = None) -> None:
        """'griffinlim' or a SpeechT5HifiGan hub id / folder (loaded now, not at synthesis)."""
        if is_griffinlim(name):
            self.vocoder_name, self._vocoder = "griffinlim", None
            self.info.vocoder = "griffinlim"
            return
        from transformers import SpeechT5HifiGan

        try:
            vocoder = SpeechT5HifiGan.from_pretrained(name, revision=revision)
        except (OSError, ValueError) as exc:
            raise StageError(f"speecht5: cannot load HiFi-GAN vocoder '{name}': {exc}") from None
        self.vocoder_name, self._vocoder = name, vocoder.eval()
        self.info.vocoder = name

    def features(self, model: nn.Module) -> FeatureSpec:
        n_mels = int(_core(model).config.num_mel_bins)
        return FeatureSpec(**{**SPEC.__dict__, "n_mels": n_mels})

    def hook_tokenizer(self, model: nn.Module, tokenizer_dir: Path, base: str) -> dict[str, Any]:
        core = _core(model)
        sp = load_tokenizer(tokenizer_dir)
        old = core.speecht5.encoder.prenet.embed_tokens
        base_pieces = _base_pieces(base)
        if base_pieces is not None and len(base_pieces) > old.num_embeddings:
            raise StageError(
                f"speecht5: vocabulary/embedding mismatch in base '{base}': its tokenizer has "
                f"{len(base_pieces)} pieces but the text embedding has only "
                f"{old.num_embeddings} rows; the tokenizer does not belong to this model")
        new = nn.Embedding(sp.get_piece_size(), old.embedding_dim, padding_idx=PAD_ID)
        matched = 0
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            new.weight.normal_(float(old.weight.mean()), float(old.weight.std()),
                               generator=generator)
            index = {p: i for i, p in enumerate(base_pieces or [])}
            for i in range(sp.get_piece_size()):
                j = index.get(sp.id_to_piece(i))
                if j is not None:
                    new.weight[i] = old.weight[j]
                    matched += 1
            new.weight[PAD_ID].zero_()
        core.speecht5.encoder.prenet.embed_tokens = new
        core.config.vocab_size = sp.get_piece_size()
        core.config.pad_token_id = PAD_ID
        core.config.eos_token_id = sp.eos_id()
        return {"vocab_size": sp.get_piece_size(), "base_vocab": len(base_pieces or []),
                "rows_from_base": matched, "new_rows": sp.get_piece_size() - matched}

    def add_speaker(self, model: nn.Module, name: str) -> None:
        core = _core(model)
        table = speaker_table(core)
        dim = int(core.config.speaker_embedding_dim)
        if table is not None and name in table.names:
            return
        if table is not None:
            # A new voice starts at the centre of the known ones.
            row = table.weight.detach().mean(0, keepdim=True)
            names, vectors = [*table.names, name], torch.cat([table.weight.detach(), row])
        else:
            seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
            row = torch.randn(1, dim, generator=torch.Generator().manual_seed(seed)) * 0.05
            names, vectors = [name], row
        self._attach(core, names, vectors)

    def _attach(self, model: nn.Module, names: list[str], vectors: torch.Tensor) -> None:
        setattr(model, SPEAKER_MODULE, SpeakerTable(names, vectors))
        self.speaker_names = list(names)
        self.info.speakers = list(names)
        self.info.default_speaker = self.info.default_speaker or names[0]

    # ---- training
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        save = ["embed_tokens", SPEAKER_MODULE]
        if phase == 1:
            return _ENC_ATTN, save
        return f"({_ENC_ATTN})|({_DEC})|({_POSTNET})", save

    def make_example(self, record: Any, tokenizer: Any, spec: FeatureSpec) -> dict[str, Any]:
        # ValueError: one unusable record is a reject (habla.train), not a failed stage
        if not record.text:
            raise ValueError(f"speecht5: record '{record.id}' has no label text")
        wave, sr = read_mono(record.audio)
        wave = resample(wave, sr, spec.sample_rate)
        mel = log10_mel(wave, spec)
        r = self.reduction_factor
        mel = mel[: len(mel) // r * r]  # the decoder emits r frames per step
        if len(mel) < r:
            raise ValueError(f"speecht5: record '{record.id}' is too short ({len(wave)} samples)")
        words = list(record.words or [])
        ids, owners = token_words(tokenizer, record.text, words)
        ids, owners = [*ids, EOS_ID], [*owners, None]
        duration = len(mel) * spec.hop_length / spec.sample_rate
        spans = word_token_spans(owners, words, duration)
        return {"id": record.id, "speaker": record.speaker,
                "input_ids": torch.tensor(ids, dtype=torch.long),
                "labels": torch.from_numpy(mel), "token_spans": torch.from_numpy(spans),
                "frames": len(mel), "seconds": len(wave) / spec.sample_rate}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_tok = max(len(e["input_ids"]) for e in examples)
        n_frames = max(len(e["labels"]) for e in examples)
        n_mels = examples[0]["labels"].shape[1]
        batch = {
            "input_ids": torch.zeros(len(examples), n_tok, dtype=torch.long),
            "attention_mask": torch.zeros(len(examples), n_tok, dtype=torch.long),
            "labels": torch.full((len(examples), n_frames, n_mels), -100.0),
            "token_spans": torch.zeros(len(examples), n_tok, 2),
            "speaker_index": torch.zeros(len(examples), dtype=torch.long),
        }
        for i, e in enumerate(examples):
            n, t = len(e["input_ids"]), len(e["labels"])
            batch["input_ids"][i, :n] = e["input_ids"]
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :t] = e["labels"]
            batch["token_spans"][i, :n] = e["token_spans"]
            batch["speaker_index"][i] = self._speaker_index(e["speaker"])
        return batch

    def _speaker_index(self, name: str) -> int:
        if name not in self.speaker_names:
            raise StageError(f"speecht5: speaker '{name}' has no vector; known: "
                             f"{', '.join(self.speaker_names) or 'none'} (call add_speaker first)")
        return self.speaker_names.index(name)

    def _speaker_vectors(self, model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        table = speaker_table(model)
        if table is None:
            raise StageError("speecht5: the model has no speaker table (call add_speaker)")
        return table(index)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        out = self._forward(model, batch)
        config = _core(model).config
        r = self.reduction_factor
        step_mask = batch["labels"][:, r - 1 :: r, 0] != -100.0
        seconds_per_step = r * SPEC.hop_length / SPEC.sample_rate
        attn = word_attention_loss(out.cross_attentions, batch["token_spans"],
                                   batch["attention_mask"], step_mask, seconds_per_step,
                                   heads=int(config.guided_attention_loss_num_heads))
        attn = float(config.guided_attention_loss_scale) * attn
        total = out.loss + attn
        return total, {"spectrogram_stop": float(out.loss.detach()),
                       "word_attention": float(attn.detach())}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        config = _core(model).config
        speakers = self._speaker_vectors(model, batch["speaker_index"])
        # The model's own diagonal guide is replaced by the word-span prior in `loss`.
        guided = config.use_guided_attention_loss
        config.use_guided_attention_loss = False
        try:
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], speaker_embeddings=speakers,
                         output_attentions=True, return_dict=True)
        finally:
            config.use_guided_attention_loss = guided

    def parity_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced mel of a batch, deterministic (the prenet's dropout is always on)."""
        torch.manual_seed(SYNTH_SEED)
        with torch.no_grad():
            return self._forward(model, batch).spectrogram

    # ---- inference
    def speaker_vector(self, model: nn.Module, speaker: Any = None) -> torch.Tensor:
        if isinstance(speaker, torch.Tensor):
            return speaker.reshape(1, -1).float()
        table = speaker_table(model)
        if table is None:
            if speaker is not None:
                raise StageError(f"speecht5: unknown speaker '{speaker}': the model has none")
            return torch.zeros(1, int(_core(model).config.speaker_embedding_dim))
        default = self.info.default_speaker
        name = (default if default in table.names else table.names[0]) if speaker is None \
            else str(speaker)
        if name not in table.names:
            raise StageError(f"speecht5: unknown speaker '{name}'; valid: "
                             f"{', '.join(table.names)}")
        return table.weight[table.names.index(name)].detach().reshape(1, -1)

    def synthesize(self, model: nn.Module, text: str, tokenizer: Any,
                   speaker: Any = None, griffin_lim_iters: int | None = None
                   ) -> tuple[np.ndarray, int]:
        ids = encode(tokenizer, text, add_eos=True)
        if len(ids) <= 1:
            raise StageError(f"speecht5: nothing to say in {text!r}")
        rows = _core(model).speecht5.encoder.prenet.embed_tokens.num_embeddings
        if max(ids) >= rows:
            raise StageError(f"speecht5: tokenizer id {max(ids)} is beyond the model's "
                             f"{rows}-row text embedding: tokenizer and model do not match")
        vector = self.speaker_vector(model, speaker)
        torch.manual_seed(SYNTH_SEED)  # the decoder prenet keeps its dropout on in eval
        with torch.no_grad():
            mel = model.generate_speech(torch.tensor([ids]), speaker_embeddings=vector)
        return self.vocode(mel, griffin_lim_iters), SPEC.sample_rate

    def vocode(self, mel: torch.Tensor, griffin_lim_iters: int | None = None) -> np.ndarray:
        """Waveform of a (frames, n_mels) log10 mel; short outputs are padded with silence."""
        mel = mel.detach().float().cpu()
        frames = len(mel)
        if frames < MIN_FRAMES:
            mel = torch.cat([mel, torch.full((MIN_FRAMES - frames, mel.shape[1]),
                                             float(np.log10(MEL_FLOOR)))])
        if self._vocoder is not None:
            with torch.no_grad():
                wave = self._vocoder(mel).numpy().astype(np.float32)
        else:
            linear = torch.pow(10.0, mel) @ _slaney_to_htk(SPEC).T
            log_htk = torch.log(torch.clamp(linear, min=1e-5))
            wave = griffin_lim(log_htk, SPEC, n_iter=griffin_lim_iters or self.griffin_lim_iters)
        # a padded (too short) output keeps its padding: 2 frames are not listenable audio
        return wave[: max(frames, MIN_FRAMES) * SPEC.hop_length]

    # ---- model folder
    def save_merged(self, model: nn.Module, folder: Path) -> None:
        """save_pretrained without the speaker table (that goes to speakers.safetensors)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        table = getattr(model, SPEAKER_MODULE, None)
        if table is not None:
            vectors = speaker_table(model).vectors()
            save_file(vectors, str(folder / SPEAKERS_FILE))
            delattr(model, SPEAKER_MODULE)
        try:
            model.save_pretrained(folder)
        finally:
            if table is not None:
                setattr(model, SPEAKER_MODULE, table)


def _base_pieces(base: str) -> list[str] | None:
    """The base model's own vocabulary (habla folder, or SpeechT5's `spm_char.model`)."""
    import sentencepiece as spm

    folder = Path(base)
    candidates = [folder / "tokenizer" / "spm.model", folder / "spm_char.model"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None and not folder.exists():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(base, "spm_char.model"))
        except Exception as exc:  # offline or not a SpeechT5 repo: no rows to reuse
            log.warning("speecht5: no base vocabulary for %s (%s); all rows start fresh",
                        base, exc)
            return None
    if path is None:
        log.warning("speecht5: %s has no tokenizer; all embedding rows start fresh", base)
        return None
    sp = spm.SentencePieceProcessor()
    sp.load(str(path))
    # SpeechT5Tokenizer uses the piece ids as model ids (<mask>/<ctc_blank> come after
    # them), so the first len(pieces) embedding rows line up with the pieces.
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
