"""The fastspeech2 family on a tiny espeak corpus and a tiny randomly initialised base."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from habla.audio import resample, write_wav
from habla.errors import HablaError
from habla.families import get_family, load_synthesizer
from habla.families.fastspeech2 import FastSpeech2, save_model_folder
from habla.manifest import Record, Word, sha256_file
from habla.tokenizer import save_tokenizer, train_tokenizer

TEXTS = [
    "Hola, ¿qué tal estás hoy?",
    "El perro come pan en la casa.",
    "Mañana iremos al mercado central.",
    "La niña lee un libro azul.",
    "¡Qué día tan bonito hace!",
    "Mi hermano vive cerca del río.",
    "Los gatos duermen junto al fuego.",
    "Ella canta una canción nueva.",
]
TINY = {"hidden_size": 32, "encoder_linear_units": 64, "decoder_linear_units": 64,
        "duration_predictor_channels": 32, "pitch_predictor_channels": 32,
        "energy_predictor_channels": 32, "speech_decoder_postnet_units": 32,
        "speech_decoder_postnet_layers": 2, "pitch_predictor_layers": 2,
        "decoder_kernel_size": 5, "encoder_kernel_size": 3}


def make_clips(root: Path, speaker: str = "lat_f2", voice: str = "es+f2", pitch: int = 70,
               texts: list[str] = TEXTS) -> list[Record]:
    """espeak clips at 24 kHz under root/data/clips, with word start times as `words`."""
    from habla.sources.espeak import Espeak

    tts = Espeak(seed=0)
    records = []
    for i, text in enumerate(texts):
        wave, starts = tts.synthesize(text, voice, rate=170, pitch=pitch)
        wave = resample(wave, tts.sample_rate, 24000)
        rel = f"data/clips/{speaker}_{i:02d}.wav"
        write_wav(root / rel, wave, 24000)
        records.append(Record(
            id=f"{speaker}_{i:02d}", audio=rel, duration=len(wave) / 24000, sample_rate=24000,
            speaker=speaker, language="es", text=text, source="test",
            sha256=sha256_file(root / rel), words=[Word(word=w, start=s) for w, s in starts]))
    return records


def make_tokenizer(folder: Path, texts: list[str]):
    return save_tokenizer(train_tokenizer(texts), folder)


def make_base(root: Path, records: list[Record], seed: int = 0) -> Path:
    """A tiny random fastspeech2 base folder (trained on no data) at root/models/base."""
    base_tok = root / "base_tokenizer"
    sp = make_tokenizer(base_tok, TEXTS[:4])  # fewer texts: some pieces are new later
    family = FastSpeech2()
    torch.manual_seed(seed)
    model = family.new_model(sp.get_piece_size(), ["cast_a", "cast_b"], **TINY)
    spec = family.features(model)
    with contextlib.chdir(root):  # record audio paths are relative to the project folder
        family.prosody_stats([family.make_example(r, sp, spec) for r in records[:4]])
    return save_model_folder(model, root / "models/base", base_tok, family.info, "# tiny\n")


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fs2")
    records = make_clips(root)
    return root, records


def test_loss_is_finite_and_falls_on_a_repeated_batch(corpus, monkeypatch):
    root, records = corpus
    monkeypatch.chdir(root)
    sp = make_tokenizer(root / "tok", TEXTS)
    family = FastSpeech2()
    torch.manual_seed(0)
    model = family.new_model(sp.get_piece_size(), ["lat_f2"], **TINY)
    spec = family.features(model)
    examples = [family.make_example(r, sp, spec) for r in records[:4]]
    family.prosody_stats(examples)
    batch = family.collate(examples)
    assert batch["duration_labels"].sum(1).tolist() == [e["frames"] for e in examples]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss, _ = family.loss(model, batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_loss_refuses_eval_mode_with_a_clear_message(corpus, monkeypatch):
    root, records = corpus
    monkeypatch.chdir(root)
    sp = make_tokenizer(root / "tok", TEXTS)
    family = FastSpeech2()
    model = family.new_model(sp.get_piece_size(), ["lat_f2"], **TINY).eval()
    ex = family.make_example(records[0], sp, family.features(model))
    family.prosody_stats([ex])
    with pytest.raises(RuntimeError, match="train\\(\\) mode"):
        family.loss(model, family.collate([ex]))


def test_saved_base_loads_from_its_folder_and_synthesizes_deterministically(corpus, monkeypatch):
    root, records = corpus
    monkeypatch.chdir(root)
    base = make_base(root, records)
    assert {"config.json", "model.safetensors", "habla.json", "README.md",
            "tokenizer/spm.model"} <= set(folder_hashes(base))
    family = get_family("fastspeech2")
    model = family.load_base(str(base))
    assert model.config.num_speakers == 2 and family.info.speakers == ["cast_a", "cast_b"]
    synth = load_synthesizer(str(base))
    assert (synth.family, synth.vocoder_name, synth.sample_rate) == ("fastspeech2",
                                                                     "griffinlim", 24000)
    a, sr = synth.synthesize("Hola mundo.", speaker="cast_b")
    b, _ = synth.synthesize("Hola mundo.", speaker="cast_b")
    assert sr == 24000 and a.dtype == np.float32 and len(a) >= 256
    assert np.array_equal(a, b)
    with pytest.raises(HablaError, match="unknown speaker"):
        synth.synthesize("Hola.", speaker="nadie")


def test_hook_tokenizer_copies_known_pieces_and_keeps_their_rows(corpus, monkeypatch):
    root, records = corpus
    monkeypatch.chdir(root)
    base = make_base(root, records)
    family = FastSpeech2()
    model = family.load_base(str(base))
    old = model.encoder.embed.weight.detach().clone()
    from habla.tokenizer import load_tokenizer

    base_sp = load_tokenizer(base / "tokenizer")
    new_sp = make_tokenizer(root / "tok_new", TEXTS)
    info = family.hook_tokenizer(model, root / "tok_new", str(base))
    assert model.encoder.embed.num_embeddings == new_sp.get_piece_size()
    assert model.config.vocab_size == new_sp.get_piece_size()
    assert info["copied"] + info["fresh"] == new_sp.get_piece_size() and info["fresh"] > 0
    piece = "▁"
    assert torch.equal(model.encoder.embed.weight[new_sp.piece_to_id(piece)],
                       old[base_sp.piece_to_id(piece)])


def test_hook_tokenizer_rejects_a_base_whose_embedding_does_not_match_its_vocabulary(
        corpus, monkeypatch):
    from habla.errors import StageError

    root, records = corpus
    monkeypatch.chdir(root)
    base = make_base(root, records)
    family = FastSpeech2()
    model = family.load_base(str(base))
    model.encoder.embed = torch.nn.Embedding(7, 32, padding_idx=0)  # wrong row count
    with pytest.raises(StageError, match="do not belong together"):
        family.hook_tokenizer(model, root / "base_tokenizer", str(base))


def test_add_speaker_appends_an_embedding_row_and_names_it(corpus, monkeypatch):
    root, records = corpus
    monkeypatch.chdir(root)
    base = make_base(root, records)
    family = FastSpeech2()
    model = family.load_base(str(base))
    family.add_speaker(model, "lat_f2")
    assert family.info.speakers == ["cast_a", "cast_b", "lat_f2"]
    assert model.speaker_id_embedding.num_embeddings == 3 and model.config.num_speakers == 3
    assert family.speaker_index("lat_f2") == 2
    family.add_speaker(model, "cast_a")  # known speaker: nothing changes
    assert model.speaker_id_embedding.num_embeddings == 3


def test_lora_targets_reach_the_decoder_only_in_phase_two():
    import re

    family = FastSpeech2()
    t1, save1 = family.lora_targets(1)
    t2, save2 = family.lora_targets(2)
    dec = "decoder.conformer_layers.0.self_attn.linear_q"
    enc = "encoder.conformer_layers.1.self_attn.linear_v"
    assert re.fullmatch(t1, enc) and not re.fullmatch(t1, dec)
    assert re.fullmatch(t2, enc) and re.fullmatch(t2, dec)
    assert re.fullmatch(t2, "decoder.conformer_layers.1.feed_forward.conv2")
    assert not re.fullmatch(t2, "speech_decoder_postnet.feat_out")  # trained in full instead
    assert "pitch_predictor" in save1 and "encoder.embed" in save1
    assert "speech_decoder_postnet.feat_out" in save2 and set(save1) < set(save2)


def test_a_hub_id_that_cannot_be_fetched_fails_with_a_message_naming_it():
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-model"):
        FastSpeech2().load_base("no-such-org/no-such-model")
