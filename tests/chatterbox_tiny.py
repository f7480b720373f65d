"""A tiny random Chatterbox multilingual folder in the real layout, for offline tests.

Out: `ve.pt`, `t3_mtl23ls_v2.safetensors`, `s3gen.pt`, `grapheme_mtl_merged_expanded_v1.json`
(a character-level tokenizer with upstream's special ids: [START] 255, [STOP] 0) and `conds.pt`,
plus `habla_sizes.json`, which makes upstream's own constructors build the small sizes
(`habla.families.chatterbox.upstream.small_sizes`). Loaded through the same code as the hub's.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from habla.families.chatterbox import upstream

SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[PAD]": 3, "[SEP]": 4, "[CLS]": 5,
            "[MASK]": 6, "[START]": 255}
LANGUAGE_TAGS = ["[es]", "[en]", "[pt]"]
# after upstream's lowercase + NFKD: letters, combining accents/tilde/diaeresis, punctuation
SYMBOLS = list("abcdefghijklmnopqrstuvwxyz") + ["\u0301", "\u0303", "\u0308"] + \
    list(".,;:!?¿¡'\"-()") + list("0123456789")
VOCAB_SIZE = 300


def tokenizer_json(path: Path) -> Path:
    from tokenizers import Regex, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split

    vocab = dict(SPECIALS)
    free = (i for i in range(VOCAB_SIZE) if i not in vocab.values())
    for token in [*LANGUAGE_TAGS, *SYMBOLS]:
        vocab[token] = next(free)
    for i in free:
        vocab[f"[UNUSED_{i}]"] = i
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Split(Regex(r"\[[^\]]+\]|."), behavior="isolated")
    tok.save(str(path))
    return path


def make_tiny_chatterbox(folder: Path, seed: int = 0, voice_seconds: float = 3.0) -> Path:
    """Write the tiny random model into `folder` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"t3": dict(upstream.TINY_T3), "s3gen": "tiny", "text_vocab": VOCAB_SIZE}
    (folder / upstream.SIZES_FILE).write_text(json.dumps(sizes, indent=1), encoding="utf-8")
    tokenizer_json(folder / upstream.TOKENIZER_FILE)
    torch.manual_seed(seed)
    t3 = upstream.new_t3(sizes, VOCAB_SIZE)
    s3gen = upstream.new_s3gen(sizes)
    ve = upstream.new_voice_encoder()
    upstream.save_models(folder, t3, s3gen, ve)

    # the built-in voice: conds.pt from a short harmonic tone, as upstream ships one
    from habla.audio import write_wav
    from habla.families.chatterbox import ChatterboxFamily
    from habla.families.chatterbox.voice import reference_conditionals, save_conditionals

    rate = upstream.SAMPLE_RATE
    t = np.arange(int(voice_seconds * rate)) / rate
    wave = (0.1 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(
        np.float32)
    audio = folder / "voice.wav"
    write_wav(audio, wave, rate)
    family = ChatterboxFamily()
    family.load_base(str(folder))
    clip = SimpleNamespace(id="voice", speaker="base", audio=str(audio), sha256="0" * 64,
                           duration=voice_seconds)
    save_conditionals(reference_conditionals(family, [clip], "base"),
                      folder / upstream.CONDS_FILE)
    audio.unlink()
    return folder
