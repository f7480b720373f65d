"""habla.text: the one normaliser and the WER/CER every stage reports."""

import unicodedata

import pytest

from habla.text import cer, normalize, spell_number, wer, words


def test_normalize_strips_spanish_punctuation_and_keeps_accented_letters():
    assert normalize("¿Qué tal?  «Muy bien», dijo. ¡ÑANDÚ! Pingüino—sí…") == (
        "qué tal muy bien dijo ñandú pingüino sí"
    )


def test_normalize_composes_decomposed_accents_so_both_spellings_match():
    decomposed = unicodedata.normalize("NFD", "Canción")
    assert decomposed != "Canción"
    assert normalize(decomposed) == normalize("canción") == "canción"


def test_normalize_collapses_whitespace_and_separates_words_at_punctuation():
    assert normalize("  hola,mundo\t\n  adiós  ") == "hola mundo adiós"


def test_wer_and_cer_ignore_case_and_punctuation_but_count_accents():
    assert wer("¡Hola! ¿Qué tal?", "hola qué tal") == 0.0
    assert wer("Hola, ¿qué tal?", "hola que tal") == pytest.approx(1 / 3)
    assert cer("Hola, ¿qué tal?", "hola que tal") == pytest.approx(1 / 12)


def test_wer_counts_insertions_so_it_can_exceed_one():
    assert wer("sí", "no no no") == pytest.approx(3.0)


def test_empty_reference_is_perfect_only_for_an_empty_hypothesis():
    assert wer("", "") == 0.0
    assert wer("¿?", "  ") == 0.0
    assert wer("", "hola") == 1.0
    assert cer("¡!", "hola") == 1.0


def test_words_strip_punctuation_and_keep_inner_hyphens_with_spans():
    text = "¿Qué tal? franco-alemán, «sí»."
    assert words(text) == [("Qué", 1, 4), ("tal", 5, 8), ("franco-alemán", 10, 23),
                           ("sí", 26, 28)]
    assert [text[a:b] for _w, a, b in words(text)] == ["Qué", "tal", "franco-alemán", "sí"]


@pytest.mark.parametrize("n, spoken", [
    (0, "cero"), (16, "dieciséis"), (21, "veintiuno"), (31, "treinta y uno"), (100, "cien"),
    (115, "ciento quince"), (1000, "mil"), (1990, "mil novecientos noventa"),
    (21000, "veintiún mil"), (1_000_000, "un millón"), (2_500_000, "dos millones quinientos mil"),
])
def test_spell_number_writes_spanish_cardinals(n, spoken):
    assert spell_number(n) == spoken


def test_digits_in_a_hypothesis_match_the_same_number_written_as_words():
    assert normalize("Los 100 perros; 1.000 gatos en 1990.") == (
        "los cien perros mil gatos en mil novecientos noventa")
    assert wer("Los cien perros llegaron en mil novecientos noventa.",
               "Los 100 perros llegaron en 1990.") == 0.0
