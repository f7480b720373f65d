"""Chatterbox's own model code, imported module by module, and its model-folder layout.

In: a Chatterbox multilingual folder (`ve.pt`, `t3_mtl23ls_v2.safetensors`, `s3gen.pt`, the
grapheme tokenizer JSON, optionally `conds.pt`) or the hub id `ResembleAI/chatterbox`.
Out: the upstream T3, S3Gen and VoiceEncoder modules at real size (or at the small sizes a test
folder's `habla_sizes.json` names), and the same files written back in the same layout.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from habla.errors import HablaError

HUB_ID = "ResembleAI/chatterbox"
VE_FILE = "ve.pt"
T3_FILE = "t3_mtl23ls_v2.safetensors"
S3GEN_FILE = "s3gen.pt"
TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
CONDS_FILE = "conds.pt"
CANGJIE_FILE = "Cangjie5_TC.json"  # only Chinese needs it; copied when present
MODEL_FILES = (VE_FILE, T3_FILE, S3GEN_FILE, TOKENIZER_FILE)
# habla's own file in test folders: the sizes of a small random model (never in a real one)
SIZES_FILE = "habla_sizes.json"
UPSTREAM_VERSION = "0.1.7"
INSTALL = ('pip install -e ".[chatterbox]" && pip install --no-deps '
           f'chatterbox-tts=={UPSTREAM_VERSION}   (make setup does both)')
SAMPLE_RATE = 24000  # S3Gen's output
S3_RATE = 16000  # S3Tokenizer's and the voice encoder's input
TOKENS_PER_SECOND = 25


class ChatterboxMissing(HablaError, ImportError):
    """chatterbox-tts (or one of the extra's packages) is not installed."""


def module(name: str) -> types.ModuleType:
    """`chatterbox.<name>` without running the package's `__init__`, which imports every
    model, the watermarker, diffusers and librosa even when only T3 is wanted."""
    if "chatterbox" not in sys.modules:
        spec = importlib.util.find_spec("chatterbox")
        if spec is None or not spec.submodule_search_locations:
            raise ChatterboxMissing(f"model family 'chatterbox' needs chatterbox-tts: {INSTALL}")
        package = types.ModuleType("chatterbox")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["chatterbox"] = package
    try:
        return importlib.import_module(f"chatterbox.{name}")
    except ImportError as exc:
        raise ChatterboxMissing(f"chatterbox.{name} cannot be imported ({exc}): {INSTALL}") \
            from None


def available() -> bool:
    """True when the upstream modules import (for tests that skip without them)."""
    try:
        module("models.t3")
        module("models.s3gen")
        module("models.voice_encoder")
    except ChatterboxMissing:
        return False
    return True


# ---------------------------------------------------------------- small random sizes
# Test folders name these sizes in habla_sizes.json; the real folder has no such file.
# S3Gen's encoder keeps its 512 channels (upstream hard-codes them in two layers).
TINY_T3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16}
TINY_LLAMA_NAME = "habla_tiny"


def _tiny_t3_config(t3_sizes: dict[str, Any], text_vocab: int) -> Any:
    configs = module("models.t3.llama_configs").LLAMA_CONFIGS
    configs[TINY_LLAMA_NAME] = {**configs["Llama_520M"], **t3_sizes}
    hp = module("models.t3.modules.t3_config").T3Config(text_tokens_dict_size=text_vocab)
    hp.llama_config_name = TINY_LLAMA_NAME
    return hp


@contextlib.contextmanager
def small_sizes(sizes: dict[str, Any] | None, text_vocab: int | None = None) -> Iterator[None]:
    """While active, upstream constructors (`T3Config.multilingual()`, `S3Gen()`, the
    perceiver) build the small sizes of `sizes` (a habla_sizes.json), so that even
    `ChatterboxMultilingualTTS.from_local` reads a test folder. No-op for None."""
    if not sizes:
        yield
        return
    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    t3_sizes = {**TINY_T3, **(sizes.get("t3") or {})}
    hidden = int(t3_sizes["hidden_size"])
    t3_config = module("models.t3.modules.t3_config").T3Config
    vocab = text_vocab or int(sizes.get("text_vocab", 2454))
    patch(t3_config, "multilingual", classmethod(lambda cls: _tiny_t3_config(t3_sizes, vocab)))
    cond_enc = module("models.t3.modules.cond_enc")
    perceiver = cond_enc.Perceiver
    patch(cond_enc, "Perceiver", lambda: perceiver(pre_attention_query_size=hidden,
                                                   embedding_dim=hidden))
    s3 = module("models.s3gen.s3gen")
    originals = {n: getattr(s3, n) for n in ("UpsampleConformerEncoder", "ConditionalDecoder",
                                              "CAMPPlus", "HiFTGenerator", "ConvRNNF0Predictor")}
    patch(s3, "UpsampleConformerEncoder", lambda **kw: originals["UpsampleConformerEncoder"](
        **{**kw, "num_blocks": 1, "linear_units": 64, "attention_heads": 2}))
    patch(s3, "ConditionalDecoder", lambda **kw: originals["ConditionalDecoder"](
        **{**kw, "channels": [32], "n_blocks": 1, "num_mid_blocks": 1, "num_heads": 2,
           "attention_head_dim": 16}))
    patch(s3, "CAMPPlus", lambda **kw: originals["CAMPPlus"](
        **{**kw, "growth_rate": 8, "init_channels": 16}))
    patch(s3, "HiFTGenerator", lambda **kw: originals["HiFTGenerator"](
        **{**kw, "base_channels": 32}))
    patch(s3, "ConvRNNF0Predictor", lambda: originals["ConvRNNF0Predictor"](cond_channels=32))
    # S3TokenizerV2's config is a default argument shared by every instance: shrink it here
    # (its rotary embedding is fixed at 64 dims per head)
    s3tok = importlib.import_module("s3tokenizer.model_v2")
    default = s3tok.S3TokenizerV2.__init__.__defaults__[0]
    for name, value in (("n_audio_state", 128), ("n_audio_head", 2), ("n_audio_layer", 1)):
        patch(default, name, value)
    try:
        yield
    finally:
        for owner, name, value in reversed(patches):
            setattr(owner, name, value)


# ---------------------------------------------------------------- the folder
def read_sizes(folder: Path) -> dict[str, Any] | None:
    path = folder / SIZES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def t3_text_vocab(folder: Path) -> int:
    """Rows of the saved text embedding (2454 for the real model; more after new tokens)."""
    from safetensors import safe_open

    with safe_open(str(folder / T3_FILE), framework="pt") as f:
        return int(f.get_slice("text_emb.weight").get_shape()[0])


def check_folder(folder: Path) -> None:
    missing = [n for n in MODEL_FILES if not (folder / n).is_file()]
    if missing:
        raise HablaError(f"{folder}: not a Chatterbox multilingual folder; missing "
                         f"{', '.join(missing)} (expected the layout of {HUB_ID})")


def is_chatterbox_folder(folder: Path) -> bool:
    return all((folder / n).is_file() for n in MODEL_FILES)


def new_t3(sizes: dict[str, Any] | None, text_vocab: int) -> torch.nn.Module:
    t3_mod = module("models.t3")
    config = module("models.t3.modules.t3_config").T3Config
    with small_sizes(sizes, text_vocab):
        hp = config.multilingual() if sizes else config(text_tokens_dict_size=text_vocab)
        return t3_mod.T3(hp)


def new_s3gen(sizes: dict[str, Any] | None) -> torch.nn.Module:
    s3gen = module("models.s3gen")
    with small_sizes(sizes):
        return s3gen.S3Gen()


def new_voice_encoder() -> torch.nn.Module:
    return module("models.voice_encoder").VoiceEncoder()


def load_models(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(T3, S3Gen, VoiceEncoder) from a Chatterbox folder, in eval mode on the CPU."""
    from safetensors.torch import load_file

    check_folder(folder)
    sizes = read_sizes(folder)
    t3 = new_t3(sizes, t3_text_vocab(folder))
    state = load_file(str(folder / T3_FILE))
    if "model" in state:  # as upstream's loader allows
        state = state["model"][0]
    t3.load_state_dict(state)
    s3gen = new_s3gen(sizes)
    s3gen.load_state_dict(torch.load(folder / S3GEN_FILE, map_location="cpu",
                                     weights_only=True), strict=False)
    ve = new_voice_encoder()
    ve.load_state_dict(torch.load(folder / VE_FILE, map_location="cpu", weights_only=True))
    return t3.eval(), s3gen.eval(), ve.eval()


def save_t3(t3: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in t3.state_dict().items()}, str(path))


def save_models(folder: Path, t3: torch.nn.Module, s3gen: torch.nn.Module,
                ve: torch.nn.Module) -> None:
    """T3, S3Gen and the voice encoder under upstream's file names (tokenizer not included)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_t3(t3, folder / T3_FILE)
    torch.save(s3gen.state_dict(), folder / S3GEN_FILE)
    torch.save(ve.state_dict(), folder / VE_FILE)


def download(hub_id: str, revision: str | None) -> Path:
    """Only the multilingual files of the hub repo (it also holds the English and Turbo
    models, several GB more)."""
    from huggingface_hub import snapshot_download

    patterns = [*MODEL_FILES, CONDS_FILE, CANGJIE_FILE]
    try:
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline, missing repo, bad revision: say which
        raise HablaError(f"model '{hub_id}' (revision {revision}): not a local folder and "
                         f"could not be fetched from the hub: {exc}") from None
