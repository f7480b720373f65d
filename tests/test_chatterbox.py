"""The chatterbox family on a tiny random Chatterbox saved in the real folder layout, offline.

Everything runs through the code that loads `ResembleAI/chatterbox`: upstream's T3, S3Gen,
voice encoder and grapheme tokenizer classes (chatterbox-tts installed without its pinned
dependencies), with `habla_sizes.json` making them small. Skips, naming the install command,
where chatterbox-tts is missing; `make setup` installs it, so CI runs these.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from habla.audio import write_wav
from habla.errors import StageError
from habla.families.chatterbox import ChatterboxFamily, upstream
from habla.manifest import Record, Word, sha256_file
from habla.tokenizer import save_tokenizer, train_tokenizer

pytestmark = pytest.mark.skipif(not upstream.available(),
                                reason=f"chatterbox-tts not installed: {upstream.INSTALL}")

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["hola mundo", "el gato come pan", "una casa roja", "son 35 pesos",
         "la niña canta", "sol y luna"]


def make_clip(path: Path, text: str, seed: int, speaker: str = "lat_f2") -> Record:
    """A voiced tone burst per word (24 kHz), with the word times in the record."""
    sr = 24000
    rng = np.random.default_rng(seed)
    parts, words, t = [np.zeros(int(0.1 * sr), np.float32)], [], 0.1
    for k, word in enumerate(text.split()):
        dur = 0.06 * len(word) + 0.1
        n = int(dur * sr)
        f0 = 110 + 25 * k + 5 * seed
        tone = 0.3 * np.sin(2 * np.pi * f0 * np.arange(n) / sr) + 0.02 * rng.standard_normal(n)
        parts += [tone.astype(np.float32), np.zeros(int(0.05 * sr), np.float32)]
        words.append(Word(word=word, start=round(t, 3), end=round(t + dur, 3)))
        t += dur + 0.05
    wave = np.concatenate(parts)
    write_wav(path, wave, sr)
    return Record(id=path.stem, audio=str(path), duration=len(wave) / sr, sample_rate=sr,
                  speaker=speaker, language="es", text=text, source="test",
                  sha256=sha256_file(path), words=words)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from chatterbox_tiny import make_tiny_chatterbox

    return make_tiny_chatterbox(tmp_path_factory.mktemp("cb") / "base")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (cwd) with six clips of one speaker and a char tokenizer."""
    monkeypatch.chdir(tmp_path)
    Path("clips").mkdir()
    records = [make_clip(Path(f"clips/c{i}.wav"), t, i) for i, t in enumerate(TEXTS)]
    save_tokenizer(train_tokenizer(TEXTS * 3, "char"), Path("models/tokenizer"))
    return records


def loaded(base: Path, **settings) -> tuple[ChatterboxFamily, torch.nn.Module]:
    family = ChatterboxFamily()
    family.info.settings.update(settings)
    model = family.load_base(str(base))
    family.hook_tokenizer(model, Path("models/tokenizer"), str(base))
    return family, model


# ---------------------------------------------------------------- text
def test_grapheme_ids_match_upstreams_mtl_tokenizer_with_numbers_spelt_out(base):
    from habla.families.chatterbox.text import GraphemeText, prepare

    mtl = upstream.module("models.tokenizers").MTLTokenizer(str(base / upstream.TOKENIZER_FILE))
    ours = GraphemeText(base / upstream.TOKENIZER_FILE, "es")
    text = prepare("la niña pagó 350 pesos")
    assert text == "La niña pagó trescientos cincuenta pesos."
    ids, owners = ours.encode(text, ["la", "niña", "pagó", "trescientos", "cincuenta", "pesos"])
    assert ids[1:-1] == mtl.encode(text, language_id="es")
    assert (ids[0], ids[-1]) == (255, 0)  # [START], [STOP]
    assert 1 not in ids  # no [UNK]: ñ and ó are n/o + combining marks after NFKD
    # each letter's token belongs to its word; the tag, spaces and the stop to none
    word_of = [o for o in owners if o is not None]
    assert word_of == sorted(word_of) and set(word_of) == set(range(6))
    assert owners[:2] == [None, None] and owners[-2:] == [None, None]


# ---------------------------------------------------------------- prompts and the cache
def test_prompt_is_another_clip_of_the_speaker_seeded_and_stable_when_clips_are_added(project):
    from habla.families.chatterbox.clips import choose_prompt

    records = project
    other = records[0].model_copy(update={"id": "x0", "speaker": "other", "sha256": "f" * 64})
    chosen = {r.id: choose_prompt(r, [*records, other], seed=1).id for r in records}
    assert all(p != t for t, p in chosen.items())
    assert "x0" not in chosen.values()
    assert chosen == {r.id: choose_prompt(r, list(reversed(records)), 1).id for r in records}
    assert chosen != {r.id: choose_prompt(r, records, 2).id for r in records}
    # a new clip changes a target's prompt only when the new clip is that target's winner
    extra = records[1].model_copy(update={"id": "new", "sha256": "e" * 64})
    after = {r.id: choose_prompt(r, [*records, extra], 1).id for r in records}
    assert all(after[t] in (chosen[t], "new") for t in chosen)
    # a copy of the target's own audio under another id is never its prompt
    twin = records[2].model_copy(update={"id": "twin"})
    assert choose_prompt(records[2], [records[2], twin], 1) is None


def test_each_clip_is_encoded_once_and_added_clips_only_are_encoded_later(project, base):
    family, model = loaded(base)
    records = project
    examples = family.make_examples(records[:4], None, family.features(model), phase=1)
    encoder = family._encoder
    assert encoder.cache.misses == 4 and len(examples) == 4
    again = ChatterboxFamily()
    again.load_base(str(base))
    more = again.make_examples(records, None, again.features(model), phase=1)
    assert again._encoder.cache.misses == 2  # only the two new clips
    assert torch.equal(more[0]["speech"], examples[0]["speech"])
    tokens = more[0]["speech"]
    assert tokens[0] == 6561 and tokens[-1] == 6562  # start and stop of speech
    assert len(tokens) - 2 == pytest.approx(records[0].duration * 25, abs=1)
    assert all(e["prompt_id"] != e["id"] for e in more)
    assert more[0]["speaker_emb"].shape == (256,)


def test_a_speaker_with_one_clip_is_rejected_not_conditioned_on_itself(project, base):
    from habla.manifest import Rejects

    family, model = loaded(base)
    lone = project[0].model_copy(update={"speaker": "alone"})
    rejects = Rejects("phase1")
    assert family.make_examples([lone], None, family.features(model), 1, rejects) == []
    assert rejects.counts() == {"no_prompt_clip": 1}


# ---------------------------------------------------------------- loss
def test_loss_predicts_the_next_token_and_ignores_padding():
    from habla.families.chatterbox.model import shifted_loss

    tokens = torch.tensor([[5, 1, 2, 3, 9], [5, 3, 9, 0, 0]])
    lengths = torch.tensor([5, 3])
    logits = torch.full((2, 5, 10), -20.0)
    for b in range(2):
        for j in range(4):
            logits[b, j, tokens[b, j + 1]] = 20.0  # position j predicts token j+1
    assert float(shifted_loss(logits, tokens, lengths)) < 1e-6
    unshifted = torch.full((2, 5, 10), -20.0)
    unshifted.scatter_(2, tokens[..., None], 20.0)  # what upstream's T3.loss scores
    assert float(shifted_loss(unshifted, tokens, lengths)) > 10
    logits[1, 3] = torch.randn(10)  # a padded position: ignored
    assert float(shifted_loss(logits, tokens, lengths)) < 1e-6


def test_word_guide_penalises_attention_on_words_heard_elsewhere():
    from habla.families.chatterbox.model import guide_loss

    # 2 text tokens: word 0 heard in [0, 0.2), word 1 in [0.2, 0.4); 10 speech steps
    batch = {"text": torch.zeros(1, 2), "text_lens": torch.tensor([2]),
             "speech": torch.zeros(1, 11), "speech_lens": torch.tensor([11]),
             "token_spans": torch.tensor([[[0.0, 0.2], [0.2, 0.4]]])}

    def attention(right: bool) -> dict:
        attn = torch.zeros(1, 1, 13, 13)
        for j in range(11):
            word = int(j * 0.04 >= 0.2)
            attn[0, 0, 2 + j, word if right else 1 - word] = 1.0
        return {"attentions": (attn,), "starts": [(0, 2)]}

    good = guide_loss(attention(True), batch, [(0, 0)], sigma=0.05)
    bad = guide_loss(attention(False), batch, [(0, 0)], sigma=0.05)
    assert float(good) < 0.05 and float(bad) > 0.25  # (a mean over step x token pairs)


# ---------------------------------------------------------------- training, merge, reload
def _train(family, model, examples, phase, ckpt, stop_after=None):
    from habla.train import TrainConfig, train

    cfg = TrainConfig(phase=f"phase{phase}", lr=1e-3, max_steps=3, batch_size=2,
                      eval_every=3, save_every=1, seed=1)
    return train(model, family, examples, examples[:2], cfg, ckpt, stop_after=stop_after)


def _lora(model, phase, family):
    from peft import LoraConfig, get_peft_model

    targets, save = family.lora_targets(phase)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=targets,
                        modules_to_save=save, init_lora_weights=False)
    return get_peft_model(model, config)


def test_both_phases_train_resume_exactly_and_merge_with_parity(project, base, tmp_path):
    from habla.train import TrainingInterrupted

    family, model = loaded(base)
    examples = family.make_examples(project, None, family.features(model), phase=1)
    phase1 = _lora(model, 1, family)
    names = {n for n, p in phase1.named_parameters() if p.requires_grad}
    assert any("self_attn.q_proj.lora_A" in n for n in names)
    assert not any("mlp" in n for n in names)  # phase 1: attention + text modules only
    assert any("text_emb.modules_to_save" in n for n in names)
    assert not any(n.startswith(("base_model.model.s3gen", "base_model.model.ve")) for n in names)
    _train(family, phase1, examples, 1, tmp_path / "p1")
    model = phase1.merge_and_unload()

    family.info.settings["word_guide"] = {"weight": 1.0, "heads": [[1, 0], [1, 1]]}
    phase2 = _lora(model, 2, family)
    assert any("mlp.down_proj.lora_A" in n for n, p in phase2.named_parameters()
               if p.requires_grad)
    twin = copy.deepcopy(phase2)
    done = _train(family, phase2, examples, 2, tmp_path / "p2")
    with pytest.raises(TrainingInterrupted):
        _train(family, twin, examples, 2, tmp_path / "p2b", stop_after=1)
    _train(family, twin, examples, 2, tmp_path / "p2b")  # resumes from step 1
    assert done["steps"] == 3
    for (name, a), (_, b) in zip(phase2.named_parameters(), twin.named_parameters(),
                                 strict=True):
        if a.requires_grad:
            assert torch.equal(a, b), name
    _, parts = family.loss(phase2, family.collate(examples[:2]))
    assert parts["word_guide"] > 0

    merged = copy.deepcopy(phase2).merge_and_unload()
    batch = family.collate(examples[:2])
    diff = (family.parity_outputs(phase2, batch) - family.parity_outputs(merged, batch)).abs()
    assert float(diff.max()) < 1e-4


def test_new_language_gets_new_tokens_with_mean_rows_saved_with_the_model(project, base):
    texts = ["ŋa ŋe ŋi", "ɛ ŋɛ"]
    save_tokenizer(train_tokenizer(texts * 3, "char"), Path("models/tokenizer_new"))
    family = ChatterboxFamily()
    family.info.settings.update(language="xx", new_tokens=True)
    model = family.load_base(str(base))
    before = model.t3.text_emb.weight.detach().clone()
    info = family.hook_tokenizer(model, Path("models/tokenizer_new"), str(base))
    assert set(info["missing"]) == {"ŋ", "ɛ"} and info["new_tokens"] == 3  # + the [xx] tag
    emb = model.t3.text_emb.weight.detach()
    assert emb.shape[0] == before.shape[0] + 3
    assert torch.allclose(emb[-1], before.mean(0)) and torch.equal(emb[:300], before)
    ids, _ = family.text.encode("ŋa ŋe")
    assert max(ids) >= 300 and 1 not in ids
    model.t3.load_state_dict(model.t3.state_dict())
    family.info.default_speaker = None
    family.save_merged(model, Path("merged"))
    assert upstream.t3_text_vocab(Path("merged")) == 303
    again = ChatterboxFamily()
    again.info.settings.update(language="xx")
    again.load_base("merged")
    assert again.text.encode("ŋa ŋe")[0] == ids

    plain = ChatterboxFamily()
    plain.info.settings.update(language="xx")
    with pytest.raises(StageError, match="no language tag.*new_tokens"):
        plain.hook_tokenizer(plain.load_base(str(base)), Path("models/tokenizer_new"),
                             str(base))


def _merged_folder(project, base) -> Path:
    """phase-1 LoRA merged and saved by the family, with habla.json, as the merge stage does."""
    from habla.model_folder import save_info

    family, model = loaded(base)
    family.info.default_speaker = "lat_f2"
    Path("data/splits").mkdir(parents=True)
    from habla.manifest import write_manifest

    write_manifest(Path("data/splits/train.jsonl"), project)
    peft_model = _lora(model, 1, family)
    merged = peft_model.merge_and_unload()
    out = Path("models/merged")
    family.save_merged(merged, out)
    family.info.settings["synthesis"] = {"watermark": False}
    save_info(out, family.info)
    return out


def test_merged_folder_reloads_with_upstreams_own_loader_and_speaks(project, base):
    out = _merged_folder(project, base)
    assert json.loads((out / "habla.json").read_text())["settings"]["reference_clip"]["id"]
    for name in ("s3gen.pt", "ve.pt"):  # frozen: byte-identical to the base's
        assert sha256_file(out / name) == sha256_file(base / name)
    script = f"""
import torch, numpy as np
from safetensors.torch import load_file
from chatterbox.mtl_tts import ChatterboxMultilingualTTS   # upstream's package, as a user has it
from habla.families.chatterbox.upstream import small_sizes, read_sizes
from pathlib import Path
folder = Path({str(out.resolve())!r})
with small_sizes(read_sizes(folder)):                    # only the tiny sizes are habla's
    tts = ChatterboxMultilingualTTS.from_local(folder, "cpu")
saved = load_file(str(folder / "t3_mtl23ls_v2.safetensors"))
assert all(torch.equal(v, saved[k]) for k, v in tts.t3.state_dict().items())
assert tts.conds is not None
# a random T3 samples ids above the 6561 S3 codes, which a trained one does not emit and
# upstream passes on to S3Gen: drop them, as its drop_invalid_tokens does for start/stop
import chatterbox.mtl_tts as mtl
strip = mtl.drop_invalid_tokens
mtl.drop_invalid_tokens = lambda x: (lambda y: y[y < 6561])(strip(x))
torch.manual_seed(0)
wav = tts.generate("Hola mundo.", language_id="es")
print("OK", tuple(wav.shape), tts.sr)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK (1, " in done.stdout and "24000" in done.stdout


def test_synth_speaks_with_the_merged_model_and_its_voice(project, base):
    from habla.synth import synth

    out = _merged_folder(project, base)
    [result] = synth("Hola, son 35 pesos.", out, "hola.wav", speaker="lat_f2")
    assert result["family"] == "chatterbox" and result["sample_rate"] == 24000
    assert result["vocoder"] == "s3gen" and result["seconds"] > 0
    from habla.audio import read_mono

    wave, sr = read_mono("hola.wav")
    assert sr == 24000 and np.abs(wave).max() > 0
    # letters the grapheme tokenizer lacks are named, not dropped; nothing is written
    with pytest.raises(StageError, match="cannot say: 你好"):
        synth("Hola 你好, hola", out, "chino.wav", speaker="lat_f2")
    assert not Path("chino.wav").exists()


def test_the_hub_base_folder_without_habla_json_is_recognised_for_synthesis(base):
    from habla.families import family_of

    family, folder = family_of(str(base))
    assert family.name == "chatterbox" and folder == base


def test_wrong_vocoder_and_missing_upstream_say_what_to_do(base, monkeypatch):
    family = ChatterboxFamily()
    with pytest.raises(ValueError, match="model.vocoder must be 's3gen'"):
        family.set_vocoder("griffinlim")
    monkeypatch.delitem(sys.modules, "chatterbox")
    monkeypatch.setattr(upstream.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(upstream.ChatterboxMissing, match="pip install --no-deps chatterbox-tts"):
        upstream.module("models.t3_missing")
