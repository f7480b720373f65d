"""The `xtts` family: coqui's XTTS-v2 (a GPT-2 over DVAE audio codes, conditioned on a voice's
latents, with a HiFi-GAN decoder), adapted with LoRA on its GPT.

In: `coqui/XTTS-v2` at a pinned revision, or a folder in its layout (config.json, model.pth,
vocab.json, dvae.pth, mel_stats.pth, speakers_xtts.pth); clips with label text. Out: examples
(BPE text after the language tag, the clip's DVAE codes, the conditioning latents of another
clip of the speaker: codes and latents cached per clip by content), the GPT's loss, merged
folders that coqui's own loader reads (the speaker's voice stored in speakers_xtts.pth), and
24 kHz speech whose length is capped by its text. The DVAE, the conditioning encoder and the
HiFi-GAN decoder stay frozen. `coqui-tts` (extra `xtts`) is imported only when the family is
used. The XTTS-v2 weights are under the non-commercial Coqui Public Model License.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import shutil
import sys
import types
from collections import defaultdict
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from habla.audio import AudioError, read_mono, resample
from habla.clip_cache import ClipCache
from habla.config import Params, XttsParams
from habla.errors import StageError
from habla.families.base import Family, letters_lacking
from habla.features import FeatureSpec, spec_from_dict, spec_to_dict
from habla.manifest import Rejects, sha256_file
from habla.model_folder import ModelInfo, has_info, load_info, resolve_model_dir

log = logging.getLogger("habla.xtts")

INSTALL = "pip install 'habla[xtts]'"
LICENSE = "Coqui Public Model License 1.0.0 (CPML): non-commercial use only"
LICENSE_URL = "https://coqui.ai/cpml"
REQUIRED = ("config.json", "model.pth", "vocab.json")  # + dvae.pth to train
DVAE_RATE = 22050  # the DVAE, the conditioning encoder and the GPT's code stride work at 22.05 kHz
DEFAULT_LANGUAGE = "es"
DEFAULT_CODES_PER_TOKEN = 8.0  # a base without training figures: generous, still bounded
EXTRA_CODES = 12  # ~0.5 s on top of the per-token cap, for the final silence
CACHE_VERSION = 1

# Phase 1: the text side of the GPT (what text means to it: embedding and text head).
TEXT_SIDE = r"xtts\.gpt\.(text_embedding|text_head)"
# Phase 2: the GPT-2 projections of the XTTS-v2 fine-tuning guide (120 modules at 30 layers);
# transformers Conv1D layers, so peft needs fan_in_fan_out.
PROJECTIONS = r"xtts\.gpt\.gpt\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
# built by init_gpt_for_inference for generation: never saved (coqui's v1.1 layout)
INFERENCE_ONLY = ("gpt.gpt_inference.", "gpt.gpt.wte.")

_UPSTREAM: types.SimpleNamespace | None = None


def upstream() -> types.SimpleNamespace:
    """coqui-tts's XTTS classes, imported on first use; a clear error when it is missing."""
    global _UPSTREAM
    if _UPSTREAM is None:
        try:
            _UPSTREAM = _import_upstream()
        except ImportError as exc:
            raise StageError(f"model.family xtts needs coqui-tts: {INSTALL} ({exc})") from None
    return _UPSTREAM


def _import_upstream() -> types.SimpleNamespace:
    # `import TTS` refuses torch >= 2.9 unless a module named torchcodec can be found, and only
    # checks that one exists. XTTS's own audio loader (the one user of torchcodec and FFmpeg) is
    # never called here: habla reads audio itself. A placeholder satisfies the check during the
    # import and is removed right after, so nothing else ever sees it.
    placeholder = None
    if "torchcodec" not in sys.modules and importlib.util.find_spec("torchcodec") is None:
        placeholder = types.ModuleType("torchcodec")
        placeholder.__spec__ = ModuleSpec("torchcodec", None)
        sys.modules["torchcodec"] = placeholder
    try:
        import TTS  # noqa: F401
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.layers.tortoise.arch_utils import TorchMelSpectrogram
        from TTS.tts.layers.xtts.dvae import DiscreteVAE
        from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
        from TTS.tts.models.xtts import Xtts
    finally:
        if placeholder is not None and sys.modules.get("torchcodec") is placeholder:
            del sys.modules["torchcodec"]
    return types.SimpleNamespace(XttsConfig=XttsConfig, Xtts=Xtts, DiscreteVAE=DiscreteVAE,
                                 TorchMelSpectrogram=TorchMelSpectrogram,
                                 VoiceBpeTokenizer=VoiceBpeTokenizer)


class XttsModel(nn.Module):
    """What the family hands to habla's training and merging: coqui's Xtts as an ordinary
    module. Xtts.eval() returns None and builds the generation wrapper as a side effect, and
    Xtts.forward raises; this keeps nn.Module's semantics (the family's loss and synthesize
    reach into `.xtts`)."""

    def __init__(self, xtts: nn.Module) -> None:
        super().__init__()
        self.xtts = xtts

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("xtts: use the family's loss() and synthesize()")


def _unwrap(model: nn.Module) -> nn.Module:
    """The Xtts inside an XttsModel, a PeftModel or an accelerate wrapper."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return getattr(inner, "xtts", inner)


def dvae_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """DiscreteVAE's constructor arguments, read from its checkpoint's tensor shapes (dvae.pth is
    a bare state dict; coqui's trainer hard-codes the real model's: 80 mel channels, hidden 512,
    codebook 512 x 1024, 3 residual blocks, kernel 3, 2 strided layers)."""
    try:
        codebook = state["codebook.embed"]  # (codebook_dim, num_tokens)
        first = state["encoder.0.0.weight"]  # (hidden_dim, channels, kernel)
    except KeyError as exc:
        raise StageError(f"dvae.pth: not an XTTS DiscreteVAE state dict (no {exc})") from None
    indices = {int(k.split(".")[1]) for k in state if k.startswith("encoder.")}
    strided = sum(f"encoder.{i}.0.weight" in state for i in indices)
    blocks = sum(f"encoder.{i}.net.0.weight" in state for i in indices)
    return {"channels": int(first.shape[1]), "normalization": None, "positional_dims": 1,
            "num_tokens": int(codebook.shape[1]), "codebook_dim": int(codebook.shape[0]),
            "hidden_dim": int(first.shape[0]), "num_resnet_blocks": blocks,
            "kernel_size": int(first.shape[2]), "num_layers": strided,
            "use_transposed_convs": False}


def _tensor_hash(*modules: nn.Module | torch.Tensor) -> str:
    """sha256 of the weights that shape a cached tensor (for the cache key)."""
    h = hashlib.sha256()
    for item in modules:
        tensors = item.state_dict().items() if isinstance(item, nn.Module) else [("t", item)]
        for name, value in tensors:
            h.update(name.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextmanager
def _nothing():
    yield


@contextmanager
def _eval_mode(*modules: nn.Module):
    was = [m.training for m in modules]
    for m in modules:
        m.train(False)
    try:
        yield
    finally:
        for m, mode in zip(modules, was, strict=True):
            m.train(mode)


def _options(settings: dict[str, Any]) -> dict[str, Any]:
    """The family's options: what params.xtts said at training time, else the defaults."""
    return {**XttsParams().model_dump(), **(settings.get("options") or {})}


class Xtts(Family):
    name: ClassVar[str] = "xtts"
    caches_examples = True  # DVAE codes and conditioning latents, per clip

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self._model: nn.Module | None = None  # the Xtts whose encoders fill the cache
        self._dvae: nn.Module | None = None
        self._dvae_mel: nn.Module | None = None
        self._dvae_hash: str | None = None
        self._encoder_digest: str | None = None
        self._caches: dict[str, ClipCache] = {}

    # ---------------------------------------------------------------- loading
    @classmethod
    def recognizes(cls, folder: Path) -> bool:
        """coqui's own XTTS folder (a hub snapshot of coqui/XTTS-v2): config.json says xtts."""
        config = Path(folder) / "config.json"
        if not (config.is_file() and (Path(folder) / "model.pth").is_file()):
            return False
        try:
            return json.loads(config.read_text(encoding="utf-8")).get("model") == "xtts"
        except (ValueError, AttributeError):
            return False

    def synthesis_tokenizer(self, folder: Path) -> Any:
        return None  # XTTS's BPE vocabulary (vocab.json) is loaded with the model

    def unsayable(self, tokenizer: Any, text: str) -> str:
        """Letters XTTS's BPE vocabulary encodes as [UNK] (after coqui's cleaners for the
        language; they say digits in words)."""
        assert self._model is not None
        unk = self._model.tokenizer.tokenizer.token_to_id("[UNK]")
        if unk is None:
            return ""
        return letters_lacking(text, lambda c: unk in self.encode(c))

    def text_budget(self, model: nn.Module, tokenizer: Any, text: str) -> tuple[int, int | None]:
        # synthesize refuses len(ids) >= gpt_max_text_tokens
        return len(self.encode(text)), int(_unwrap(model).args.gpt_max_text_tokens) - 1

    def load_base(self, base: str, revision: str | None = None) -> nn.Module:
        folder = resolve_model_dir(base, revision)
        missing = [n for n in REQUIRED if not (folder / n).is_file()]
        if missing:
            raise StageError(f"{folder}: not an XTTS-v2 folder (missing {', '.join(missing)}); "
                             "model.base must be coqui/XTTS-v2 or a folder in its layout")
        up = upstream()
        config = up.XttsConfig()
        config.load_json(str(folder / "config.json"))
        if config.model != "xtts":
            raise StageError(f"{folder}/config.json: a {config.model!r} model, not xtts")
        model = up.Xtts(config)
        try:
            model.load_checkpoint(config, checkpoint_dir=str(folder), eval=False, strict=True)
        except RuntimeError:
            try:  # a v1 checkpoint also holds the generation wrapper (coqui's own fallback)
                model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True,
                                      strict=True)
                del model.gpt.gpt_inference, model.gpt.gpt.wte
            except RuntimeError as exc:
                raise StageError(f"{folder}/model.pth does not fit its config.json and "
                                 "vocab.json (a vocabulary extended without resizing the GPT's "
                                 f"text embedding and head?): {str(exc)[:400]}") from None
        voices = list(model.speaker_manager.speakers) if model.speaker_manager else []
        configured = dict(self.info.settings)  # configure() or a phase folder's habla.json
        if has_info(folder):  # a habla folder (merged): what training recorded
            info = load_info(folder)
            if info.family != self.name:
                raise StageError(f"{folder}: a {info.family!r} model, not {self.name!r} (set "
                                 "model.family to match model.base)")
        else:  # coqui's own folder
            spec = FeatureSpec(sample_rate=int(config.model_args.output_sample_rate),
                               n_fft=1024, hop_length=256, win_length=1024, n_mels=80)
            info = ModelInfo(family=self.name, features=spec_to_dict(spec), vocoder="hifigan",
                             speakers=voices, default_speaker=voices[0] if voices else None,
                             settings={"language": DEFAULT_LANGUAGE, "license": LICENSE})
        info.settings = {**info.settings, **configured}
        self.info = info
        self.folder, self._model = folder, model
        self._dvae, self._encoder_digest = None, None
        return XttsModel(model).eval()

    def _load_dvae(self) -> None:
        """The frozen DVAE (dvae.pth) and its mel (normalised by mel_stats.pth)."""
        if self._dvae is not None:
            return
        up = upstream()
        assert self.folder is not None and self._model is not None
        if not (self.folder / "dvae.pth").is_file():
            raise StageError(f"{self.folder}: no dvae.pth, which training needs (coqui/XTTS-v2 "
                             "has it; coqui's own model download leaves it out)")
        state = torch.load(self.folder / "dvae.pth", map_location="cpu", weights_only=True)
        kwargs = dvae_kwargs(state)
        audio_tokens = int(self._model.args.gpt_num_audio_tokens) - 2
        if kwargs["num_tokens"] != audio_tokens:
            raise StageError(f"{self.folder}/dvae.pth has {kwargs['num_tokens']} codes, the GPT "
                             f"expects {audio_tokens}: this DVAE does not belong to this model")
        dvae = up.DiscreteVAE(**kwargs)
        dvae.load_state_dict(state, strict=True)
        stats_file = self.folder / "mel_stats.pth"
        mel_stats = (torch.load(stats_file, map_location="cpu", weights_only=True)
                     if stats_file.is_file() else self._model.mel_stats.detach().clone())
        mel = up.TorchMelSpectrogram(mel_norm_file=None, sampling_rate=DVAE_RATE)
        mel.mel_norms = mel_stats
        self._dvae, self._dvae_mel = dvae.eval(), mel
        self._dvae_hash = hashlib.sha256(
            sha256_file(self.folder / "dvae.pth").encode() + _tensor_hash(mel_stats).encode()
        ).hexdigest()[:16]

    def features(self, model: nn.Module) -> FeatureSpec:
        return spec_from_dict(self.info.features or {})

    def configure(self, params: Params, stage: str) -> None:
        """params `xtts.*` into `info.settings` (saved with the model) in the phases; merge
        and synthesis read them back from habla.json."""
        if stage.startswith("phase"):
            options = params.xtts.model_dump(mode="json")
            self.info.settings.update({"options": options, "language": options["language"],
                                       "license": LICENSE})

    @property
    def language(self) -> str:
        return str(self.info.settings.get("language") or DEFAULT_LANGUAGE)

    def hook_tokenizer(self, model: nn.Module, tokenizer_dir: Path,
                       base: str) -> dict[str, Any]:
        core = _unwrap(model)
        assert self.folder is not None
        return {"applies": False,
                "why": "XTTS reads text with its own BPE vocabulary (vocab.json) after a "
                       "language tag; the tokenize stage's SentencePiece model is not used",
                "vocab_size": int(core.tokenizer.get_number_tokens()),
                "vocab_sha256": sha256_file(self.folder / "vocab.json"),
                "language": self.language}

    def add_speaker(self, model: nn.Module, name: str) -> None:
        # the voice is the speaker's conditioning, computed from audio when merging
        if name not in self.info.speakers:
            self.info.speakers.append(name)

    def set_vocoder(self, name: str, revision: str | None = None) -> None:
        if name.lower().replace("-", "") not in ("hifigan", "builtin"):
            raise ValueError(f"xtts decodes with its own HiFi-GAN decoder: model.vocoder must "
                             f"be 'hifigan', not {name!r}")
        self.info.vocoder = "hifigan"

    # ---------------------------------------------------------------- training
    def lora_targets(self, phase: int) -> tuple[list[str] | str, list[str]]:
        if phase == 1:
            return TEXT_SIDE, []
        if phase == 2:
            return PROJECTIONS, []
        raise ValueError(f"xtts has LoRA phases 1 and 2, not {phase}")

    def lora_options(self, phase: int) -> dict[str, Any]:
        return {"fan_in_fan_out": True} if phase == 2 else {}

    def encode(self, text: str) -> list[int]:
        """XTTS's token ids of `text`: lower-cased, numbers and abbreviations expanded by coqui's
        cleaners, after the language tag ('[es]')."""
        assert self._model is not None
        return list(self._model.tokenizer.encode(text.strip().lower(), self.language))

    def _cache(self, what: str, settings: dict[str, Any]) -> ClipCache:
        key = f"{what}:{sorted(settings.items())}"
        if key not in self._caches:
            self._caches[key] = ClipCache({"family": self.name, "what": what,
                                           "version": CACHE_VERSION, **settings})
        return self._caches[key]

    def _wave22(self, path: str) -> np.ndarray:
        wave, rate = read_mono(path)
        return resample(wave, rate, DVAE_RATE)

    def _codes(self, audio: str, sha: str, wave: np.ndarray | None = None) -> torch.Tensor:
        self._load_dvae()
        cache = self._cache("dvae_codes", {"dvae": self._dvae_hash, "rate": DVAE_RATE})

        def compute() -> dict[str, torch.Tensor]:
            w = self._wave22(audio) if wave is None else wave
            with torch.no_grad():
                mel = self._dvae_mel(torch.from_numpy(w)[None])
                codes = self._dvae.get_codebook_indices(mel)
            return {"codes": codes[0].to(torch.int64).clone()}

        return cache.get_or_compute(sha, compute)["codes"]

    def _conditioning(self, audio: str, sha: str, seconds: float) -> torch.Tensor:
        """The GPT's conditioning latents (32 x d) of the first `seconds` of a clip."""
        core = self._model
        assert core is not None
        gpt = core.gpt
        cache = self._cache("conditioning", {
            "encoder": self._encoder_hash(), "seconds": seconds, "rate": DVAE_RATE})

        def compute() -> dict[str, torch.Tensor]:
            w = self._wave22(audio)[: int(seconds * DVAE_RATE)]
            with _eval_mode(gpt.conditioning_encoder, gpt.conditioning_perceiver):
                latent = core.get_gpt_cond_latents(torch.from_numpy(w)[None], DVAE_RATE,
                                                   length=-1, chunk_length=math.ceil(seconds))
            return {"latent": latent[0].detach().cpu().clone()}

        return cache.get_or_compute(sha, compute)["latent"]

    def _encoder_hash(self) -> str:
        """The weights the conditioning latents come from (frozen in both phases)."""
        if self._encoder_digest is None:
            gpt = self._model.gpt
            self._encoder_digest = _tensor_hash(
                gpt.conditioning_encoder, gpt.conditioning_perceiver, self._model.mel_stats)
        return self._encoder_digest

    def make_examples(self, records: list[Any], tokenizer: Any, spec: FeatureSpec,
                      phase: int, rejects: Rejects | None = None) -> list[dict[str, Any]]:
        """One example per clip; each clip is conditioned on the start of another clip of its
        speaker (the next one by content hash), never on itself unless it is the only one."""
        opts = _options(self.info.settings)
        low, high = opts["conditioning_seconds"]
        partner = _partners(records, low)
        unk = self._model.tokenizer.tokenizer.token_to_id("[UNK]")
        out = []
        for rec in records:
            try:
                out.append(self._example(rec, partner[rec.id], opts, high, unk))
            except AudioError as exc:
                if rejects is None:
                    raise
                rejects.add(rec.id, exc.reason, exc.detail)
            except _Unusable as exc:
                if rejects is None:
                    raise ValueError(str(exc)) from None
                rejects.add(rec.id, exc.reason, str(exc))
            except Exception as exc:  # one clip never stops the others
                if rejects is None:
                    raise
                rejects.add(rec.id, "internal_error", repr(exc))
        return out

    def _example(self, rec: Any, cond: Any, opts: dict[str, Any], cond_seconds: float,
                 unk: int | None) -> dict[str, Any]:
        if not rec.text or not rec.text.strip():
            raise _Unusable("no_text", f"{rec.id}: no label text")
        ids = self.encode(rec.text)
        if unk is not None and unk in ids:
            raise _Unusable("unknown_symbols", f"{rec.id}: {rec.text!r} has symbols XTTS's "
                            "vocabulary lacks")
        if 0 in ids:  # the stop token
            raise _Unusable("unknown_symbols", f"{rec.id}: {rec.text!r} encodes to [STOP]")
        if len(ids) > opts["max_text_tokens"]:
            raise _Unusable("text_too_long", f"{rec.id}: {len(ids)} text tokens > "
                            f"xtts.max_text_tokens {opts['max_text_tokens']}")
        wave = self._wave22(rec.audio)
        seconds = len(wave) / DVAE_RATE
        if seconds > opts["max_audio_seconds"]:
            raise _Unusable("too_long", f"{rec.id}: {seconds:.2f} s > xtts.max_audio_seconds "
                            f"{opts['max_audio_seconds']}")
        if seconds < 0.5:
            raise _Unusable("too_short", f"{rec.id}: {seconds:.2f} s < 0.5 s")
        codes = self._codes(rec.audio, rec.sha256, wave)
        try:
            latent = self._conditioning(cond.audio, cond.sha256, cond_seconds)
        except RuntimeError as exc:  # XTTS needs at least 0.33 s of conditioning audio
            raise _Unusable("conditioning_failed", f"{rec.id}: conditioning on {cond.id}: "
                            f"{exc}") from None
        return {"id": rec.id, "speaker": rec.speaker, "text": torch.tensor(ids),
                "codes": codes, "wav_length": len(wave), "cond": latent,
                "conditioned_on": cond.id, "frames": len(codes), "seconds": seconds,
                "audio": rec.audio, "sha256": rec.sha256}

    def prepare_training(self, model: nn.Module, examples: list[dict[str, Any]]) -> None:
        """The speaker's reference clips (their conditioning becomes the merged model's stored
        voice) and the cap on generated codes per text token, from the training examples."""
        opts = _options(self.info.settings)
        speaker = self.info.default_speaker
        own = sorted((e for e in examples if e["speaker"] == speaker), key=lambda e: e["id"])
        reference, total = [], 0.0
        for e in own:
            if total >= opts["reference_seconds"]:
                break
            reference.append({"audio": e["audio"], "sha256": e["sha256"],
                              "seconds": round(e["seconds"], 3)})
            total += e["seconds"]
        ratio = opts["codes_per_text_token"]
        if ratio is None and examples:
            per_token = [e["frames"] / len(e["text"]) for e in examples]
            ratio = round(1.5 * float(np.percentile(per_token, 95)), 3)
        self.info.settings = {**self.info.settings, "reference": reference,
                              "codes_per_text_token": ratio}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        b = len(examples)
        text = torch.zeros(b, max(len(e["text"]) for e in examples), dtype=torch.long)
        codes = torch.zeros(b, max(len(e["codes"]) for e in examples), dtype=torch.long)
        for i, e in enumerate(examples):
            text[i, : len(e["text"])] = e["text"]
            codes[i, : len(e["codes"])] = e["codes"]
        return {"text": text, "codes": codes,
                "text_lengths": torch.tensor([len(e["text"]) for e in examples]),
                "wav_lengths": torch.tensor([e["wav_length"] for e in examples]),
                "cond_latents": torch.stack([e["cond"] for e in examples])}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        core = _unwrap(model)
        text = batch["text"]
        # GPT.forward sizes a conditioning mask from cond_mels even when it is given latents
        # (and then never uses that mask): a one-frame placeholder stands in for the mel
        placeholder = torch.zeros(text.shape[0], 1, 80, 1, device=text.device)
        backbone = core.gpt.gpt
        # habla validates in train mode with its Dropout modules off; GPT-2's attention takes
        # its dropout from the attention module's own mode, so switch the backbone off too
        quiet = backbone.training and not backbone.drop.training
        with _eval_mode(backbone) if quiet else _nothing():
            return core.gpt(text, batch["text_lengths"], batch["codes"], batch["wav_lengths"],
                            cond_mels=placeholder, cond_latents=batch["cond_latents"])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        opts = _options(self.info.settings)
        loss_text, loss_mel, _ = self._forward(model, batch)
        total = opts["text_loss_weight"] * loss_text + opts["mel_loss_weight"] * loss_mel
        return total, {"loss_text": loss_text.item(), "loss_mel": loss_mel.item()}

    def parity_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The audio-code logits of the training forward, in eval mode (no dropout)."""
        model.eval()
        with torch.no_grad():
            return self._forward(model, batch)[2]

    # ---------------------------------------------------------------- model folders
    def voice(self, model: nn.Module, reference: list[dict[str, Any]]
              ) -> dict[str, torch.Tensor]:
        """A speaker's stored voice from its reference clips, the way coqui's
        get_conditioning_latents makes one (audio read by habla, not by FFmpeg)."""
        core = _unwrap(model)
        if not reference:
            raise StageError("xtts: no reference clips of the speaker were recorded in "
                             "training (habla.json settings.reference): rerun phase1 and phase2")
        waves, embeddings = [], []
        for ref in reference:
            path = Path(ref["audio"])
            if not path.is_file() or sha256_file(path) != ref["sha256"]:
                raise StageError(f"xtts: reference clip {path} is missing or changed since "
                                 "training: rerun phase1 and phase2")
            wave = torch.from_numpy(self._wave22(str(path)))[None]
            wave = wave[:, : int(core.config.max_ref_len) * DVAE_RATE]
            embeddings.append(core.get_speaker_embedding(wave, DVAE_RATE))
            waves.append(wave)
        config = core.config
        with _eval_mode(core):
            latent = core.get_gpt_cond_latents(torch.cat(waves, dim=-1), DVAE_RATE,
                                               length=int(config.gpt_cond_len),
                                               chunk_length=int(config.gpt_cond_chunk_len))
        return {"gpt_cond_latent": latent.detach().cpu().clone(),
                "speaker_embedding": torch.stack(embeddings).mean(0).detach().cpu().clone()}

    def save_merged(self, model: nn.Module, folder: Path) -> None:
        """coqui's layout (model.pth, config.json, vocab.json, dvae.pth, mel_stats.pth) plus
        speakers_xtts.pth holding the base's voices and the adapted speaker's."""
        core = _unwrap(model)
        assert self.folder is not None
        state = {k: v for k, v in core.state_dict().items() if not k.startswith(INFERENCE_ONLY)}
        torch.save({"model": state}, folder / "model.pth")
        for name in ("config.json", "vocab.json", "dvae.pth", "mel_stats.pth"):
            if (self.folder / name).is_file():
                shutil.copy2(self.folder / name, folder / name)
        voices = dict(core.speaker_manager.speakers) if core.speaker_manager else {}
        speaker = self.info.default_speaker
        if speaker is not None:
            voices[speaker] = self.voice(core, self.info.settings.get("reference") or [])
        torch.save(voices, folder / "speakers_xtts.pth")

    # ---------------------------------------------------------------- inference
    def max_codes(self, text_tokens: int) -> int:
        """How many audio codes synthesis may generate for a text of `text_tokens` tokens: a
        short sentence must not run on into a hallucinated tail (coqui-ai/TTS#3964)."""
        assert self._model is not None
        ratio = self.info.settings.get("codes_per_text_token") or DEFAULT_CODES_PER_TOKEN
        limit = int(self._model.gpt.max_gen_mel_tokens)
        return min(limit, EXTRA_CODES + math.ceil(float(ratio) * text_tokens))

    def synthesize(self, model: nn.Module, text: str, tokenizer: Any,
                   speaker: str | None = None, griffin_lim_iters: int = 32
                   ) -> tuple[np.ndarray, int]:
        core = _unwrap(model)
        voices = core.speaker_manager.speakers if core.speaker_manager else {}
        name = speaker or self.info.default_speaker
        if name not in voices:
            raise ValueError(f"xtts: no stored voice {name!r}; this model has "
                             f"{sorted(voices) or 'none'}")
        ids = self.encode(text)
        if len(ids) <= 1:
            raise ValueError(f"synthesize: {text!r} has no tokens")
        if len(ids) >= int(core.args.gpt_max_text_tokens):
            raise ValueError(f"synthesize: {len(ids)} text tokens, XTTS reads fewer than "
                             f"{core.args.gpt_max_text_tokens}: split the text")
        if getattr(core.gpt, "gpt_inference", None) is None:
            core.gpt.init_gpt_for_inference(kv_cache=core.args.kv_cache)
        voice = voices[name]
        config = core.config
        with _eval_mode(core), _quiet_generation():
            out = core.inference(
                text, self.language, voice["gpt_cond_latent"], voice["speaker_embedding"],
                temperature=config.temperature, length_penalty=config.length_penalty,
                repetition_penalty=config.repetition_penalty, top_k=config.top_k,
                top_p=config.top_p, max_new_tokens=self.max_codes(len(ids)))
        wave = np.asarray(out["wav"], dtype=np.float32).reshape(-1)
        return wave, int(core.args.output_sample_rate)


class _Unusable(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _partners(records: list[Any], min_seconds: float) -> dict[str, Any]:
    """For each record, the clip that conditions it: the next clip of the same speaker (by
    content hash) among those at least `min_seconds` long (all of them if none is)."""
    by_speaker: dict[str, list[Any]] = defaultdict(list)
    for rec in records:
        by_speaker[rec.speaker].append(rec)
    out = {}
    for clips in by_speaker.values():
        pool = sorted((r for r in clips if r.duration >= min_seconds),
                      key=lambda r: (r.sha256, r.id)) or sorted(clips, key=lambda r: (r.sha256,
                                                                                    r.id))
        for rec in clips:
            if len(pool) == 1:
                out[rec.id] = pool[0]
                continue
            keys = [(r.sha256, r.id) for r in pool]
            here = (rec.sha256, rec.id)
            i = next((k for k, key in enumerate(keys) if key > here), 0)
            if pool[i].id == rec.id:
                i = (i + 1) % len(pool)
            out[rec.id] = pool[i]
    return out


@contextmanager
def _quiet_generation():
    """transformers warns on every call that max_new_tokens overrides XTTS's max_length."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
