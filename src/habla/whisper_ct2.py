"""Whisper weights between CTranslate2 (what faster-whisper runs) and transformers (what trains).

In: a hub id, a transformers folder, a CTranslate2 folder, faster-whisper's model names, or
habla's offline 'whisper-base'. Out: `load_whisper` → (model, processor, generation_config)
rebuilt exactly, `save_whisper` → a transformers folder, `export_ct2` → a faster-whisper folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from habla.asr import WHISPER_BASE, AsrError, whisper_base_dir

if TYPE_CHECKING:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

log = logging.getLogger("habla.whisper_ct2")

CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "pytorch_model.bin.index.json")
# ctranslate2 model.bin dtype ids (specs/model_spec.py): f32, i8, i16, i32, f16, bf16
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bf16"}
MAX_INITIAL_TIMESTAMP_INDEX = 50  # Whisper's own rule: the first timestamp is at most 1.00 s


class Whisper(NamedTuple):
    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    generation_config: GenerationConfig


# ---------------------------------------------------------------- reading model.bin


def read_ct2_model_bin(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All variables of a CTranslate2 model.bin (name → array) and its aliases (alias → name).

    Layout (little-endian, ctranslate2 specs/model_spec.py `_serialize`): u32 version, str spec
    name, u32 revision, u32 count, then per variable str name, u8 rank, rank×u32 dims,
    u8 dtype, u32 nbytes, data; then u32 alias count and (str alias, str target) pairs.
    A str is a u16 length counting its terminating NUL, the bytes, then the NUL.
    """
    path = Path(path)
    buf = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("H")
        value = bytes(buf[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return value

    try:
        version = take("I")
        if version < 5:  # names and alias tables as written since ctranslate2 2.x
            raise AsrError(f"{path}: CTranslate2 model binary version {version} is too old; "
                           "re-convert the model with a current ct2-transformers-converter")
        spec = text()
        if spec != "WhisperSpec":
            raise AsrError(f"{path}: a CTranslate2 '{spec}' model, not Whisper (WhisperSpec)")
        take("I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = text()
            dims = [take("I") for _ in range(take("B"))]
            dtype = _CT2_DTYPES.get(take("B"))
            nbytes = take("I")
            if pos + nbytes > len(buf):
                raise struct.error(f"variable {name} runs past the end of the file")
            raw = buf[pos:pos + nbytes]
            pos += nbytes
            if dtype is None:
                raise AsrError(f"{path}: variable {name} has an unknown dtype id")
            if dtype == "bf16":  # numpy has no bfloat16: it is the top half of a float32
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype)
            variables[name] = arr.reshape(dims)
        aliases = {}
        for _ in range(take("I")):
            alias = text()
            aliases[alias] = text()
    except struct.error as exc:
        raise AsrError(f"{path}: truncated or damaged CTranslate2 model.bin ({exc})") from None
    if pos != len(buf):
        raise AsrError(f"{path}: {len(buf) - pos} unexpected bytes after the alias table")
    return variables, aliases


def _float_weights(variables: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """float32 arrays; int8/int16-quantised weights are dequantised with their stored scales."""
    out = {}
    for name, arr in variables.items():
        if name.endswith("_scale"):
            continue
        scale = variables.get(name + "_scale")
        if scale is not None:
            # ctranslate2 stores round(w × scale), per output row (int8) or one scalar (int16)
            w = arr.reshape(arr.shape[0], -1).astype(np.float32) / np.reshape(scale, (-1, 1))
            out[name] = w.reshape(arr.shape).astype(np.float32)
        elif arr.ndim == 0:
            out[name] = arr  # flags such as num_heads, kept as they are
        else:
            out[name] = arr.astype(np.float32)
    if any(name + "_scale" in variables for name in out):
        log.warning("%s holds quantised weights: the rebuilt model is their dequantised "
                    "approximation, not the float weights they were made from", path)
    return out


# ---------------------------------------------------------------- CT2 names → HF names


def _layers(variables: dict[str, Any], side: str) -> int:
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise AsrError(f"{side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _linear(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = v[f"{src}/weight"]
    sd[f"{dst}.bias"] = v[f"{src}/bias"]


def _layer_norm(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = v[f"{src}/gamma"]
    sd[f"{dst}.bias"] = v[f"{src}/beta"]


def _split(sd: dict, v: dict, src: str, dsts: list[str], where: Path) -> None:
    """A fused projection (QKV or KV) → its parts; the K bias must be zero (HF k_proj has none)."""
    weights = np.split(v[f"{src}/weight"], len(dsts), axis=0)
    biases = np.split(v[f"{src}/bias"], len(dsts), axis=0)
    for dst, w, b in zip(dsts, weights, biases, strict=True):
        sd[f"{dst}.weight"] = w
        if dst.endswith("k_proj"):
            if np.any(b != 0):
                raise AsrError(f"{where}: {src} has a non-zero key bias, which transformers' "
                               "Whisper (k_proj without bias) cannot represent")
        else:
            sd[f"{dst}.bias"] = b


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str],
                         where: Path = Path("model.bin")) -> dict[str, np.ndarray]:
    """transformers `WhisperForConditionalGeneration` names for every CT2 Whisper weight."""
    v = dict(variables)
    # the converter stores equal tensors once (zero biases, unit gains) and aliases the rest
    for alias, target in aliases.items():
        while target in aliases and target not in v:
            target = aliases[target]
        if target in v:
            v.setdefault(alias, v[target])
    proj = aliases.get("decoder/projection/weight", "decoder/projection/weight")
    if proj != "decoder/embeddings/weight" and not np.array_equal(
            v[proj], v["decoder/embeddings/weight"]):
        raise AsrError(f"{where}: the output projection is not tied to the token embeddings; "
                       "transformers' Whisper requires tied embeddings")
    sd: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        sd[f"model.encoder.{conv}.weight"] = v[f"encoder/{conv}/weight"]
        sd[f"model.encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"]
    for side in ("encoder", "decoder"):
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        _layer_norm(sd, v, f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(_layers(v, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _split(sd, v, f"{src}/self_attention/linear_0",
                   [f"{dst}.self_attn.{p}_proj" for p in "qkv"], where)
            _linear(sd, v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            _layer_norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                _linear(sd, v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                _split(sd, v, f"{src}/attention/linear_1",
                       [f"{dst}.encoder_attn.{p}_proj" for p in "kv"], where)
                _linear(sd, v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                _layer_norm(sd, v, f"{src}/attention/layer_norm",
                            f"{dst}.encoder_attn_layer_norm")
            _linear(sd, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
            _linear(sd, v, f"{src}/ffn/linear_1", f"{dst}.fc2")
            _layer_norm(sd, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["proj_out.weight"] = v["decoder/embeddings/weight"]
    return sd


def _check_flags(v: dict[str, np.ndarray], where: Path) -> None:
    """Refuse CT2 Whisper variants that transformers' Whisper does not compute the same way."""
    gelu = 3  # ctranslate2 common_spec.Activation.GELU (exact erf GELU, as in transformers)
    wanted = {"decoder/activation": gelu, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
              "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    wrong = {k: int(v[k]) for k, want in wanted.items() if k in v and int(v[k]) != want}
    if wrong:
        raise AsrError(f"{where}: unsupported CTranslate2 Whisper settings {wrong}")


# ---------------------------------------------------------------- config, tokenizer, generation


def _ct2_model_config(sd: dict[str, np.ndarray], v: dict[str, np.ndarray],
                      tokenizer: WhisperTokenizer) -> Any:
    from transformers import WhisperConfig

    d_model, n_mels, _ = sd["model.encoder.conv1.weight"].shape
    eot = tokenizer.get_added_vocab()["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=sd["model.decoder.embed_tokens.weight"].shape[0],
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_layers(v, "encoder"),
        decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        # generation settings live in the GenerationConfig, or generate() warns
        suppress_tokens=None, begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )


def special_token_names(tokenizer_json: str | Path) -> list[str]:
    """Every `<|…|>` added token of a tokenizer.json except `<|endoftext|>`, in id order."""
    added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("added_tokens", [])
    return [t["content"] for t in sorted(added, key=lambda t: t["id"])
            if re.fullmatch(r"<\|.+\|>", t["content"]) and t["content"] != "<|endoftext|>"]


def ensure_special_tokens(tokenizer: WhisperTokenizer) -> WhisperTokenizer:
    """Make every `<|…|>` added token special (whisper-finetune.md trap 3).

    transformers' Whisper tokenizer puts the first timestamp at `all_special_ids[-1] + 1`; built
    from a bare tokenizer.json only `<|endoftext|>` is special, and every decoded timestamp
    would be off by 2.12 s.
    """
    names = [t for t, _ in sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1])
             if re.fullmatch(r"<\|.+\|>", t) and t != "<|endoftext|>"]
    missing = [t for t in names if tokenizer.convert_tokens_to_ids(t)
               not in tokenizer.all_special_ids]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": names},
                                     replace_extra_special_tokens=False)
    no_ts = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    if tokenizer.all_special_ids and max(tokenizer.all_special_ids) != no_ts:
        raise AsrError(f"Whisper tokenizer: the last special token is "
                       f"{max(tokenizer.all_special_ids)}, not <|notimestamps|> ({no_ts}); "
                       "timestamp tokens would be decoded at the wrong times")
    return tokenizer


def ct2_tokenizer(folder: str | Path) -> WhisperTokenizer:
    """The Whisper tokenizer of a CT2 folder, every `<|…|>` token special (trap 3)."""
    from transformers import WhisperTokenizer

    path = Path(folder) / "tokenizer.json"
    tok = WhisperTokenizer(tokenizer_file=str(path),
                           additional_special_tokens=special_token_names(path))
    return ensure_special_tokens(tok)


def ct2_generation_config(ct2_config: dict[str, Any], tokenizer: WhisperTokenizer,
                          max_length: int) -> GenerationConfig:
    """What `generate(language=…, return_timestamps=…)` needs, from a CT2 config.json (trap 4)."""
    from transformers import GenerationConfig

    added = tokenizer.get_added_vocab()

    def tid(token: str) -> int | None:
        return added.get(token)

    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or []]
    eot = tid("<|endoftext|>")
    heads = ct2_config.get("alignment_heads")
    return GenerationConfig(
        decoder_start_token_id=tid("<|startoftranscript|>"),
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=max_length,
        suppress_tokens=[int(i) for i in ct2_config.get("suppress_ids") or []],
        begin_suppress_tokens=[int(i) for i in ct2_config.get("suppress_ids_begin") or []],
        alignment_heads=[[int(a), int(b)] for a, b in heads] if heads else None,
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={t: tid(f"<|{t}|>") for t in ("transcribe", "translate")
                    if tid(f"<|{t}|>") is not None},
        is_multilingual=bool(lang_ids),
        no_timestamps_token_id=tid("<|notimestamps|>"),
        prev_sot_token_id=tid("<|startofprev|>"),
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        forced_decoder_ids=None,
        return_timestamps=False,
    )


def load_ct2(folder: str | Path) -> Whisper:
    """transformers Whisper (fp32), its processor and generation config, from a CT2 folder."""
    import torch
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    folder = Path(folder)
    missing = [f for f in CT2_FILES if not (folder / f).is_file()]
    if missing:
        raise AsrError(f"{folder}: CTranslate2 Whisper folder without {missing} (a folder made "
                       "by ct2-transformers-converter --copy_files tokenizer.json has them all)")
    variables, aliases = read_ct2_model_bin(folder / "model.bin")
    _check_flags(variables, folder / "model.bin")
    floats = _float_weights(variables, folder / "model.bin")
    try:
        sd = ct2_to_hf_state_dict(floats, aliases, folder / "model.bin")
    except KeyError as exc:
        raise AsrError(f"{folder / 'model.bin'}: Whisper variable {exc} is missing") from None
    tokenizer = ct2_tokenizer(folder)
    config = _ct2_model_config(sd, floats, tokenizer)
    ct2_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    gen = ct2_generation_config(ct2_config, tokenizer, config.max_target_positions)

    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise AsrError(f"{folder}: weights do not fit transformers' Whisper: missing "
                       f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    model.generation_config = gen
    model.eval()
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    processor = WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)
    return Whisper(model, processor, gen)


# ---------------------------------------------------------------- any source


def folder_kind(folder: str | Path) -> str:
    """'ct2' or 'transformers'; anything else is refused with what was expected."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AsrError(f"{folder}: not a folder")
    config: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AsrError(f"{folder / 'config.json'}: unreadable ({exc})") from None
    if (folder / "model.bin").is_file() and "model_type" not in config:
        return "ct2"
    if config.get("model_type") == "whisper" and any((folder / f).is_file() for f in HF_WEIGHTS):
        return "transformers"
    found = sorted(p.name for p in folder.iterdir())[:12]
    raise AsrError(
        f"{folder}: not a Whisper model folder (found {found}). Expected a CTranslate2 folder "
        "(model.bin, config.json, tokenizer.json: faster-whisper's format) or a transformers "
        "folder (config.json with model_type 'whisper' and model.safetensors)"
    )


def _load_transformers(source: str, revision: str | None) -> Whisper:
    """A hub id (pinned by `revision`) or a transformers folder, through from_pretrained."""
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, revision=revision)
        processor = WhisperProcessor.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        raise AsrError(f"cannot load Whisper '{source}' (revision {revision}): {exc}") from None
    try:
        gen = GenerationConfig.from_pretrained(source, revision=revision)
    except OSError:
        raise AsrError(f"Whisper '{source}' has no generation_config.json: generate() cannot "
                       "pick a language or timestamps without lang_to_id/no_timestamps_token_id; "
                       "save the model with habla.whisper_ct2.save_whisper") from None
    if gen.no_timestamps_token_id is None or (gen.is_multilingual and not gen.lang_to_id):
        raise AsrError(f"Whisper '{source}': generation_config.json lacks "
                       "no_timestamps_token_id or lang_to_id")
    ensure_special_tokens(processor.tokenizer)
    model.generation_config = gen
    model.eval()
    return Whisper(model, processor, gen)


def load_whisper(base: str, revision: str | None = None) -> Whisper:
    """(model, processor, generation_config) for `base`, in float32, eval mode.

    `base`: 'whisper-base' (habla's offline model, assembled from the registry packages);
    a local CTranslate2 or transformers folder; a faster-whisper model name ('large-v3',
    downloaded as CTranslate2); or a hub id ('openai/whisper-large-v3', from_pretrained at
    `revision`). A folder is read, never written.
    """
    if base == WHISPER_BASE:
        return load_ct2(whisper_base_dir())
    path = Path(base).expanduser()
    if path.exists() or base.startswith((".", "/", "~")):
        kind = folder_kind(path)
        return load_ct2(path) if kind == "ct2" else _load_transformers(str(path), None)
    from faster_whisper.utils import available_models, download_model

    if base in available_models():
        try:
            return load_ct2(download_model(base, revision=revision))
        except AsrError:
            raise
        except Exception as exc:  # hub errors: offline, unknown revision
            raise AsrError(f"cannot download faster-whisper model '{base}': {exc}") from None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", base):
        raise AsrError(f"Whisper base '{base}': not a folder, a faster-whisper model name "
                       f"({', '.join(available_models()[:6])}, ...) or a hub id 'org/name'")
    return _load_transformers(base, revision)


def whisper_folder(base: str, revision: str | None = None) -> Path:
    """The local folder holding `base`'s files (as `load_whisper` names bases), fetched from
    the hub when it is a model name or hub id: what a run hashes and never writes to."""
    if base == WHISPER_BASE:
        return whisper_base_dir()
    path = Path(base).expanduser()
    if path.exists() or base.startswith((".", "/", "~")):
        folder_kind(path)  # a clear error for a folder that is not Whisper
        return path
    from faster_whisper.utils import available_models, download_model

    try:
        if base in available_models():
            return Path(download_model(base, revision=revision))
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base, revision=revision))
    except Exception as exc:  # offline, unknown name or revision
        raise AsrError(f"Whisper base '{base}' (revision {revision}): not a local folder and "
                       f"could not be fetched: {exc}") from None


def ct2_folder(base: str, revision: str | None, workdir: str | Path) -> Path:
    """A CTranslate2 folder of `base` for faster-whisper: the base's own files when it is
    one, else a float16 export of it written under `workdir`."""
    folder = whisper_folder(base, revision)
    if folder_kind(folder) == "ct2":
        return folder
    if (folder / "tokenizer.json").is_file() and (folder / "generation_config.json").is_file():
        return export_ct2(folder, Path(workdir) / "ct2")
    hf = save_whisper(load_whisper(base, revision), Path(workdir) / "hf")
    return export_ct2(hf, Path(workdir) / "ct2")


def save_whisper(whisper: Whisper, out_dir: str | Path) -> Path:
    """A self-contained transformers folder (weights, generation config, processor)."""
    out_dir = Path(out_dir)
    whisper.model.generation_config = whisper.generation_config
    whisper.model.save_pretrained(out_dir)
    whisper.processor.save_pretrained(out_dir)
    # faster-whisper reads its mel settings (128 bins for large-v3) from this file only
    whisper.processor.feature_extractor.to_json_file(out_dir / "preprocessor_config.json")
    return out_dir


def export_ct2(hf_folder: str | Path, out_dir: str | Path,
               quantization: str = "float16") -> Path:
    """Convert a transformers Whisper folder into a CTranslate2 folder faster-whisper loads.

    Written to a temporary sibling and renamed, so `out_dir` is either complete or absent.
    The tokenizer and preprocessor files travel with it (faster-whisper would otherwise try to
    download a tokenizer from the hub).
    """
    from ctranslate2.converters import TransformersConverter

    hf_folder, out_dir = Path(hf_folder), Path(out_dir)
    if folder_kind(hf_folder) != "transformers":
        raise AsrError(f"{hf_folder}: export_ct2 needs a transformers Whisper folder")
    if not (hf_folder / "tokenizer.json").is_file():
        raise AsrError(f"{hf_folder}: no tokenizer.json (save the processor beside the model)")
    copy = [f for f in ("tokenizer.json", "preprocessor_config.json")
            if (hf_folder / f).is_file()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        TransformersConverter(str(hf_folder), copy_files=copy).convert(
            str(tmp), quantization=quantization, force=True)
        if not (tmp / "preprocessor_config.json").is_file():
            _write_preprocessor_config(hf_folder, tmp / "preprocessor_config.json")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_preprocessor_config(hf_folder: Path, target: Path) -> None:
    """faster-whisper's mel settings for a folder whose processor saved only processor_config."""
    settings: dict[str, Any] = {}
    if (hf_folder / "processor_config.json").is_file():
        saved = json.loads((hf_folder / "processor_config.json").read_text(encoding="utf-8"))
        settings = saved.get("feature_extractor") or {}
    if "feature_size" not in settings:
        config = json.loads((hf_folder / "config.json").read_text(encoding="utf-8"))
        settings["feature_size"] = config.get("num_mel_bins", 80)
    target.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def state_dict_equal(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    """Names of the parameters that differ between two Whisper models (empty: identical)."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return sorted(set(sa) ^ set(sb))
    return [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])]
