"""The offline default source: eSpeak NG voices reading distinct generated Spanish sentences.

A SyntheticSource goes in; long 22050 Hz 16-bit WAV recordings (sentences with random pauses)
plus a `<recording_id>.truth.json` sidecar of sentence and word times come out in data/raw/<name>/.
Every render unit (a fixed run of sentences of one voice) runs in its own fresh process with its
own seed, so the output is byte-identical whatever the number of workers.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from habla.audio import probe, write_wav
from habla.config import SyntheticSource, SyntheticVoice
from habla.errors import StageError
from habla.manifest import Record, sha256_file, write_json
from habla.sources.common import SourceResult, derive_seed, safe_id
from habla.sources.espeak import Espeak, EspeakError
from habla.sources.sentences import sentence

log = logging.getLogger("habla.download")

SAMPLE_RATE = 22050
UNIT_SENTENCES = 40  # sentences per render unit (one fresh process each)
LEAD_SECONDS = (0.25, 0.75)  # silence before the first and after the last sentence
_COMPLETED = ".completed"


def _plan(src: SyntheticSource, seed: int) -> list[dict]:
    """Render units in a fixed order: each voice's share of the sentences, cut into runs."""
    n_voices = len(src.voices)
    units = []
    first = src.first_sentence
    for v, voice in enumerate(src.voices):
        # sentences split as evenly as possible, contiguous per voice, each used once
        count = src.sentences // n_voices + (1 if v < src.sentences % n_voices else 0)
        indices = list(range(first, first + count))
        first += count
        for u in range(0, count, UNIT_SENTENCES):
            units.append({
                "voice_index": v, "voice": voice.voice, "rate": voice.rate,
                "pitch": voice.pitch, "indices": indices[u:u + UNIT_SENTENCES],
                "seed": derive_seed(seed, src.name, voice.speaker, u),
            })
    return units


def _render_unit(unit: dict) -> dict:
    """Worker: render one unit in this fresh process; audio as int16 for compact transfer."""

    engine = Espeak(seed=unit["seed"])
    sentences = []
    for index in unit["indices"]:
        text = sentence(index)
        wave, words = engine.synthesize(text, unit["voice"], unit["rate"], unit["pitch"])
        # exact inverse of espeak.py's int16 / 32768
        pcm = np.clip(np.round(wave * 32768), -32768, 32767).astype(np.int16)
        sentences.append({"index": index, "text": text, "pcm": pcm, "words": words})
    return {"voice_index": unit["voice_index"], "sentences": sentences}


def _render(units: list[dict], workers: int) -> Iterator[dict]:
    # spawn + one task per child: every unit starts from a fresh eSpeak state
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=max(1, min(workers, len(units))), maxtasksperchild=1) as pool:
        yield from pool.imap(_render_unit, units)


class _RecordingWriter:
    """Packs one voice's sentences, in order, into recordings of a drawn target length.

    Pauses are drawn as sentences arrive, so lengths are exact: a recording closes when the
    next sentence would pass its target, but never below the minimum length. One closed
    recording is held back, so a short final tail can join it (if that stays under the max).
    """

    def __init__(self, src: SyntheticSource, voice: SyntheticVoice, target: Path,
                 rng: np.random.Generator) -> None:
        self.src, self.voice, self.target, self.rng = src, voice, target, rng
        self.count = 0
        self.held: list[tuple[int, dict]] | None = None
        self._open()

    def _open(self) -> None:
        self.goal = float(self.rng.uniform(*self.src.recording_seconds))
        self.lead_in = int(self.rng.uniform(*LEAD_SECONDS) * SAMPLE_RATE)
        self.pending: list[tuple[int, dict]] = []  # (pause before it in samples, sentence)
        self.samples = self.lead_in

    def add(self, item: dict) -> None:
        pause = int(self.rng.uniform(*self.src.pause_seconds) * SAMPLE_RATE)
        after = (self.samples + pause + len(item["pcm"])) / SAMPLE_RATE + LEAD_SECONDS[1]
        now = self.samples / SAMPLE_RATE + LEAD_SECONDS[1]
        if self.pending and after > self.goal and now >= self.src.recording_seconds[0]:
            self._close()
        if not self.pending:
            pause = 0
        self.pending.append((pause, item))
        self.samples += pause + len(item["pcm"])

    def _close(self) -> None:
        if self.held is not None:
            self._write(self.held)
        self.held = [(self.lead_in, self.pending[0][1]), *self.pending[1:]]
        self._open()

    def finish(self) -> None:
        low, high = self.src.recording_seconds
        tail = self.samples / SAMPLE_RATE + LEAD_SECONDS[1]
        if self.held is not None and self.pending and tail < low:
            held = sum(p + len(it["pcm"]) for p, it in self.held) / SAMPLE_RATE
            joint = held + tail - self.lead_in / SAMPLE_RATE + self.src.pause_seconds[1]
            if joint <= high:
                pause = int(self.rng.uniform(*self.src.pause_seconds) * SAMPLE_RATE)
                self.held += [(pause, self.pending[0][1]), *self.pending[1:]]
                self.pending = []
        if self.held is not None:
            self._write(self.held)
        if self.pending:
            self._write([(self.lead_in, self.pending[0][1]), *self.pending[1:]])
        self.held = None
        self._open()

    def _write(self, group: list[tuple[int, dict]]) -> None:
        """group: (silence before, sentence) pairs; the first silence is the lead-in."""
        rid = f"{safe_id(self.src.name)}_{safe_id(self.voice.speaker)}_{self.count:04d}"
        self.count += 1
        parts, position, truth = [], 0, []
        for silence, item in group:
            parts.append(np.zeros(silence, np.int16))
            position += silence
            start = position / SAMPLE_RATE
            parts.append(item["pcm"])
            position += len(item["pcm"])
            truth.append({
                "text": item["text"], "start": round(start, 5),
                "end": round(position / SAMPLE_RATE, 5), "index": item["index"],
                "words": [{"word": w, "start": round(start + t, 5)} for w, t in item["words"]],
            })
        parts.append(np.zeros(int(self.rng.uniform(*LEAD_SECONDS) * SAMPLE_RATE), np.int16))
        # x/32768 comes back as exactly x from libsndfile's float -> PCM_16 (x/32767 does not)
        wave = np.concatenate(parts).astype(np.float32) / 32768.0
        write_wav(self.target / f"{rid}.wav", wave, SAMPLE_RATE)
        write_json(self.target / f"{rid}.truth.json", {
            "recording_id": rid, "speaker": self.voice.speaker, "voice": self.voice.voice,
            "rate": self.voice.rate, "pitch": self.voice.pitch, "sentences": truth,
        })


def fetch(src: SyntheticSource, target: Path, seed: int, workers: int = 1) -> None:
    """Render the corpus into `target` (rebuilt from scratch) and mark it complete."""
    names: dict[str, str] = {}
    for voice in src.voices:  # recordings are named by speaker: two must not share files
        name = safe_id(voice.speaker).casefold()
        if name in names:
            raise StageError(f"synthetic source '{src.name}': speakers '{names[name]}' and "
                             f"'{voice.speaker}' give the same file names; rename one")
        names[name] = voice.speaker
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    units = _plan(src, seed)
    writers = [
        _RecordingWriter(src, voice, target,
                         np.random.default_rng(derive_seed(seed, src.name, voice.speaker)))
        for voice in src.voices
    ]
    log.info("%s: rendering %d sentences in %d units on %d workers", src.name, src.sentences,
             len(units), workers)
    try:
        for result in _render(units, workers):
            for item in result["sentences"]:
                writers[result["voice_index"]].add(item)
    except EspeakError as exc:  # raised in a worker, e.g. a misspelt voice
        raise StageError(f"synthetic source '{src.name}': {exc}") from None
    for writer in writers:
        writer.finish()
    (target / _COMPLETED).write_text(json.dumps({"sentences": src.sentences}) + "\n")


def prepare(src: SyntheticSource, target: Path) -> SourceResult:
    """Manifest records for the rendered recordings, with their ground-truth sidecars."""
    if not (target / _COMPLETED).exists():
        raise FileNotFoundError(f"{target}: synthetic corpus not rendered (no {_COMPLETED})")
    result = SourceResult(src.name)
    for truth_path in sorted(target.glob("*.truth.json")):
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        wav = target / f"{truth['recording_id']}.wav"
        info = probe(wav)
        result.files_in += 1
        result.records.append(Record(
            id=truth["recording_id"], audio=wav.as_posix(), duration=round(info.duration, 5),
            sample_rate=info.sample_rate, speaker=truth["speaker"], language=src.language,
            text=" ".join(s["text"] for s in truth["sentences"]), source=src.name,
            sha256=sha256_file(wav),
            extra={"truth": truth_path.as_posix(), "voice": truth["voice"],
                   "sentences": len(truth["sentences"])},
        ))
    return result
