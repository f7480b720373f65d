"""Fixtures for the Whisper tests: a tiny random Whisper with the real multilingual tokenizer,
saved as a transformers folder and exported to CTranslate2, and eSpeak clips at 16 kHz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from habla.asr import whisper_base_dir
from habla.audio import resample
from habla.sources.espeak import Espeak
from habla.sources.sentences import sentence
from habla.whisper_ct2 import (
    Whisper,
    ct2_generation_config,
    ct2_tokenizer,
    export_ct2,
    save_whisper,
)
from habla.whisper_data import SAMPLE_RATE, Clip


def tiny_whisper(folder: Path, std: float = 0.3, seed: int = 0) -> Whisper:
    """d_model 64, 2+2 layers, the real vocabulary (51,865) and special tokens, saved to
    `folder`. Every weight is random, biases and layer-norm gains included, so a swapped or
    dropped tensor in a conversion shows; std 0.3 makes greedy decoding depend on the audio
    with clear margins between the top logits."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    base = whisper_base_dir()
    tokenizer = ct2_tokenizer(base)
    gen = ct2_generation_config(json.loads((base / "config.json").read_text()), tokenizer, 448)
    gen.alignment_heads = [[1, 0], [1, 2]]
    config = WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257,
        decoder_start_token_id=50258, suppress_tokens=None, begin_suppress_tokens=None,
        init_std=std)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                                 tokenizer=tokenizer)
    whisper = Whisper(model, processor, gen)
    save_whisper(whisper, folder)
    return whisper


def tiny_pair(root: Path) -> tuple[Whisper, Path, Path]:
    """The tiny model, its transformers folder and its float32 CTranslate2 export."""
    whisper = tiny_whisper(root / "tiny-hf")
    return whisper, root / "tiny-hf", export_ct2(root / "tiny-hf", root / "tiny-ct2", "float32")


def espeak_clips(indices: range | list[int], seed: int = 3) -> list[Clip]:
    """Spanish sentences `sentence(i)` spoken by two es-419 voices, at 16 kHz, with the
    eSpeak word starts."""
    tts = Espeak(seed=seed)
    clips = []
    for k, i in enumerate(indices):
        text = sentence(i)
        voice, rate, pitch = (("es-419+klatt", 150, 60) if k % 2 == 0
                              else ("es-419+f2", 140, 75))
        wave, starts = tts.synthesize(text, voice, rate, pitch)
        wave16 = resample(wave, tts.sample_rate, SAMPLE_RATE).astype(np.float32)
        clips.append(Clip(wave16, text, tuple(s for _w, s in starts), id=str(i)))
    return clips


def make_asr_project(root: Path, n_train: int = 6, n_val: int = 2, n_test: int = 2,
                     rate: int = 24000) -> dict[str, list]:
    """data/clips/*.wav and data/splits/{train,val,test}.jsonl as the tokenize stage leaves
    them for an ASR family: eSpeak sentences with reference texts, word times (`words`, as
    the timestamps stage writes them) and the true word times (`truth_words`)."""
    from habla.audio import write_wav
    from habla.manifest import Record, Word, sha256_file, write_manifest

    splits = {"train": n_train, "val": n_val, "test": n_test}
    tts = Espeak(seed=5)
    out: dict[str, list] = {}
    index = 400000
    (root / "data/clips").mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        records = []
        for k in range(n):
            text = sentence(index)
            voice, speaker = (("es-419+klatt", "lat_klatt") if k % 2 == 0
                              else ("es-419+f2", "lat_f2"))
            wave, starts = tts.synthesize(text, voice, 150, 60)
            wave = resample(wave, tts.sample_rate, rate).astype(np.float32)
            # 0.1 s of silence before the speech, as segment's margin leaves it
            wave = np.concatenate([np.zeros(rate // 10, np.float32), wave])
            path = root / "data/clips" / f"{split}{k}.wav"
            write_wav(path, wave, rate)
            duration = len(wave) / rate
            times = [s + 0.1 for _w, s in starts]
            words = [Word(word=w, start=round(t, 3),
                          end=round(times[i + 1] if i + 1 < len(times) else duration, 3))
                     for i, ((w, _s), t) in enumerate(zip(starts, times, strict=True))]
            records.append(Record(
                id=f"{split}{k}", audio=f"data/clips/{split}{k}.wav", duration=duration,
                sample_rate=rate, speaker=speaker, language="es", text=text, source="tiny",
                sha256=sha256_file(path), text_source="reference", words=words,
                truth_words=[w.model_copy() for w in words], split=split))
            index += 1
        write_manifest(root / f"data/splits/{split}.jsonl", records)
        out[split] = records
    return out
