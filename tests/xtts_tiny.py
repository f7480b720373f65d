"""A tiny random XTTS-v2 saved in coqui's own folder layout (tests only; no hub, no weights).

`make_tiny_xtts(folder)` writes config.json (a 2-layer, 128-wide GPT; the real HiFi-GAN decoder
and speaker encoder, which XTTS does not let a config shrink), model.pth ({"model": state dict},
coqui's v1.1 layout), vocab.json (a BPE vocabulary trained here with `tokenizers`, with XTTS's
special tokens), dvae.pth (a small DiscreteVAE with the real code count), mel_stats.pth and
speakers_xtts.pth (one "studio" voice). habla loads it through the same code as coqui/XTTS-v2.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import torch

SPECIAL = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[es]", "[en]"]
ALPHABET = list(string.ascii_lowercase + "áéíóúüñ" + string.digits + ".,;:¿?¡!'-\"()")
CORPUS = [
    "hola qué tal estás", "el perro come carne y pan", "buenas noches a todos",
    "uno dos tres cuatro cinco seis siete ocho nueve diez", "cien mil trescientos cincuenta",
    "la casa de mi madre está en la ciudad", "mañana por la mañana vamos al río",
    "son las tres y media de la tarde", "el niño lee un libro en el jardín",
]
STUDIO_VOICE = "Estudio A"
TINY = {"gpt_layers": 2, "gpt_n_model_channels": 128, "gpt_n_heads": 4}


def make_vocab(path: Path, vocab_size: int = 300, corpus: list[str] | None = None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=ALPHABET, show_progress=False)
    texts = [t.lower() for t in CORPUS + list(corpus or [])]
    tok.train_from_iterator(texts * 20, trainer)
    tok.save(str(path))


def make_tiny_xtts(folder: Path, vocab_size: int = 300, seed: int = 0,
                   corpus: list[str] | None = None, **model_args) -> Path:
    """`corpus`: more text for the vocabulary (words it knows become single tokens)."""
    from habla.families.xtts import upstream

    up = upstream()
    folder.mkdir(parents=True, exist_ok=True)
    make_vocab(folder / "vocab.json", vocab_size, corpus)
    config = up.XttsConfig()
    args = {**TINY, "gpt_num_audio_tokens": 1026, "gpt_start_audio_token": 1024,
            "gpt_stop_audio_token": 1025, "gpt_use_perceiver_resampler": True,
            "gpt_use_masking_gt_prompt_approach": True, **model_args}
    for key, value in args.items():
        setattr(config.model_args, key, value)
    config.model_args.decoder_input_dim = config.model_args.gpt_n_model_channels
    config.languages = ["en", "es"]
    torch.manual_seed(seed)
    model = up.Xtts(config)
    model.tokenizer = up.VoiceBpeTokenizer(str(folder / "vocab.json"))
    model.init_models()  # sizes the text embedding from the vocabulary, into config.model_args
    config.save_json(str(folder / "config.json"))
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    dvae = up.DiscreteVAE(channels=80, normalization=None, positional_dims=1,
                          num_tokens=config.model_args.gpt_num_audio_tokens - 2, codebook_dim=64,
                          hidden_dim=64, num_resnet_blocks=1, kernel_size=3, num_layers=2,
                          use_transposed_convs=False)
    torch.save(dvae.state_dict(), folder / "dvae.pth")
    torch.save(torch.ones(80), folder / "mel_stats.pth")
    noise = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.1, 22050 * 3)
                             .astype(np.float32))[None]
    voice = {"gpt_cond_latent": model.get_gpt_cond_latents(noise, 22050).clone(),
             "speaker_embedding": model.get_speaker_embedding(noise, 22050).clone()}
    torch.save({STUDIO_VOICE: voice}, folder / "speakers_xtts.pth")
    return folder
