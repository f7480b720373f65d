"""A Hugging Face dataset: a hub id (`datasets.load_dataset`) or a folder saved with
`save_to_disk` (`datasets.load_from_disk`).

Rows go in; one 16-bit WAV per row in data/raw/<source>/ and manifest records come out, text
and speaker from the configured columns. Audio bytes are decoded with soundfile (datasets 5
would need torchcodec), so undecodable rows become rejects instead of stopping the stage.
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from habla.audio import AudioError, probe, write_wav
from habla.config import HfSource
from habla.errors import StageError
from habla.manifest import Record, sha256_file
from habla.sources.common import SourceResult, safe_id

log = logging.getLogger("habla.download")


def load(src: HfSource) -> Any:  # a datasets.Dataset
    """The dataset split named by `src`, with its audio column left undecoded."""
    try:
        import datasets
    except ImportError:
        raise StageError("the 'datasets' package is needed for hf sources: "
                           "pip install 'habla[hf]'") from None
    folder = Path(src.dataset)
    try:
        if folder.exists():
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if src.split not in ds:
                    raise StageError(f"{folder}: no split '{src.split}'; splits: "
                                       f"{', '.join(ds)}")
                ds = ds[src.split]
        else:
            ds = datasets.load_dataset(src.dataset, src.config, split=src.split,
                                       revision=src.revision)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise StageError(f"hf source '{src.name}': cannot load '{src.dataset}' "
                           f"(config={src.config}, split={src.split}): {exc}") from None
    columns = list(ds.column_names)
    for key in ("audio_column", "text_column", "speaker_column"):
        column = getattr(src, key)
        if column is not None and column not in columns:
            raise StageError(f"hf source '{src.name}': {key} '{column}' is not a column of "
                               f"'{src.dataset}'; available: {', '.join(columns)}")
    if isinstance(ds.features.get(src.audio_column), datasets.Audio):
        ds = ds.cast_column(src.audio_column, datasets.Audio(decode=False))
    if src.limit is not None:
        ds = ds.select(range(min(src.limit, len(ds))))
    return ds


def decode(value: Any, base: Path | None = None) -> tuple[np.ndarray, int]:
    """An audio cell ({bytes, path} or {array, sampling_rate}) as float32 (frames, channels)."""
    if isinstance(value, dict) and value.get("array") is not None:
        wave = np.asarray(value["array"], dtype=np.float32)
        return (wave[:, None] if wave.ndim == 1 else wave), int(value["sampling_rate"])
    if isinstance(value, dict) and value.get("bytes"):
        source: object = io.BytesIO(value["bytes"])
    elif isinstance(value, dict) and value.get("path"):
        path = Path(value["path"])
        source = str(path if path.is_absolute() or base is None else base / path)
    else:
        raise AudioError("empty", "the audio cell holds neither bytes nor a path")
    try:
        wave, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioError("unreadable", str(exc)) from None
    return wave, rate


def prepare(src: HfSource, target: Path) -> SourceResult:
    """Write every row's audio as WAV into `target` (rebuilt) and describe it."""
    ds = load(src)
    result = SourceResult(src.name)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    base = Path(src.dataset) if Path(src.dataset).exists() else None
    no_text = 0
    for k, row in enumerate(ds):
        result.files_in += 1
        item = f"{src.dataset}[{k}]"
        try:
            wave, rate = decode(row[src.audio_column], base)
            if wave.shape[0] == 0:
                raise AudioError("empty", "no audio frames")
        except AudioError as exc:
            result.rejects.add(item, exc.reason, exc.detail)
            continue
        rid = f"{safe_id(src.name)}_{k:06d}"
        dest = target / f"{rid}.wav"
        write_wav(dest, wave, rate)
        text = row.get(src.text_column) if src.text_column else None
        text = str(text).strip() if text is not None and str(text).strip() else None
        no_text += src.text_column is not None and text is None
        speaker = row.get(src.speaker_column) if src.speaker_column else None
        info = probe(dest)
        cell = row[src.audio_column]
        result.records.append(Record(
            id=rid, audio=dest.as_posix(), duration=round(info.duration, 5),
            sample_rate=info.sample_rate,
            speaker=str(speaker) if speaker is not None else "speaker0",
            language=src.language, text=text, source=src.name, sha256=sha256_file(dest),
            extra={"original": f"{src.dataset}[{k}]" + (
                f" {cell['path']}" if isinstance(cell, dict) and cell.get("path") else ""),
                "channels": int(wave.shape[1])},
        ))
    if no_text:
        result.warnings.append(f"{no_text} row(s) have an empty '{src.text_column}', kept "
                               "without text")
    return result
