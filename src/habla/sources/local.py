"""A folder of audio files (any format soundfile reads, searched recursively) with optional
transcripts: LJSpeech `metadata.csv`, `metadata.json` or a JSONL of {audio_path, text, ...}.

Audio is probed (unusable files become rejects), copied into data/raw/<source>/ under a safe
unique id and returned as manifest records; the original relative path stays in extra.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from habla.audio import AudioError, AudioInfo, probe
from habla.config import LocalSource, UrlSource
from habla.errors import StageError
from habla.manifest import Record, sha256_file
from habla.sources.common import SourceResult, safe_id

log = logging.getLogger("habla.download")

AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                  ".aifc", ".au", ".snd", ".w64", ".rf64", ".caf", ".voc", ".nist", ".sph"}
TRANSCRIPT_FILES = {"ljspeech": "metadata.csv", "json": "metadata.json",
                    "jsonl": "metadata.jsonl"}


@dataclass(frozen=True)
class Transcript:
    text: str
    speaker: str | None = None
    language: str | None = None


def read_text_file(path: Path, warnings: list[str]) -> str:
    """UTF-8 (with or without BOM); else cp1252 with a warning naming the file, never mojibake."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        first_error = exc
    try:
        text = raw.decode("cp1252")
        encoding = "cp1252"
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # every byte maps; cp1252 leaves five undefined
        encoding = "latin-1"
    warnings.append(f"{path}: not valid UTF-8 ({first_error.reason} at byte "
                    f"{first_error.start}); read as {encoding}")
    return text


def wav_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None. libsndfile silently shortens such files."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not RIFF/WAVE (or RF64/W64): nothing to check here
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streamed writers leave the size unset
                    return None
                if pos + 8 + chunk_size > size:
                    return (f"data chunk declares {chunk_size} bytes, file holds "
                            f"{size - pos - 8}")
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return "no complete 'data' chunk"


def check_audio(path: Path) -> AudioInfo:
    """probe() plus a truncation check; raises AudioError with a reason code."""
    info = probe(path)
    why = wav_truncation(path)
    if why:
        raise AudioError("truncated", f"{path}: {why}")
    return info


def _key(name: str) -> str:
    """Match transcript entries to files by relative path without extension, case-folded."""
    p = Path(name.replace("\\", "/"))
    return (p.parent / p.stem).as_posix().casefold().lstrip("./")


def _detect(folder: Path, kind: str) -> Path | None:
    if kind == "none":
        return None
    if kind != "auto":
        path = folder / TRANSCRIPT_FILES[kind]
        if not path.exists():
            raise FileNotFoundError(f"{path}: transcripts: {kind} was asked for, but this file "
                                    "does not exist")
        return path
    for name in TRANSCRIPT_FILES.values():
        if (folder / name).exists():
            return folder / name
    return None


def read_transcripts(path: Path, warnings: list[str]) -> dict[str, Transcript]:
    """Transcripts keyed by `_key(audio path)`; bad lines raise naming file and line."""
    text = read_text_file(path, warnings)
    out: dict[str, Transcript] = {}
    if path.suffix == ".csv":
        for lineno, row in enumerate(csv.reader(io.StringIO(text), delimiter="|",
                                                quoting=csv.QUOTE_NONE), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'file|text' or "
                                 f"'file|text|normalized', got {'|'.join(row)!r}")
            # the normalised column (numbers spelled out) is what a TTS model should read
            said = row[2] if len(row) > 2 and row[2].strip() else row[1]
            out[_key(row[0].strip())] = Transcript(said.strip())
        return out
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a list of {{audio_path, text}} objects")
        rows = list(enumerate(items, 1))
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
    for where, item in rows:
        if not isinstance(item, dict) or "audio_path" not in item or "text" not in item:
            raise ValueError(f"{path}: entry {where}: needs 'audio_path' and 'text', got "
                             f"{str(item)[:120]}")
        out[_key(str(item["audio_path"]))] = Transcript(
            str(item["text"]).strip(), item.get("speaker_id"), item.get("language"))
    return out


def prepare(src: LocalSource | UrlSource, folder: Path, target: Path) -> SourceResult:
    """Probe, copy and describe every audio file under `folder`; rebuilds `target`."""
    if not folder.is_dir():
        raise StageError(f"source '{src.name}': folder '{folder}' does not exist "
                         f"(download.sources[].path, relative to the project folder)")
    result = SourceResult(src.name)
    metadata = _detect(folder, src.transcripts)
    try:
        transcripts = read_transcripts(metadata, result.warnings) if metadata else {}
    except ValueError as exc:
        raise StageError(f"source '{src.name}': {exc}") from None
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)

    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                   and not p.name.startswith("."))
    taken: set[str] = set()
    matched: set[str] = set()
    untranscribed = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        result.files_in += 1
        # LJSpeech lists bare names ('LJ001-0001') for files kept in wavs/
        key = next((k for k in (_key(rel), _key(path.name)) if k in transcripts), None)
        if key is not None:
            matched.add(key)  # a rejected file's line is accounted for by its reject
        try:
            info = check_audio(path)
        except AudioError as exc:
            result.rejects.add(rel, exc.reason, exc.detail)
            continue
        rid = f"{safe_id(src.name)}_{safe_id(Path(rel).with_suffix('').as_posix(), taken)}"
        dest = target / f"{rid}{path.suffix.lower()}"
        shutil.copyfile(path, dest)
        found = transcripts.get(key) if key is not None else None
        if found is None and transcripts:
            untranscribed.append(rel)
        result.records.append(Record(
            id=rid, audio=dest.as_posix(), duration=round(info.duration, 5),
            sample_rate=info.sample_rate, speaker=(found and found.speaker) or src.speaker,
            language=(found and found.language) or src.language,
            text=(found.text or None) if found else None, source=src.name,
            sha256=sha256_file(dest),
            extra={"original": rel, "channels": info.channels, "subtype": info.subtype,
                   "format": info.format},
        ))
    if untranscribed:
        result.warnings.append(
            f"{len(untranscribed)} audio file(s) have no line in {metadata.name}, kept without "
            f"text: {', '.join(untranscribed[:10])}{' ...' if len(untranscribed) > 10 else ''}")
    for key in sorted(set(transcripts) - matched):
        result.rejects.add(f"{metadata.name}:{key}", "missing_audio",
                           "transcript line names an audio file that is not in the folder")
    return result
