"""Transcript files of a local folder: LJSpeech `metadata.csv`, `metadata.json`, `metadata.jsonl`.

A file goes in; `Transcripts` comes out: entries keyed by the audio path they name (`key`:
NFC, no extension, case-folded), a reject for every line that cannot be used (file, line,
reason), and how many lines were not UTF-8. Each line is decoded on its own (UTF-8, else
cp1252, else latin-1), so a file that mixes encodings never turns into mojibake.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from habla.manifest import Rejects, has_surrogates

TRANSCRIPT_FILES = {"ljspeech": "metadata.csv", "json": "metadata.json",
                    "jsonl": "metadata.jsonl"}
# control characters other than tab: a NUL or an escape code in a transcript is damage
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_LINE_END = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class Transcript:
    text: str
    speaker: str | None = None
    language: str | None = None
    where: str = ""  # 'metadata.csv:3': where it was read


@dataclass
class Transcripts:
    """What a transcript file gave: usable entries by key, and the bookkeeping."""

    entries: dict[str, Transcript] = field(default_factory=dict)
    by_folded: dict[str, list[str]] = field(default_factory=dict)  # casefold(key) -> keys
    lines: int = 0  # non-blank lines (csv, jsonl) or entries (json)
    fallback_lines: int = 0  # lines that were not UTF-8

    def add(self, key: str, entry: Transcript, rejects: Rejects) -> None:
        if key in self.entries:
            first = self.entries[key].where
            rejects.add(entry.where, "duplicate_transcript",
                        f"names the same audio as {first}, which is kept")
            return
        self.entries[key] = entry
        self.by_folded.setdefault(key.casefold(), []).append(key)

    def find(self, candidates: list[str]) -> str | None:
        """The entry key for a file: an exact (NFC) match first, then a case-insensitive one
        when exactly one entry fits."""
        for cand in candidates:
            if cand in self.entries:
                return cand
        for cand in candidates:
            keys = self.by_folded.get(cand.casefold(), [])
            if len(keys) == 1:
                return keys[0]
        return None


def key(name: str) -> str:
    """Match transcript entries to files by relative path without extension, in NFC (macOS
    writes decomposed names), with either slash."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/"))
    p = PurePosixPath(name)
    return str(p.parent / p.stem).lstrip("./")


def decode_lines(raw: bytes) -> tuple[list[str], list[int]]:
    """The lines of a text file and the (1-based) numbers of those that were not UTF-8.

    UTF-16 with a byte order mark is decoded whole; otherwise each line on its own: UTF-8
    (a BOM is dropped), else cp1252, else latin-1 (every byte maps).
    """
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if raw.startswith(bom):
            text = raw[len(bom):].decode(codec, "replace")
            lines = re.split("\r\n|\n|\r", text)
            if lines and lines[-1] == "":
                lines.pop()
            return lines, [n for n, line in enumerate(lines, 1) if "\ufffd" in line]
    raw = raw.removeprefix(codecs.BOM_UTF8)
    parts = _LINE_END.split(raw)
    if parts and parts[-1] == b"":
        parts.pop()
    lines, fallback = [], []
    for n, part in enumerate(parts, 1):
        try:
            lines.append(part.decode("utf-8"))
            continue
        except UnicodeDecodeError:
            fallback.append(n)
        try:
            lines.append(part.decode("cp1252"))
        except UnicodeDecodeError:  # cp1252 leaves five bytes undefined
            lines.append(part.decode("latin-1"))
    return lines, fallback


def bad_text(value: str) -> str | None:
    """Why text cannot be used, or None."""
    if has_surrogates(value):
        return "holds a lone surrogate (an invalid \\ud800-\\udfff escape): not Unicode text"
    found = _CONTROL.search(value)
    if found:
        return f"holds control character U+{ord(found.group()):04X}"
    return None


def read(path: Path, rejects: Rejects, warnings: list[str]) -> Transcripts:
    """Read one transcript file; unusable lines (or a whole unparsable JSON) become rejects."""
    out = Transcripts()
    lines, fallback = decode_lines(path.read_bytes())
    out.fallback_lines = len(fallback)
    if fallback:
        shown = ", ".join(map(str, fallback[:10])) + (" ..." if len(fallback) > 10 else "")
        warnings.append(f"{path}: {len(fallback)} line(s) not valid UTF-8 (line {shown}); "
                        "read as cp1252")
    name = path.name
    if path.suffix == ".csv":
        _read_csv(lines, name, out, rejects)
    elif path.suffix == ".json":
        try:
            items = json.loads("\n".join(lines))
        except (ValueError, RecursionError) as exc:
            rejects.add(name, "bad_transcripts", f"not valid JSON ({exc}); every audio file is "
                        "kept without text")
            return out
        if not isinstance(items, list):
            rejects.add(name, "bad_transcripts", "expected a list of {audio_path, text} "
                        "objects; every audio file is kept without text")
            return out
        for n, item in enumerate(items, 1):
            out.lines += 1
            _add_entry(item, f"{name}:entry {n}", out, rejects)
    else:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            out.lines += 1
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as exc:
                rejects.add(f"{name}:{n}", "bad_transcript_line", f"not valid JSON: {exc}")
                continue
            _add_entry(item, f"{name}:{n}", out, rejects)
    return out


def _read_csv(lines: list[str], name: str, out: Transcripts, rejects: Rejects) -> None:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        out.lines += 1
        where = f"{name}:{n}"
        try:
            row = next(csv.reader([line], delimiter="|", quoting=csv.QUOTE_NONE))
        except csv.Error as exc:
            rejects.add(where, "bad_transcript_line", str(exc))
            continue
        if len(row) < 2 or not row[0].strip():
            rejects.add(where, "bad_transcript_line",
                        f"expected 'file|text' or 'file|text|normalized', got {line[:120]!r}")
            continue
        # the normalised column (numbers spelled out) is what a TTS model should read
        said = (row[2] if len(row) > 2 and row[2].strip() else row[1]).strip()
        _add(row[0].strip(), said, None, None, where, out, rejects)


def _add_entry(item: object, where: str, out: Transcripts, rejects: Rejects) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("audio_path"), str) \
            or not isinstance(item.get("text"), str):
        rejects.add(where, "bad_transcript_line",
                    f"needs string 'audio_path' and 'text', got {str(item)[:120]!r}")
        return
    speaker, language = item.get("speaker_id"), item.get("language")
    if isinstance(speaker, bool) or (speaker is not None and not isinstance(speaker, str | int)):
        rejects.add(where, "bad_transcript_line", f"'speaker_id' {speaker!r} is not a name")
        return
    if language is not None and not isinstance(language, str):
        rejects.add(where, "bad_transcript_line", f"'language' {language!r} is not a string")
        return
    _add(item["audio_path"], item["text"].strip(),
         str(speaker) if speaker is not None else None, language, where, out, rejects)


def _add(audio: str, text: str, speaker: str | None, language: str | None, where: str,
         out: Transcripts, rejects: Rejects) -> None:
    for label, value in (("file name", audio), ("text", text), ("speaker", speaker or ""),
                         ("language", language or "")):
        why = bad_text(value)
        if why:
            rejects.add(where, "bad_text", f"{label} {why}")
            return
    if not text:
        rejects.add(where, "empty_text", "no text: the audio file is kept without text")
        return
    out.add(key(audio.strip()), Transcript(text, speaker or None, language or None, where),
            rejects)
