"""What every source kind shares: the result type, safe ids and seeds.

A source module's `prepare` returns a `SourceResult` (manifest records, rejects, warnings,
counts); ids made with `safe_id` are file-name-safe ASCII and unique within a source.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from habla.manifest import Rejects


@dataclass
class SourceResult:
    """What one source contributed: records for the manifest, rejects, warnings, counts."""

    name: str
    records: list = field(default_factory=list)  # habla.manifest.Record
    rejects: Rejects = field(default_factory=lambda: Rejects("download"))
    warnings: list[str] = field(default_factory=list)
    files_in: int = 0  # every file (or link, special file, hidden item) considered
    transcripts: dict | None = None  # file, lines, fallback_lines (not UTF-8) when one was read
    failed: str | None = None  # why the whole source failed (download records it)

    def summary(self) -> dict:
        out = {
            "files_in": self.files_in,
            "recordings": len(self.records),
            "hours": round(sum(r.duration for r in self.records) / 3600, 4),
            "rejects": self.rejects.counts(),
            "warnings": self.warnings,
        }
        if self.transcripts is not None:
            out["transcripts"] = self.transcripts
        return out


def safe_id(text: str, taken: set[str] | None = None, max_len: int = 80) -> str:
    """A file-name-safe ASCII id for `text` ('Canción nº 1.wav' -> 'Cancion_n_1_wav'), unique
    within `taken` ignoring case (a short hash is appended on a clash, and `taken` is updated):
    ids become file names, and 'A' and 'a' are one file on macOS and Windows. `text` may hold
    surrogate escapes (a file name that is not UTF-8)."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9]+", "_", ascii_).strip("_")[:max_len] or "item"
    out = base
    if taken is not None:
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        if out.casefold() in taken:
            out = f"{base}_{digest}"
            k = 2
            while out.casefold() in taken:  # the same hash prefix: practically never
                out = f"{base}_{digest}_{k}"
                k += 1
        taken.add(out.casefold())
    return out


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
