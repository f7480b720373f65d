"""eSpeak NG through ctypes: reproducible audio, word times that match the text, voice errors."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from habla.sources.espeak import Espeak, EspeakError, text_words

_SEQUENCE = """
import hashlib, sys
from habla.sources.espeak import Espeak
e = Espeak(seed=7)
h = hashlib.sha256()
for text, voice in [("Hola, ¿cómo estás?", "es"), ("El niño come pan.", "es-419+f2"),
                    ("¡Qué día tan bonito!", "es")]:
    wave, words = e.synthesize(text, voice, rate=160, pitch=60)
    h.update(wave.tobytes())
    h.update(repr(words).encode())
print(h.hexdigest())
"""


def _run_sequence() -> str:
    out = subprocess.run([sys.executable, "-c", _SEQUENCE], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.strip()


def test_same_call_sequence_in_fresh_processes_gives_byte_identical_audio():
    first, second = _run_sequence(), _run_sequence()
    assert len(first) == 64
    assert first == second


@pytest.fixture(scope="module")
def engine() -> Espeak:
    return Espeak(seed=0)


def test_word_list_matches_the_text_words_in_order_with_increasing_times(engine):
    text = "¿Dónde está el pingüino pequeño? ¡Veintitrés años, señora!"
    wave, words = engine.synthesize(text, "es")
    assert [w for w, _ in words] == ["Dónde", "está", "el", "pingüino", "pequeño",
                                     "Veintitrés", "años", "señora"]
    starts = [s for _, s in words]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert starts[-1] < len(wave) / engine.sample_rate


def test_spain_and_latin_american_female_voices_both_speak(engine):
    assert engine.sample_rate == 22050
    for voice in ("es", "es-419+f2"):
        wave, words = engine.synthesize("Buenos días a todos.", voice)
        assert wave.dtype == np.float32
        assert 0.5 < len(wave) / engine.sample_rate < 5.0
        assert 0.05 < np.abs(wave).max() <= 1.0
        assert len(words) == 4


def test_pitch_setting_changes_the_voice(engine):
    low, _ = engine.synthesize("La casa es grande.", "es", pitch=10)
    high, _ = engine.synthesize("La casa es grande.", "es", pitch=90)
    assert hashlib.sha256(low.tobytes()).digest() != hashlib.sha256(high.tobytes()).digest()


@pytest.mark.parametrize("voice", ["xx-nonexistent", "es+nonexistent_variant"])
def test_bad_voice_name_raises_a_clear_error(engine, voice):
    with pytest.raises(EspeakError, match=voice.replace("+", r"\+")):
        engine.synthesize("Hola.", voice)


def test_text_without_words_is_refused(engine):
    with pytest.raises(EspeakError, match="no words"):
        engine.synthesize("¿¡...!?", "es")


def test_text_words_strips_punctuation_and_keeps_accents():
    assert [w for w, _, _ in text_words("¡Ñandú, ¿qué tal?")] == ["Ñandú", "qué", "tal"]
