"""habla.whisper_ct2: CTranslate2 ⇄ transformers Whisper, exact, with the generation traps fixed."""

import json

import numpy as np
import pytest
import torch
from helpers_whisper import espeak_clips, tiny_pair

from habla.asr import AsrError, whisper_base_dir
from habla.whisper_ct2 import (
    export_ct2,
    folder_kind,
    load_whisper,
    read_ct2_model_bin,
    save_whisper,
    state_dict_equal,
)
from habla.whisper_data import log_mel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def clips():
    return espeak_clips([200000, 200001, 200002])


def _fw_tokens(folder, wave, max_new_tokens):
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="float32", cpu_threads=1)
    segments, _ = model.transcribe(
        wave, language="es", beam_size=1, temperature=0.0, without_timestamps=True,
        condition_on_previous_text=False, vad_filter=False, max_new_tokens=max_new_tokens,
        log_prob_threshold=None, no_speech_threshold=None, compression_ratio_threshold=None)
    segments = list(segments)
    return [t for s in segments for t in s.tokens], " ".join(s.text.strip() for s in segments)


def _hf_tokens(model, wave, max_new_tokens):
    features = torch.from_numpy(log_mel(wave))[None]
    with torch.no_grad():
        out = model.generate(input_features=features, language="es", task="transcribe",
                             max_new_tokens=max_new_tokens)
    tokens = out[0].tolist()
    if tokens[:1] == [50258]:  # a version that returns the forced prefix too
        tokens = tokens[4:]
    return tokens[:tokens.index(50257)] if 50257 in tokens else tokens


def _text_logit_gap(whisper, wave, prefix, token):
    """How far `token` falls below HF's best text token (timestamps excluded) after the
    decoding prompt and `prefix`, relative to the largest |logit|."""
    tok = whisper.processor.tokenizer
    prompt = tok.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|es|>", "<|transcribe|>", "<|notimestamps|>"])
    features = torch.from_numpy(log_mel(wave))[None]
    with torch.no_grad():
        logits = whisper.model(input_features=features,
                               decoder_input_ids=torch.tensor([prompt + prefix])).logits[0, -1]
    text = logits[:_timestamp_begin(whisper)]
    return float((text.max() - logits[token]) / logits.abs().max())


def _timestamp_begin(whisper):
    return whisper.model.generation_config.no_timestamps_token_id + 1  # <|0.00|>


def test_ct2_export_rebuilds_every_tiny_weight_exactly(tiny):
    whisper, _hf, ct2 = tiny
    assert folder_kind(ct2) == "ct2"
    rebuilt = load_whisper(str(ct2))
    assert state_dict_equal(whisper.model, rebuilt.model) == []
    m = rebuilt.model
    assert m.proj_out.weight is m.model.decoder.embed_tokens.weight
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_ffn_dim", "num_mel_bins", "vocab_size", "max_target_positions"):
        assert getattr(m.config, key) == getattr(whisper.model.config, key), key


def test_weights_the_converter_stored_once_under_aliases_are_restored(tiny, tmp_path):
    whisper = load_whisper(str(tiny[1]))  # a copy: the shared one stays random
    with torch.no_grad():  # freshly initialised values: zero biases, unit gains, shared
        for name, p in whisper.model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "layer_norm" in name:
                p.fill_(1.0)
    hf = save_whisper(whisper, tmp_path / "hf")
    ct2 = export_ct2(hf, tmp_path / "ct2", "float32")
    _variables, aliases = read_ct2_model_bin(ct2 / "model.bin")
    assert len(aliases) > 10
    assert state_dict_equal(whisper.model, load_whisper(str(ct2)).model) == []


def test_rebuilt_generation_config_and_tokenizer_know_whisper_special_tokens(tiny):
    _whisper, _hf, ct2 = tiny
    rebuilt = load_whisper(str(ct2))
    gen, tok = rebuilt.generation_config, rebuilt.processor.tokenizer
    ct2_config = json.loads((ct2 / "config.json").read_text())
    assert gen.lang_to_id["<|es|>"] == 50262 and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gen.no_timestamps_token_id == 50363 and gen.decoder_start_token_id == 50258
    assert gen.suppress_tokens == ct2_config["suppress_ids"]
    assert gen.begin_suppress_tokens == ct2_config["suppress_ids_begin"]
    assert gen.alignment_heads == [[1, 0], [1, 2]]
    assert rebuilt.model.config.suppress_tokens is None  # only in the generation config
    # trap 3: with only <|endoftext|> special, <|1.00|> would be decoded as 3.12 s
    assert tok.all_special_ids[-1] == 50363
    text = tok.decode([50258, 50262, 50359, 50364 + 50, 22637, 50364 + 100],
                      decode_with_timestamps=True)
    assert text == "<|startoftranscript|><|es|><|transcribe|><|1.00|> Hola<|2.00|>"


def test_transformers_folder_loads_through_from_pretrained_with_its_generation_config(tiny):
    whisper, hf, _ct2 = tiny
    assert folder_kind(hf) == "transformers"
    loaded = load_whisper(str(hf))
    assert state_dict_equal(whisper.model, loaded.model) == []
    assert loaded.generation_config.lang_to_id == whisper.generation_config.lang_to_id
    assert loaded.processor.tokenizer.all_special_ids[-1] == 50363
    assert loaded.processor.feature_extractor.feature_size == 80


def test_hf_greedy_decoding_equals_faster_whisper_float32_on_the_export(tiny, clips):
    whisper, _hf, ct2 = tiny
    outputs, compared = set(), 0
    for clip in clips:
        fw, _text = _fw_tokens(ct2, clip.wave, 40)
        hf = _hf_tokens(whisper.model, clip.wave, 40)
        assert len(fw) >= 8
        # faster-whisper ends a decoding pass at a timestamp token (this random model emits
        # some even after <|notimestamps|>) and decodes the rest of the window anew from
        # there: its first pass is what HF's one greedy pass must reproduce
        first = next((i + 1 for i, t in enumerate(fw) if t >= _timestamp_begin(whisper)),
                     len(fw))
        fw = fw[:first]
        same = next((i for i, (a, b) in enumerate(zip(fw, hf, strict=False)) if a != b), len(fw))
        if same < len(fw):
            # the runtimes' float32 kernels (CT2's pinned to AVX2) may break a near-tie of a
            # random model's logits differently; faster-whisper's token must still be HF's
            # best text token up to that tie
            assert same >= 2, (fw, hf)
            gap = _text_logit_gap(whisper, clip.wave, fw[:same], fw[same])
            assert gap < 1e-3, (same, gap, hf[same])
        compared += len(fw)
        outputs.add(tuple(hf))
    assert compared >= 3 * len(clips)  # several tokens per clip, not just the first
    assert len(outputs) == len(clips)  # the audio decides the output, not the prefix alone


def test_int8_export_rebuilds_as_its_dequantised_weights(tiny, tmp_path):
    whisper, hf, _ct2 = tiny
    rebuilt = load_whisper(str(export_ct2(hf, tmp_path / "int8", "int8")))
    a = whisper.model.model.encoder.layers[0].fc1.weight
    b = rebuilt.model.model.encoder.layers[0].fc1.weight
    step = a.abs().amax(dim=1, keepdim=True) / 127  # one int8 step per output row
    assert not torch.equal(a, b)
    assert bool(((a - b).abs() <= step / 2 + 1e-6).all())


def test_export_replaces_an_old_folder_and_leaves_no_temporary_ones(tiny, tmp_path):
    _whisper, hf, _ct2 = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_ct2(hf, out, "float32")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.bin", "preprocessor_config.json", "tokenizer.json",
        "vocabulary.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "not a Whisper model folder"),
    (lambda p: (p / "config.json").write_text('{"model_type": "bert"}'),
     "model_type 'whisper'"),
    (lambda p: (p / "model.bin").write_bytes(b"\x06\x00\x00\x00"),
     r"CTranslate2 Whisper folder without \['config.json', 'tokenizer.json'\]"),
])
def test_folders_that_are_not_whisper_are_refused_with_what_was_expected(tmp_path, make, match):
    make(tmp_path)
    with pytest.raises(AsrError, match=match):
        load_whisper(str(tmp_path))


def test_damaged_model_bin_and_unknown_names_get_clear_errors(tiny, tmp_path):
    _whisper, _hf, ct2 = tiny
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((ct2 / name).read_bytes())
    (tmp_path / "model.bin").write_bytes((ct2 / "model.bin").read_bytes()[:5000])
    with pytest.raises(AsrError, match="truncated or damaged"):
        load_whisper(str(tmp_path))
    with pytest.raises(AsrError, match="not a folder, a faster-whisper model name"):
        load_whisper("no such model")
    with pytest.raises(AsrError, match="not a folder"):
        load_whisper(str(tmp_path / "missing"))


def test_real_whisper_base_rebuilds_exactly_and_decodes_like_faster_whisper(tmp_path):
    """The offline registry model: 72,593,920 parameters, HF = faster-whisper float32 on an
    eSpeak clip, and HF → CT2 float16 gives back every original variable bit for bit."""
    base = load_whisper("whisper-base")
    assert sum(p.numel() for p in base.model.parameters()) == 72_593_920
    clip = espeak_clips([200003])[0]
    fw_tokens, fw_text = _fw_tokens(whisper_base_dir(), clip.wave, 100)
    assert fw_text  # it heard words
    assert _hf_tokens(base.model, clip.wave, 100) == fw_tokens

    export_ct2(save_whisper(base, tmp_path / "hf"), tmp_path / "ct2", "float16")
    original, _ = read_ct2_model_bin(whisper_base_dir() / "model.bin")
    again, _ = read_ct2_model_bin(tmp_path / "ct2" / "model.bin")
    assert set(original) <= set(again)
    assert all(original[k].dtype == again[k].dtype and np.array_equal(original[k], again[k])
               for k in original)
