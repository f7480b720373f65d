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

from habla.audio import AudioError, check_rate, fs_name, probe, write_wav
from habla.config import HfSource
from habla.errors import StageError
from habla.manifest import Record, clean_text, sha256_file
from habla.sources.common import SourceResult, safe_id
from habla.sources.media import MAX_DECODED_SECONDS
from habla.sources.transcripts import bad_text

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
    """An audio cell ({bytes, path} or {array, sampling_rate}) as float32 (frames, channels).

    Raises AudioError for cells that hold no usable audio (a damaged header, a rate outside
    habla's range, an array that is not 1-D or 2-D). Files are read block by block up to their
    real end, never by what a header claims.
    """
    if isinstance(value, dict) and value.get("array") is not None:
        try:
            wave = np.asarray(value["array"], dtype=np.float32)
            rate = int(value["sampling_rate"])
        except (TypeError, ValueError, KeyError) as exc:
            raise AudioError("unreadable", f"array cell: {exc}") from None
        if wave.ndim not in (1, 2):
            raise AudioError("unreadable", f"array cell of shape {wave.shape}")
        check_rate(rate, "array cell")
        return (wave[:, None] if wave.ndim == 1 else wave), rate
    if isinstance(value, dict) and value.get("bytes"):
        source: object = io.BytesIO(value["bytes"])
    elif isinstance(value, dict) and value.get("path"):
        path = Path(value["path"])
        source = fs_name(path if path.is_absolute() or base is None else base / path)
    else:
        raise AudioError("empty", "the audio cell holds neither bytes nor a path")
    try:
        with sf.SoundFile(source) as f:
            check_rate(f.samplerate, "audio cell")
            rate, parts, frames = f.samplerate, [], 0
            step = max(1, (1 << 22) // max(1, f.channels))
            while True:  # to the real end, whatever the header claims
                block = f.read(step, dtype="float32", always_2d=True)
                if len(block):
                    parts.append(block)
                    frames += len(block)
                if frames > MAX_DECODED_SECONDS * rate:
                    raise AudioError("too_long", f"audio cell decodes to more than "
                                     f"{MAX_DECODED_SECONDS // 3600} hours")
                if len(block) < step:
                    break
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioError("unreadable", str(exc)) from None
    if not parts:
        raise AudioError("empty", "no audio frames")
    return np.concatenate(parts), rate


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
            no_text += _row(src, k, row, base, target, result)
        except AudioError as exc:
            result.rejects.add(item, exc.reason, exc.detail)
        except Exception as exc:  # one row must never stop the source: reject it, go on
            log.exception("%s: unexpected error", item)
            result.rejects.add(item, "internal_error", f"{type(exc).__name__}: {exc}")
    if no_text:
        result.warnings.append(f"{no_text} row(s) have an empty '{src.text_column}', kept "
                               "without text")
    return result


def _row(src: HfSource, k: int, row: dict, base: Path | None, target: Path,
         result: SourceResult) -> bool:
    """Write one row's audio and record it; returns whether it lacks its text."""
    wave, rate = decode(row[src.audio_column], base)
    if wave.shape[0] == 0 or wave.shape[1] == 0:
        raise AudioError("empty", "no audio frames")
    finite = np.isfinite(wave).all(axis=1)
    if not finite.all():  # a 16-bit WAV cannot hold them: they would turn into full scale
        at = int(np.argmin(finite))
        raise AudioError("non_finite", f"NaN or Inf sample at {at / rate:.3f} s")
    text = row.get(src.text_column) if src.text_column else None
    speaker = row.get(src.speaker_column) if src.speaker_column else None
    for key, value in (("text", text), ("speaker", speaker)):
        why = bad_text(str(value)) if value is not None else None
        if why:  # lone surrogates too: the record could not be written as JSON
            raise AudioError("bad_text", f"the row's {key} {why}")
    text = str(text).strip() if text is not None and str(text).strip() else None
    rid = f"{safe_id(src.name)}_{k:06d}"
    dest = target / f"{rid}.wav"
    write_wav(dest, wave, rate)
    info = probe(dest)
    cell = row[src.audio_column]
    rec = Record(
        id=rid, audio=dest.as_posix(), duration=round(info.duration, 5),
        sample_rate=info.sample_rate,
        speaker=str(speaker) if speaker is not None else "speaker0",
        language=src.language, text=text, source=src.name, sha256=sha256_file(dest),
        extra={"original": clean_text(f"{src.dataset}[{k}]" + (
            f" {cell['path']}" if isinstance(cell, dict) and cell.get("path") else "")),
            "channels": int(wave.shape[1])},
    )
    result.records.append(rec)
    return src.text_column is not None and text is None
