"""habla.whisper_train and habla.whisper_timing: LoRA steps, a checked merge, word-start error."""

import math

import pytest
import torch
from helpers_whisper import espeak_clips, tiny_whisper

from habla.whisper_ct2 import export_ct2, load_whisper, save_whisper
from habla.whisper_data import label_lengths, pack_windows, window_example
from habla.whisper_timing import (
    fw_word_starts,
    hf_word_starts,
    segments_from_tokens,
    word_start_error,
    words_from_segments,
)
from habla.whisper_train import LORA_TARGETS, add_lora, batch_loss, collate, merge_checked


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper") / "tiny-hf"
    tiny_whisper(folder)
    return folder


@pytest.fixture(scope="module")
def batch(tiny):
    clips = espeak_clips(range(200000, 200006))
    whisper = load_whisper(str(tiny))
    tok = whisper.processor.tokenizer
    plan = pack_windows([c.duration for c in clips], label_lengths(clips, tok, "es", "clips"),
                        seed=0)
    return collate([window_example(clips, w, tok, "es", "clips") for w in plan], pad_id=50257)


def test_lora_sits_on_every_attention_projection_and_a_few_steps_lower_the_loss(tiny, batch):
    model = add_lora(load_whisper(str(tiny)).model, seed=0)
    wrapped = {n.rsplit(".", 2)[0] for n, _ in model.named_parameters() if "lora_A" in n}
    # 2 encoder layers × self-attention, 2 decoder layers × (self + cross), 4 projections each
    assert len(wrapped) == (2 + 2 * 2) * len(LORA_TARGETS)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    model.train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss, figures = batch_loss(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(figures["loss"])
        assert figures["tokens"] == int((batch["labels"] != -100).sum())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5, losses


def test_merge_keeps_the_adapters_outputs_and_exports_to_faster_whisper(tiny, batch, tmp_path):
    whisper = load_whisper(str(tiny))
    model = add_lora(whisper.model, seed=1)
    with torch.no_grad():  # adapters that matter: B starts at zero, so give it weight
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    merged, diff = merge_checked(model, batch)
    assert diff < 1e-4
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ct2 = export_ct2(save_whisper(whisper._replace(model=merged), tmp_path / "hf"),
                     tmp_path / "ct2", "float32")
    assert load_whisper(str(ct2)).model.state_dict().keys() == merged.state_dict().keys()


def test_segments_from_timestamp_tokens(tiny):
    tok = load_whisper(str(tiny)).processor.tokenizer
    hola, mundo = tok.encode(" Hola", add_special_tokens=False), tok.encode(
        " mundo.", add_special_tokens=False)
    ts = lambda s: 50364 + round(s / 0.02)  # noqa: E731
    tokens = [50258, 50262, 50359, ts(0.0), *hola, ts(0.5), ts(0.6), *mundo, ts(1.2), 50257]
    assert segments_from_tokens(tokens, tok) == [(0.0, 0.5, "Hola"), (0.6, 1.2, "mundo.")]
    assert segments_from_tokens(tokens[:-2], tok, time_offset=10.0)[-1] == (10.6, None,
                                                                            "mundo.")
    assert words_from_segments([(0.2, 1.0, "¿Qué tal?"), (1.0, None, "Bien")]) == [
        ("Qué", 0.2), ("tal", None), ("Bien", 1.0)]


def test_word_start_error_matches_words_by_text_in_order():
    truth = [[("uno", 0.0), ("dos", 0.5), ("tres", 1.0), ("cuatro", 1.5)]]
    predicted = [[("Uno,", 0.02), ("dos", None), ("tres.", 1.04), ("cinco", 1.5),
                  ("cuatro", 1.4)]]
    err = word_start_error(truth, predicted)
    assert (err.words, err.matched) == (4, 3)  # 'dos' has no start of its own
    assert err.median_ms == pytest.approx(40.0)
    assert err.mae_ms == pytest.approx((20 + 40 + 100) / 3)
    assert err.mean_signed_ms == pytest.approx((20 + 40 - 100) / 3)
    assert err.within_50ms == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="1 truth clips but 2 predicted"):
        word_start_error(truth, predicted * 2)


def test_hf_and_faster_whisper_word_starts_come_from_the_same_decoding(tiny, tmp_path):
    """Timestamp-mode greedy decoding on both stacks, read by the same parser: what
    faster-whisper decodes of the random tiny model is the start of what HF decodes."""
    from faster_whisper import WhisperModel

    from habla.whisper_data import log_mel

    whisper = load_whisper(str(tiny))
    ct2 = export_ct2(tiny, tmp_path / "ct2", "float32")
    fw = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=1)
    clip = espeak_clips([200000])[0]
    hf = hf_word_starts(whisper.model, whisper.processor.tokenizer, log_mel(clip.wave)[None],
                        "es", max_new_tokens=30)[0]
    fws = fw_word_starts(fw, clip.wave, "es", max_new_tokens=30)
    assert fws and any(s is not None and s > 0 for _w, s in fws)
    assert hf[:len(fws)] == fws
