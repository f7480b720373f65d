"""Where recordings come from: one small module per source kind, each with `fetch` and `prepare`.

A source's params (habla.config) go in; audio files under data/raw/<source>/ and a
`SourceResult` (manifest records, rejects, warnings) come out. `run_source` dispatches on kind.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from habla.config import Source
from habla.manifest import Rejects


@dataclass
class SourceResult:
    """What one source contributed: records for the manifest, rejects, warnings, counts."""

    name: str
    records: list = field(default_factory=list)  # habla.manifest.Record
    rejects: Rejects = field(default_factory=lambda: Rejects("download"))
    warnings: list[str] = field(default_factory=list)
    files_in: int = 0

    def summary(self) -> dict:
        return {
            "files_in": self.files_in,
            "recordings": len(self.records),
            "hours": round(sum(r.duration for r in self.records) / 3600, 4),
            "rejects": self.rejects.counts(),
            "warnings": self.warnings,
        }


def safe_id(text: str, taken: set[str] | None = None, max_len: int = 80) -> str:
    """A file-name-safe ASCII id for `text` ('Canción nº 1.wav' -> 'Cancion_n_1_wav'), unique
    within `taken` (a short hash is appended on a clash, and `taken` is updated)."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9]+", "_", ascii_).strip("_")[:max_len] or "item"
    out = base
    if taken is not None:
        if out in taken:
            out = f"{base}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
            k = 2
            while out in taken:  # two names with the same hash prefix: practically never
                out = f"{base}_{hashlib.sha1(text.encode()).hexdigest()[:8]}_{k}"
                k += 1
        taken.add(out)
    return out


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


DOWNLOAD_CACHE = Path("data/cache/downloads")  # outside data/raw: survives reruns, so resumable


def run_source(src: Source, raw_dir: Path, seed: int, workers: int) -> SourceResult:
    """Fetch and prepare one source (any kind) into raw_dir / src.name (a relative path)."""
    target = raw_dir / src.name
    if src.kind == "synthetic":
        from habla.sources import synthetic

        synthetic.fetch(src, target, seed=seed, workers=workers)
        return synthetic.prepare(src, target)
    if src.kind == "local":
        from habla.sources import local

        return local.prepare(src, Path(src.path), target)
    if src.kind == "url":
        from habla.sources import url

        return url.prepare(src, url.fetch(src, DOWNLOAD_CACHE), target)
    if src.kind == "hf":
        from habla.sources import hf

        return hf.prepare(src, target)
    raise ValueError(f"unknown source kind '{src.kind}'")
