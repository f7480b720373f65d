"""Where recordings come from: one small module per source kind, each with `fetch` and `prepare`.

A source's params (habla.config) go in; audio files under data/raw/<source>/ and a
`SourceResult` (manifest records, rejects, warnings) come out. `run_source` dispatches on kind.
"""

from __future__ import annotations

from pathlib import Path

from habla import paths
from habla.config import Source
from habla.sources import hf, local, synthetic, url, youtube
from habla.sources.common import SourceResult

DOWNLOAD_CACHE = paths.DOWNLOAD_CACHE


def run_source(src: Source, raw_dir: Path, seed: int, workers: int) -> SourceResult:
    """Fetch and prepare one source (any kind) into raw_dir / src.name (a relative path)."""
    target = raw_dir / src.name
    if target.resolve().parent != raw_dir.resolve():  # habla.config.SourceName allows none
        raise ValueError(f"source name '{src.name}' is not one folder name under {raw_dir}")
    if src.kind == "synthetic":
        synthetic.fetch(src, target, seed=seed, workers=workers)
        return synthetic.prepare(src, target)
    if src.kind == "local":
        return local.prepare(src, Path(src.path), target)
    if src.kind == "url":
        return url.prepare(src, url.fetch(src, DOWNLOAD_CACHE), target)
    if src.kind == "hf":
        return hf.prepare(src, target)
    if src.kind == "youtube":
        return youtube.prepare(src, youtube.fetch(src, DOWNLOAD_CACHE), target)
    raise ValueError(f"unknown source kind '{src.kind}'")
