"""Spanish speech from eSpeak NG through ctypes, with no system packages (espeakng-loader).

`Espeak(seed).synthesize(text, voice, rate, pitch)` returns a float32 mono waveform at 22050 Hz
and each word's start time from the library's own word events (ground truth for alignment).
The same sequence of calls in a fresh process gives byte-identical audio.
"""

from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path

import numpy as np

from habla.errors import HablaError

# espeak_AUDIO_OUTPUT, espeak_EVENT_TYPE, espeak_PARAMETER, flags (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_MSG_TERMINATED = 6
_RATE = 1
_PITCH = 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_EE_NOT_FOUND = 2


class EspeakError(HablaError, RuntimeError):
    """eSpeak NG could not be loaded, or refused a voice or a text."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters of the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this espeak_Synth call
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))

# The library keeps global state: one initialisation per process, guarded.
_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_SAMPLE_RATE = 0

# A word of the text: a run of letters/digits (with inner apostrophes or hyphens).
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def text_words(text: str) -> list[tuple[str, int, int]]:
    """The words of `text` (punctuation stripped) with their [start, end) character spans."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def _load() -> tuple[ctypes.CDLL, int]:
    global _LIB, _SAMPLE_RATE
    with _LOCK:
        if _LIB is not None:
            return _LIB, _SAMPLE_RATE
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EspeakError("the 'espeakng-loader' package is not installed") from exc
        lib_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise EspeakError(f"cannot load {lib_path}: {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data at {data_path})")
        _LIB, _SAMPLE_RATE = lib, rate
        return lib, rate


def _check_variant(voice: str) -> None:
    """eSpeak silently ignores an unknown '+variant'; a typo must not change the speaker."""
    if "+" not in voice:
        return
    import espeakng_loader

    variant = voice.split("+", 1)[1]
    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    if not (folder / variant).is_file():
        known = ", ".join(sorted(p.name for p in folder.iterdir())[:12])
        raise EspeakError(f"eSpeak NG voice '{voice}': unknown variant '{variant}' "
                          f"(known variants include {known}, ...; see {folder})")


class Espeak:
    """One per process; not thread-safe. Seeded so a fixed call sequence is reproducible."""

    def __init__(self, seed: int = 0) -> None:
        self._lib, self.sample_rate = _load()
        # Without this, synthesis state (random jitter) differs between calls and runs.
        self._lib.espeak_ng_SetRandSeed(int(seed))
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []  # (text_position, length, ms)
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav: ctypes.Array, numsamples: int, events: ctypes.Array) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                self._events.append((ev.text_position, ev.length, ev.audio_position))
            elif ev.type == _EVENT_MSG_TERMINATED:
                break
            i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        _check_variant(voice)
        status = self._lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK:
            why = "not found" if status == _EE_NOT_FOUND else f"error code {status}"
            raise EspeakError(
                f"eSpeak NG voice '{voice}': {why} (examples: 'es', 'es-419', 'es+f2', "
                "'es-419+klatt'; variants are the file names in espeak-ng-data/voices/!v)"
            )
        self._voice = voice

    def synthesize(self, text: str, voice: str, rate: int = 150, pitch: int = 50
                   ) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """float32 mono waveform in [-1, 1], and (word, start_seconds) per word of `text`."""
        words = text_words(text)
        if not words:
            raise EspeakError(f"nothing to say in {text!r}: no words")
        self.set_voice(voice)
        self._lib.espeak_SetParameter(_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)
        self._lib.espeak_Synchronize()
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed (code {status}) for {text!r}")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        wave = pcm.astype(np.float32) / 32768.0
        return wave, self._word_starts(text, words, len(wave) / self.sample_rate)

    def _word_starts(self, text: str, words: list[tuple[str, int, int]], duration: float
                     ) -> list[tuple[str, float]]:
        """Map espeak's word events (by character position) onto the text's words."""
        starts: list[float | None] = [None] * len(words)
        for pos, _length, ms in self._events:
            char = pos - 1  # event positions are 1-based
            # the word holding that character, or the next one when it points at punctuation
            k = next((k for k, (_w, _a, end) in enumerate(words) if char < end), None)
            if k is not None and starts[k] is None:
                starts[k] = ms / 1000.0
        missing = [w for (w, _a, _b), s in zip(words, starts, strict=True) if s is None]
        if missing:
            raise EspeakError(
                f"eSpeak NG reported no start time for {missing} in {text!r} "
                f"(events: {self._events})"
            )
        # Times are clipped to the audio so a sidecar never points past the end.
        return [(w, min(float(s), duration)) for (w, _a, _b), s in zip(words, starts,
                                                                        strict=True)]
