"""One record type for recordings and clips, serialised as JSONL between stages.

`write_manifest` validates every record and writes atomically (temp file, then rename), so
a killed stage never leaves half a manifest. `read_manifest` validates every line and names
the file and line of the first bad one: a stage never trusts a manifest it did not validate.
Rejected inputs go to a `rejects.jsonl` beside the manifest, one line per input, with a reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from habla import atomic
from habla.errors import HablaError


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
    duration: float = Field(ge=0)
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
    item: str  # a path or a record id
    reason: str  # a short, stable reason code, e.g. 'unreadable', 'all_silence'
    detail: str = ""


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
        rows.append(rec.model_dump_json(exclude_none=True))
    _atomic_write_lines(Path(path), rows)
    return len(rows)


def read_manifest(path: str | Path) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found (did the previous stage run?)")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(Record.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ManifestError(f"{path}:{lineno}: '{where}': {first['msg']}") from None
    return records


class Rejects:
    """Collects rejected inputs of one stage; `write()` saves them as JSONL."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.items: list[Reject] = []

    def add(self, item: str | Path, reason: str, detail: str = "") -> None:
        self.items.append(Reject(stage=self.stage, item=str(item), reason=reason, detail=detail))

    def extend(self, other: Iterable[Reject]) -> None:
        self.items.extend(other)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.items).items()))

    def write(self, path: str | Path) -> None:
        _atomic_write_lines(Path(path), (r.model_dump_json() for r in self.items))

    def __len__(self) -> int:
        return len(self.items)


def read_rejects(path: str | Path) -> list[Reject]:
    path = Path(path)
    if not path.exists():
        return []
    return [Reject.model_validate_json(x) for x in path.read_text("utf-8").splitlines() if x]


def write_json(path: str | Path, data: Any) -> None:
    """Small JSON files (summaries, metrics) written atomically with stable key order."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    _atomic_write_lines(Path(path), [text])
