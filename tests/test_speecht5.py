"""The speecht5 family on a tiny random SpeechT5 saved to a folder (the hub path, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from habla.audio import write_wav
from habla.errors import StageError
from habla.families.speecht5 import (
    SPEC,
    SpeechT5Family,
    log10_mel,
    word_token_spans,
)
from habla.manifest import Record, Word
from habla.model_folder import ModelInfo, save_info
from habla.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

TEXTS = ["hola mundo", "el gato come pan", "una casa roja", "sol y luna"]


def tiny_config(vocab_size: int = 40):
    from transformers import SpeechT5Config

    return SpeechT5Config(
        vocab_size=vocab_size, hidden_size=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, speech_decoder_prenet_units=32, speech_decoder_postnet_units=32,
        speech_decoder_postnet_layers=2, speech_decoder_postnet_kernel=3,
        reduction_factor=2, max_text_positions=200, max_speech_positions=800,
        encoder_max_relative_position=16)


def make_base(folder, vocab_size: int = 40):
    from transformers import SpeechT5ForTextToSpeech

    torch.manual_seed(0)
    SpeechT5ForTextToSpeech(tiny_config(vocab_size)).save_pretrained(folder)
    return folder


def make_hifigan(folder):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    config = SpeechT5HifiGanConfig(upsample_initial_channel=16, upsample_rates=[4, 4, 4, 4],
                                   upsample_kernel_sizes=[8, 8, 8, 8],
                                   resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])
    SpeechT5HifiGan(config).save_pretrained(folder)
    return folder


def make_clip(path, text: str, seed: int) -> Record:
    """A voiced-ish tone burst per word, with the word times written into the record."""
    sr = 24000
    rng = np.random.default_rng(seed)
    parts, words, t = [np.zeros(int(0.1 * sr), np.float32)], [], 0.1
    for k, word in enumerate(text.split()):
        dur = 0.08 * len(word)
        n = int(dur * sr)
        f0 = 120 + 30 * k
        tone = 0.3 * np.sin(2 * np.pi * f0 * np.arange(n) / sr) + 0.01 * rng.standard_normal(n)
        parts += [tone.astype(np.float32), np.zeros(int(0.05 * sr), np.float32)]
        words.append(Word(word=word, start=round(t, 3), end=round(t + dur, 3)))
        t += dur + 0.05
    wave = np.concatenate(parts)
    write_wav(path, wave, sr)
    return Record(id=path.stem, audio=str(path), duration=len(wave) / sr, sample_rate=sr,
                  speaker="lat_f2", language="es", text=text, source="test",
                  sha256="0" * 64, words=words)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5")
    save_tokenizer(train_tokenizer(TEXTS * 5, "char"), root / "tok")
    records = [make_clip(root / f"c{i}.wav", t, i) for i, t in enumerate(TEXTS)]
    return root, load_tokenizer(root / "tok"), records


def build(root, tokenizer_dir):
    family = SpeechT5Family()
    model = family.load_base(str(make_base(root / "base")))
    info = family.hook_tokenizer(model, tokenizer_dir, str(root / "base"))
    family.add_speaker(model, "lat_f2")
    return family, model, info


def test_log10_mel_matches_speecht5_feature_extractor():
    from transformers import SpeechT5FeatureExtractor

    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ours = log10_mel(wave)
    theirs = SpeechT5FeatureExtractor()(audio_target=wave, sampling_rate=16000,
                                         return_tensors="np")["input_values"][0]
    assert ours.shape == theirs.shape == (1 + 8000 // 256, 80)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_word_spans_give_word_tokens_their_word_and_split_gaps_between_the_rest():
    words = [Word(word="hola", start=0.1, end=0.4), Word(word="mundo", start=0.5, end=0.9)]
    owners = [None, 0, 0, None, 1, None]  # ▁ h o ▁ m </s>
    spans = word_token_spans(owners, words, duration=1.0)
    np.testing.assert_allclose(spans[1], [0.1, 0.4])
    np.testing.assert_allclose(spans[4], [0.5, 0.9])
    np.testing.assert_allclose(spans[0], [0.0, 0.1])
    np.testing.assert_allclose(spans[3], [0.4, 0.5])
    np.testing.assert_allclose(spans[5], [0.9, 1.0])
    untimed = word_token_spans([None, None], [], duration=1.0)  # no times: the diagonal
    np.testing.assert_allclose(untimed, [[0.0, 0.5], [0.5, 1.0]])


def test_a_few_training_steps_on_a_repeated_batch_lower_the_loss(setup, tmp_path):
    from peft import LoraConfig, get_peft_model

    root, sp, records = setup
    family, model, info = build(tmp_path, root / "tok")
    assert info["vocab_size"] == sp.get_piece_size()
    target, save = family.lora_targets(2)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=target,
                                             modules_to_save=save))
    spec = family.features(model)
    batch = family.collate([family.make_example(r, sp, spec) for r in records])
    assert batch["labels"].shape[1] % family.reduction_factor == 0
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(8):
        torch.manual_seed(step)
        loss, parts = family.loss(model.train(), batch)
        assert torch.isfinite(loss) and parts["word_attention"] >= 0
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_synthesis_returns_audio_with_griffin_lim_and_with_a_hifigan_folder(setup, tmp_path):
    root, sp, _ = setup
    family, model, _ = build(tmp_path, root / "tok")
    model.eval()
    wave, sr = family.synthesize(model, "hola mundo", sp, speaker="lat_f2")
    assert sr == SPEC.sample_rate and wave.dtype == np.float32 and len(wave) >= 256
    assert np.isfinite(wave).all()
    again, _ = family.synthesize(model, "hola mundo", sp, speaker="lat_f2")
    np.testing.assert_array_equal(wave, again)

    family.set_vocoder(str(make_hifigan(tmp_path / "hifigan")))
    assert family.vocoder_name.endswith("hifigan")
    wave, sr = family.synthesize(model, "hola mundo", sp)
    assert sr == 16000 and len(wave) >= 16 * 256 and np.isfinite(wave).all()


def test_unknown_speaker_is_named_with_the_valid_ones(setup, tmp_path):
    root, sp, _ = setup
    family, model, _ = build(tmp_path, root / "tok")
    with pytest.raises(StageError, match="unknown speaker 'nadie'.*lat_f2"):
        family.synthesize(model, "hola", sp, speaker="nadie")


def test_tokenizer_larger_than_the_base_embedding_is_a_clear_error(setup, tmp_path):
    root, _, _ = setup
    family = SpeechT5Family()
    base = make_base(tmp_path / "base", vocab_size=5)  # fewer rows than its own tokenizer
    save_tokenizer(train_tokenizer(TEXTS, "char"), base / "tokenizer")
    model = family.load_base(str(base))
    with pytest.raises(StageError, match="vocabulary/embedding mismatch.*5 rows"):
        family.hook_tokenizer(model, root / "tok", str(base))


def test_hooked_rows_start_from_the_base_rows_of_the_same_pieces(setup, tmp_path):
    root, sp, _ = setup
    family = SpeechT5Family()
    base = make_base(tmp_path / "base", vocab_size=sp.get_piece_size())
    save_tokenizer((root / "tok" / "spm.model").read_bytes(), base / "tokenizer")
    model = family.load_base(str(base))
    before = model.speecht5.encoder.prenet.embed_tokens.weight.detach().clone()
    info = family.hook_tokenizer(model, root / "tok", str(base))
    after = model.speecht5.encoder.prenet.embed_tokens.weight
    assert info["rows_from_base"] == sp.get_piece_size()
    torch.testing.assert_close(after[1:], before[1:])


def test_saved_folder_reloads_with_speakers_and_vocoder_through_load_base(setup, tmp_path):

    root, sp, _ = setup
    family, model, _ = build(tmp_path, root / "tok")
    out = tmp_path / "model"
    family.save_merged(model, out)
    save_info(out, ModelInfo(family="speecht5", speakers=family.speakers(),
                             vocoder="griffinlim"))
    assert family.speakers() == ["lat_f2"] and (out / "speakers.safetensors").is_file()
    from safetensors.torch import load_file

    assert not any(k.startswith("habla_speakers") for k in load_file(out / "model.safetensors"))
    again = SpeechT5Family()
    reloaded = again.load_base(str(out))
    assert again.speaker_names == ["lat_f2"]
    torch.testing.assert_close(reloaded.habla_speakers.weight, model.habla_speakers.weight)


def test_word_prior_is_zero_when_layerdrop_skipped_every_decoder_layer():
    from habla.families.speecht5 import word_attention_loss

    spans = torch.tensor([[[0.0, 0.2], [0.2, 0.4]]])
    loss = word_attention_loss((), spans, torch.ones(1, 2), torch.ones(1, 3, dtype=torch.bool),
                               0.02, heads=2)
    assert loss.item() == 0.0
