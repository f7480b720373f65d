"""One record type for recordings and clips, serialised as JSONL between stages.

`write_manifest` validates every record and writes atomically (temp file, then rename), so
a killed stage never leaves half a manifest. `read_manifest` validates every line and names
the file and line of the first bad one: a stage never trusts a manifest it did not validate.
Rejected inputs go to a `rejects.jsonl` beside the manifest, one line per input, with a reason.
File names that are not valid UTF-8 are written as readable text plus their raw bytes in base64
(`name_fields`, `Reject.item_b64`), so every path round-trips exactly (`original_bytes`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticSerializationError

from habla import atomic
from habla.errors import HablaError, describe


class ManifestError(HablaError, ValueError):
    """A manifest that does not validate; the message names the file and line."""


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str
    start: float | None = None  # seconds from the clip's start; None when not aligned
    end: float | None = None
    confidence: float | None = None
    aligned: bool = True
    # start of each of the word's letters (habla.tokenizer.word_spans: punctuation excluded),
    # seconds from the clip's start; from aligners that place letters (timestamps method tts)
    letters: list[float] | None = None


class AsrResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    text: str
    wer: float | None = None  # against the reference, when there is one
    cer: float | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None


class Record(BaseModel):
    """A recording (download) or a clip (segment onwards)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    audio: str = Field(min_length=1, description="path relative to the project folder")
    duration: float = Field(ge=0, allow_inf_nan=False)  # inf would be written as null
    sample_rate: int = Field(gt=0)
    speaker: str
    language: str
    text: str | None = None  # the reference or label text
    source: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    # clips: where they came from
    recording_id: str | None = None
    offset: float | None = Field(None, ge=0, description="start within the recording, s")

    # later stages
    text_source: Literal["reference", "asr"] | None = None
    asr: AsrResult | None = None
    words: list[Word] | None = None
    aligned_fraction: float | None = Field(None, ge=0, le=1)
    split: Literal["train", "val", "test"] | None = None
    truth_words: list[Word] | None = Field(
        None, description="ground-truth word times from the source (synthetic corpus)"
    )
    extra: dict[str, Any] = Field(default_factory=dict)


class Reject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    item: str  # a path or a record id (readable text: see `item_b64`)
    reason: str  # a short, stable reason code, e.g. 'unreadable', 'all_silence'
    detail: str = ""
    # the item's raw bytes (base64) when it is a file name that is not valid UTF-8
    item_b64: str | None = None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def clean_text(text: str) -> str:
    """`text` with lone surrogates (undecodable name bytes, JSON '\\ud800' escapes) written as
    backslash escapes, so it can be encoded as UTF-8; other text is returned unchanged."""
    return _SURROGATE.sub(_escape_surrogate, text)


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _fs_bytes(text: str) -> bytes:
    """Bytes of a name that may hold surrogates: undecodable bytes come back as they were,
    other lone surrogates (never valid in a name read from disk) as their escaped text."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return clean_text(text).encode("utf-8")


def name_fields(name: str | bytes | os.PathLike, key: str = "original") -> dict[str, str]:
    """A file name as manifest fields: `{key: readable text}`, plus `{key}_b64` (its raw bytes,
    base64) when the name is not valid UTF-8. `original_bytes` inverts it exactly."""
    raw = name if isinstance(name, bytes) else _fs_bytes(os.fspath(name))
    try:
        return {key: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {key: raw.decode("utf-8", "backslashreplace"),
                f"{key}_b64": base64.b64encode(raw).decode("ascii")}


def original_bytes(fields: dict[str, Any], key: str = "original") -> bytes:
    """The exact name bytes behind `name_fields(...)` (use os.fsdecode for a path str)."""
    if fields.get(f"{key}_b64"):
        return base64.b64decode(fields[f"{key}_b64"])
    return str(fields[key]).encode("utf-8")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    with atomic.atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def write_manifest(path: str | Path, records: Iterable[Record]) -> int:
    """Validate and write records as JSONL; return how many were written."""
    rows = []
    seen: set[str] = set()
    for rec in records:
        try:
            rec = Record.model_validate(rec.model_dump())  # re-validate after any mutation
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ManifestError(
                f"{path}: record '{getattr(rec, 'id', '?')}': '{where}': {first['msg']}"
                " (nothing written)"
            ) from None
        if rec.id in seen:
            raise ManifestError(f"{path}: duplicate record id '{rec.id}'")
        seen.add(rec.id)
        try:
            rows.append(rec.model_dump_json(exclude_none=True))
        except PydanticSerializationError as exc:  # lone surrogates: text that is not Unicode
            raise ManifestError(f"{path}: record '{clean_text(rec.id)}' cannot be written as "
                                f"UTF-8 ({exc}); nothing written") from None
    _atomic_write_lines(Path(path), rows)
    return len(rows)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a file, streamed: a manifest of a large corpus is never held
    twice in memory. ManifestError when the path cannot be read (a folder, no permission)."""
    try:
        with open(path, "rb") as f:
            yield from enumerate(f, 1)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_manifest(path: str | Path, rejects: Rejects | None = None) -> list[Record]:
    """The records of a manifest; ManifestError naming the file and line of the first bad
    one. With `rejects`, a record whose id came earlier in the file becomes a `duplicate_id`
    reject (the first is kept); without, duplicates are returned for the caller to judge."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found (did the previous stage run?)")
    records: list[Record] = []
    first: dict[str, int] = {}
    for lineno, raw in _lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}:{lineno}: not UTF-8 (byte {exc.start} of the line): "
                                "rerun the stage that writes it, or fix the line") from None
        if not line.strip():
            continue
        try:
            rec = Record.model_validate_json(line)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ManifestError(f"{path}:{lineno}: '{where}': {err['msg']}") from None
        if rejects is not None and rec.id in first:
            rejects.add(rec.id, "duplicate_id",
                        f"{path}:{lineno}: id already on line {first[rec.id]} (that one is kept)")
            continue
        first.setdefault(rec.id, lineno)
        records.append(rec)
    return records


class Rejects:
    """Collects rejected inputs of one stage; `write()` saves them as JSONL."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.items: list[Reject] = []

    def add(self, item: str | bytes | os.PathLike, reason: str, detail: str = "") -> None:
        """Record a reject; a file name that is not valid UTF-8 keeps its raw bytes too."""
        if isinstance(item, str) and not has_surrogates(item):
            fields = {"item": item}
        else:  # a path (any bytes) or text with lone surrogates
            fields = name_fields(item if isinstance(item, bytes | os.PathLike)
                                 else _fs_bytes(item), "item")
        self.items.append(Reject(stage=self.stage, reason=reason, detail=clean_text(detail),
                                 **fields))

    def extend(self, other: Iterable[Reject]) -> None:
        self.items.extend(other)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.items).items()))

    def write(self, path: str | Path) -> None:
        _atomic_write_lines(Path(path), (r.model_dump_json(exclude_none=True)
                                         for r in self.items))

    def __len__(self) -> int:
        return len(self.items)


def read_rejects(path: str | Path) -> list[Reject]:
    path = Path(path)
    if not path.exists():
        return []
    # split on newlines only: str.splitlines() also cuts at U+0085 and U+2028, which JSON
    # leaves unescaped inside strings
    try:
        return [Reject.model_validate_json(x) for x in path.read_text("utf-8").split("\n")
                if x.strip()]
    except (OSError, UnicodeDecodeError, ValidationError) as exc:
        raise ManifestError(f"{path}: not a rejects file habla can read "
                            f"({describe(exc)})") from None


def _clean(data: Any) -> Any:
    if isinstance(data, str):
        return clean_text(data)
    if isinstance(data, dict):
        return {clean_text(str(k)): _clean(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_clean(v) for v in data]
    return data


def read_data_card(path: str | Path) -> dict[str, Any] | None:
    """The data card (metrics/data.json) for a report or model card, or None when it is
    missing or damaged: a card is worth a warning, never the evaluation it decorates."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        card = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        logging.getLogger("habla.manifest").warning(
            "%s: unreadable data card, left out (%s); rerun tokenize", path, describe(exc))
        return None
    return card if isinstance(card, dict) else None


def write_json(path: str | Path, data: Any) -> None:
    """Small JSON files (summaries, metrics) written atomically with stable key order; text
    that cannot be UTF-8 (lone surrogates from an undecodable file name) is escaped."""
    text = json.dumps(_clean(data), indent=2, sort_keys=True, ensure_ascii=False)
    _atomic_write_lines(Path(path), [text])
