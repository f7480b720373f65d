"""Generated Spanish sentences: distinct, deterministic, 5-15 words, agreeing in gender/number."""

import os
import subprocess
import sys

import pytest

from habla.sources.espeak import text_words
from habla.sources.sentences import capacity, number_words, plural, sentence


def test_first_20000_sentences_are_distinct_and_5_to_15_words_long():
    sentences = [sentence(i) for i in range(20_000)]
    assert len(set(sentences)) == len(sentences)
    lengths = {len(text_words(s)) for s in sentences}
    assert min(lengths) >= 5 and max(lengths) <= 15


def test_sentences_use_questions_exclamations_and_spanish_letters():
    text = " ".join(sentence(i) for i in range(2_000))
    for mark in "¿?¡!ñáéíóúü":
        assert mark in text, mark
    questions = [s for s in (sentence(i) for i in range(200)) if s.startswith("¿")]
    assert questions and all(s.endswith("?") for s in questions)


def test_every_sentence_starts_with_a_capital_and_ends_with_punctuation():
    for i in range(500):
        s = sentence(i)
        first = next(c for c in s if c.isalpha())
        assert first.isupper(), s
        assert s[-1] in ".?!", s


def test_sentence_is_the_same_in_a_fresh_process_with_another_hash_seed():
    code = "from habla.sources.sentences import sentence; print(sentence(123456))"
    env = {**os.environ, "PYTHONHASHSEED": "99"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, timeout=60)
    assert out.stdout.strip() == sentence(123456)


def test_capacity_is_effectively_unbounded_and_outside_indices_are_refused():
    assert capacity() > 1_000_000
    sentence(capacity() - 1)
    with pytest.raises(ValueError, match="outside"):
        sentence(capacity())
    with pytest.raises(ValueError, match="outside"):
        sentence(-1)


@pytest.mark.parametrize(("n", "gender", "words"), [
    (21, "m", "veintiún"), (21, "f", "veintiuna"), (31, "m", "treinta y un"),
    (200, "f", "doscientas"), (100, "m", "cien"), (101, "m", "ciento un"),
    (999, "m", "novecientos noventa y nueve"), (16, "m", "dieciséis"),
])
def test_numbers_are_written_as_words_that_agree_with_the_noun(n, gender, words):
    assert number_words(n, gender) == words


@pytest.mark.parametrize(("singular", "expected"), [
    ("casa", "casas"), ("flor", "flores"), ("canción", "canciones"), ("lápiz", "lápices"),
    ("fácil", "fáciles"), ("jardín", "jardines"), ("café", "cafés"),
])
def test_regular_plurals_follow_spanish_spelling(singular, expected):
    assert plural(singular) == expected
