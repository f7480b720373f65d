"""The tokenize stage: sentence-level splits, the SentencePiece model, token<->word maps and
the data card, on hand-made `aligned.jsonl` manifests (no audio needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm

from habla import tokenizer as tok
from habla.config import load_params
from habla.errors import StageError
from habla.manifest import Record, Word, read_manifest, read_rejects, write_manifest
from habla.stages import tokenize as stage

REPO = Path(__file__).resolve().parents[1]

SENTENCES = [
    "El perro come pan en la cocina.",
    "¿Dónde está la estación de tren?",
    "Mañana lloverá en el norte del país.",
    "La niña baila con su abuela.",
    "Hoy es un buen día para caminar.",
    "Los libros están sobre la mesa.",
    "¡Qué calor hace esta tarde!",
    "Mi hermano trabaja en un hospital.",
    "El café de la esquina abre temprano.",
    "Necesito comprar leche y huevos.",
    "La película empieza a las nueve.",
    "Ellos viajaron a Perú el verano pasado.",
    "El gato duerme junto a la ventana.",
    "Vamos a cenar con nuestros vecinos.",
    "La reunión se ha cancelado otra vez.",
    "El río crece después de la tormenta.",
    "Quiero aprender a tocar la guitarra.",
    "Las flores del jardín son amarillas.",
    "El tren llega con diez minutos de retraso.",
    "Ella escribe cartas a su familia.",
]


def record(i: int, text: str | None, speaker: str = "spk0", duration: float = 2.5) -> Record:
    words = None
    if text:
        words = [Word(word=w, start=0.3 * n, end=0.3 * n + 0.25) for n, w in
                 enumerate(text.split())]
    return Record(id=f"clip{i:04d}", audio=f"data/clips/r/clip{i:04d}.wav", duration=duration,
                  sample_rate=24000, speaker=speaker, language="es", text=text,
                  source="synthetic", sha256="0" * 64, recording_id="r", offset=float(i),
                  text_source="reference", words=words, aligned_fraction=1.0)


def params(**tokenize_overrides):
    overrides = {f"tokenize.{k}": v for k, v in tokenize_overrides.items()}
    return load_params(REPO / "params.yaml", overrides=overrides)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_aligned(records: list[Record]) -> None:
    write_manifest(stage.ALIGNED, records)


def corpus() -> list[Record]:
    """Every sentence twice (two speakers), plus a copy that differs only in case/punctuation."""
    recs = [record(i, s, "ana") for i, s in enumerate(SENTENCES)]
    recs += [record(100 + i, s, "luis") for i, s in enumerate(SENTENCES)]
    recs.append(record(200, "el perro come pan en la cocina", "luis"))
    return recs


def test_each_sentence_lands_in_one_split_and_no_clip_is_lost(project):
    recs = corpus() + [record(300, "   ", "ana"), record(301, "¿?", "ana")]
    write_aligned(recs)
    summary = stage.run(params())

    splits = {n: read_manifest(f"data/splits/{n}.jsonl") for n in stage.SPLITS}
    keys = {n: {stage.split_key(r.text) for r in recs_} for n, recs_ in splits.items()}
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert all(r.split == n for n, rs in splits.items() for r in rs)
    kept = sorted(r.id for rs in splits.values() for r in rs)
    rejected = read_rejects("data/splits/rejects.jsonl")
    assert {r.item: r.reason for r in rejected} == {"clip0300": "no_text", "clip0301": "no_text"}
    assert kept == sorted(r.id for r in recs if r.id not in {"clip0300", "clip0301"})
    assert all(splits[n] for n in stage.SPLITS), "a tiny corpus still gets val and test"
    # the case/punctuation variant follows its sentence
    where = {r.id: n for n, rs in splits.items() for r in rs}
    assert where["clip0200"] == where["clip0000"] == where["clip0100"]
    # words and other fields travel unchanged
    by_id = {r.id: r for r in recs}
    for r in splits["train"]:
        assert r.words == by_id[r.id].words and r.duration == by_id[r.id].duration
    assert summary["clips_train"] == len(splits["train"])


def test_split_of_existing_sentences_does_not_move_when_clips_are_added():
    keys = [stage.split_key(s) for s in SENTENCES]
    before, _ = stage.split_by_text(keys, 1234, 0.1, 0.15)
    more = keys + [f"frase nueva numero {i}" for i in range(200)]
    after, moved = stage.split_by_text(more, 1234, 0.1, 0.15)
    assert moved == 0
    assert {k: after[k] for k in before} == before
    share = sum(v == "test" for v in after.values()) / len(after)
    assert 0.07 < share < 0.25
    other_seed, _ = stage.split_by_text(more, 99, 0.1, 0.15)
    assert other_seed != after


def test_by_speaker_holds_out_whole_speakers_and_drops_leaking_sentences(project):
    speakers = ["ana", "luis", "marta", "pablo", "sofia", "tomas"]
    shared = SENTENCES[:5]  # spoken by everyone: must end up in one split only
    recs = [record(100 * k + i, s if s in shared else f"{s} Lo dijo {spk}.", spk)
            for k, spk in enumerate(speakers) for i, s in enumerate(SENTENCES)]
    write_aligned(recs)
    stage.run(params(by_speaker=True))
    splits = {n: read_manifest(f"data/splits/{n}.jsonl") for n in stage.SPLITS}
    spk = {n: {r.speaker for r in rs} for n, rs in splits.items()}
    assert all(spk[n] for n in stage.SPLITS)
    assert not spk["train"] & spk["val"] and not spk["train"] & spk["test"]
    assert not spk["val"] & spk["test"]
    texts = {n: {r.text for r in rs} for n, rs in splits.items()}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    assert set(shared) <= texts["test"], "test outranks val and train for a shared sentence"
    rejects = read_rejects("data/splits/rejects.jsonl")
    assert {r.reason for r in rejects} == {"text_held_out"}
    assert len(rejects) == len(shared) * (len(spk["train"]) + len(spk["val"]))


def test_by_speaker_keeps_train_when_sentences_differ(project):
    speakers = ["ana", "luis", "marta", "pablo"]
    recs = [record(100 * k + i, f"{s} Lo dijo {spk}.", spk) for k, spk in enumerate(speakers)
            for i, s in enumerate(SENTENCES)]
    write_aligned(recs)
    summary = stage.run(params(by_speaker=True))
    assert summary["clips_train"] == 2 * len(SENTENCES)
    assert summary["clips_val"] == summary["clips_test"] == len(SENTENCES)
    assert summary["rejected"] == {}


def test_by_speaker_with_one_speaker_is_a_clear_error(project):
    write_aligned([record(i, s, "ana") for i, s in enumerate(SENTENCES)])
    with pytest.raises(StageError, match=r"by_speaker.*at least 3 speakers.*ana"):
        stage.run(params(by_speaker=True))


def test_val_plus_test_of_one_or_more_is_rejected_by_the_schema():
    from habla.config import ParamsError

    with pytest.raises(ParamsError, match=r"tokenize.split.*must be below 1"):
        params(split={"val": 0.5, "test": 0.5})


@pytest.mark.parametrize("model_type,vocab_size", [("char", 8), ("bpe", 60), ("unigram", 60)])
def test_tokenizer_is_byte_identical_when_rerun(tmp_path, monkeypatch, model_type, vocab_size):
    outs = []
    for run_dir in ("a", "b"):
        (tmp_path / run_dir).mkdir()
        monkeypatch.chdir(tmp_path / run_dir)
        recs = corpus()
        # clip order must not matter either
        write_aligned(recs if run_dir == "a" else recs[::-1])
        stage.run(params(model_type=model_type, vocab_size=vocab_size))
        outs.append([(tmp_path / run_dir / "models/tokenizer" / f).read_bytes()
                     for f in ("spm.model", "spm.vocab", "spm_info.json")])
    assert outs[0] == outs[1]


def test_char_vocab_is_every_training_character_whatever_vocab_size(project):
    write_aligned(corpus())
    stage.run(params(model_type="char", vocab_size=8))
    sp = tok.load_tokenizer("models/tokenizer")
    train = read_manifest("data/splits/train.jsonl")
    chars = {c for r in train for c in r.text.casefold() if not c.isspace()}
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    assert chars <= pieces
    assert sp.get_piece_size() == len(chars) + 4  # + <pad> <unk> </s> ▁
    card = json.loads(Path("metrics/data.json").read_text())
    assert card["train_unk_rate"] == 0.0
    assert card["tokenizer_vocab_size"] == sp.get_piece_size()
    info = json.loads(Path("models/tokenizer/spm_info.json").read_text())
    assert info["special_ids"] == {"<pad>": 0, "<unk>": 1, "</s>": 2}
    assert Path("models/tokenizer/README.md").read_text().count("`<pad>` = 0") == 1


def test_special_ids_are_pad0_unk1_eos2_and_a_wrong_model_is_refused(tmp_path):
    model = tok.train_tokenizer(SENTENCES, "bpe", 60, 1.0)
    sp = tok.save_tokenizer(model, tmp_path / "t")
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "<unk>", "</s>"]
    assert tok.encode(sp, "hola", add_eos=True)[-1] == 2
    vocab = (tmp_path / "t/spm.vocab").read_text().splitlines()
    assert len(vocab) == sp.get_piece_size() and vocab[0].startswith("<pad>\t")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/spm.model").write_bytes(b"not a model")
    with pytest.raises(tok.TokenizerError, match=r"bad/spm.model: not a SentencePiece model"):
        tok.load_tokenizer(tmp_path / "bad")
    with pytest.raises(tok.TokenizerError, match=r"nope/spm.model: no tokenizer model"):
        tok.load_tokenizer(tmp_path / "nope")


def test_bpe_vocab_larger_than_the_data_allows_names_the_param():
    with pytest.raises(tok.TokenizerError, match=r"Vocabulary size too high.*tokenize.vocab_size"):
        tok.train_tokenizer(SENTENCES[:2], "bpe", 5000, 1.0)


def test_tokens_map_to_words_and_spaces_and_punctuation_to_none():
    model = tok.train_tokenizer(SENTENCES + ["Hola, ¿qué tal? Árbol"], "char", 64, 1.0)
    sp = spm.SentencePieceProcessor(model_proto=model)
    text = "Hola, ¿qué  tal? Árbol"
    # Whisper-style words keep their punctuation and may differ in case
    words = [Word(word=" Hola,"), Word(word="¿QUÉ"), Word(word="tal?"), Word(word="arbol")]
    ids, owners = tok.token_words(sp, text, words)
    pieces = [sp.id_to_piece(i) for i in ids]
    assert len(ids) == len(owners)
    spelled: dict[int, str] = {}
    for piece, owner in zip(pieces, owners, strict=True):
        if owner is None:
            assert piece in {"▁", ",", "¿", "?"}
        else:
            spelled[owner] = spelled.get(owner, "") + piece
    assert spelled == {0: "hola", 1: "qué", 2: "tal", 3: "árbol"}


def test_bpe_tokens_that_carry_the_space_belong_to_their_word_and_missing_words_to_none():
    model = tok.train_tokenizer(SENTENCES * 3, "bpe", 120, 1.0)
    sp = spm.SentencePieceProcessor(model_proto=model)
    text = "El perro come pan."
    ids, owners = tok.token_words(sp, text, ["El", "gato", "come", "pan."])
    assert owners.count(1) == 0  # 'gato' is not in the text: no tokens, not a crash
    pieces = [sp.id_to_piece(i).replace("▁", "") for i in ids]
    assert "".join(p for p, o in zip(pieces, owners, strict=True) if o == 2) == "come"
    assert "".join(p for p, o in zip(pieces, owners, strict=True) if o == 3) == "pan"
    assert tok.word_spans(text, ["El", "gato", "come", "pan."])[1] is None


def test_each_token_knows_its_first_letter_in_its_word_for_char_and_bpe():
    text = "El perro, ¿come pan?"
    words = ["El", "perro,", "¿come", "pan?"]
    for model_type, size in (("char", 64), ("bpe", 120)):
        sp = spm.SentencePieceProcessor(model_proto=tok.train_tokenizer(SENTENCES * 3,
                                                                         model_type, size, 1.0))
        ids, owners, letter_of = tok.token_letters(sp, text, words)
        assert (ids, owners) == tok.token_words(sp, text, words)
        for index, span in enumerate(tok.word_spans(text, words)):
            firsts = [k for o, k in zip(owners, letter_of, strict=True) if o == index]
            # starts at the word's first letter, strictly increasing, inside the word
            assert firsts[0] == 0 and firsts == sorted(set(firsts))
            assert firsts[-1] < span[1] - span[0]
            if model_type == "char":  # every letter is its own token
                assert firsts == list(range(span[1] - span[0]))
        assert all(k is None for o, k in zip(owners, letter_of, strict=True) if o is None)


def test_data_card_folds_upstream_summaries_and_lists_unknown_characters(project):
    Path("data/raw").mkdir(parents=True)
    Path("data/raw/summary.json").write_text(json.dumps(
        {"recordings": 3, "hours": 0.12, "stage": "download", "seconds": 9.1, "asr_rtf": 0.4,
         "clips_from_cache": 2, "asr_seconds": 3.0,
         "rejected": {"unreadable": 1}, "speakers": ["ana", "luis"]}))
    Path("data/labels").mkdir(parents=True)
    Path("data/labels/transcribe_summary.json").write_text("{not json")
    # data/clips/summary.json and timestamps_summary.json are missing: fine
    write_aligned(corpus())
    stage.run(params())
    card = json.loads(Path("metrics/data.json").read_text())
    assert card["download_recordings"] == 3 and card["download_rejected_unreadable"] == 1
    assert not {"download_seconds", "download_stage", "download_asr_rtf",
                "download_clips_from_cache", "download_asr_seconds"} & set(card), \
        "run timings would make the card differ from run to run"
    assert not any(k.startswith("transcribe_") for k in card)
    for name in stage.SPLITS:
        assert card[f"{name}_clips"] > 0 and card[f"{name}_hours"] > 0
    assert all(not isinstance(v, list | dict) for v in card.values()), "flat for dvc metrics"
    assert card["words_unmatched_rate"] == 0.0

    sp = tok.load_tokenizer("models/tokenizer")
    tokens, unknown, missing = stage.coverage(sp, [record(1, "Kiosko ¶ zz")])
    assert {"k", "¶"} <= missing and unknown >= 2 and tokens > unknown


def test_empty_manifest_and_all_rejected_are_clear_errors(project):
    write_aligned([])
    with pytest.raises(StageError, match=r"aligned.jsonl: no clips"):
        stage.run(params())
    write_aligned([record(1, ""), record(2, "...")])
    with pytest.raises(StageError, match=r"no clip left for training"):
        stage.run(params())


def test_an_asr_family_gets_the_split_and_is_told_the_vocabulary_does_not_apply(project):
    write_aligned(corpus())
    p = params()
    p.model.family = "whisper"
    summary = stage.run(p)
    assert "does not apply" in summary["tokenizer"] and "whisper" in summary["tokenizer"]
    card = json.loads((project / stage.DATA_CARD).read_text())
    assert card["tokenizer_used_by_model"] is False
    assert sum(summary[f"clips_{n}"] for n in ("train", "val", "test")) > 0
    tts = stage.run(params())  # a TTS family: the same split, no note
    assert "tokenizer" not in tts and "tokenizer_used_by_model" not in json.loads(
        (project / stage.DATA_CARD).read_text())
    assert {k: tts[k] for k in ("clips_train", "clips_val", "clips_test")} == {
        k: summary[k] for k in ("clips_train", "clips_val", "clips_test")}
