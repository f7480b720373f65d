"""Reading, checking and writing audio with soundfile (torchaudio.load needs FFmpeg now).

`probe()` tells whether a file is usable and why not, without reading it whole; `blocks()`
streams a long file as mono float32 so a 2-hour recording never sits in memory at once;
`resample()` goes through torchaudio; `write_wav()` writes 16-bit PCM atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """An audio file that cannot be used. `reason` is a short stable code for rejects."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | Path) -> AudioInfo:
    """Header check; raises AudioError('unreadable'|'empty', ...) for unusable files."""
    path = Path(path)
    if not path.exists():
        raise AudioError("missing", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise AudioError("empty", f"{path} is a zero-length file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioError("unreadable", f"{path}: {exc}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError("empty", f"{path} holds no audio frames")
    return AudioInfo(str(path), info.samplerate, info.channels, info.frames, info.subtype,
                     info.format)


def blocks(path: str | Path, seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield the file as mono float32 blocks of about `seconds` each.

    Raises AudioError('truncated', ...) when the file ends before its header says it should.
    """
    info = probe(path)
    blocksize = max(1, int(seconds * info.sample_rate))
    read = 0
    try:
        with sf.SoundFile(str(path)) as f:
            for block in f.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                read += len(block)
                yield block.mean(axis=1, dtype=np.float32)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError("truncated", f"{path}: read failed after {read} frames: {exc}") from None
    if read < info.frames:
        raise AudioError("truncated", f"{path}: header says {info.frames} frames, read {read}")


def read_mono(path: str | Path) -> tuple[np.ndarray, int]:
    """Whole file as mono float32 (for clips; use `blocks()` for long recordings)."""
    info = probe(path)
    return np.concatenate(list(blocks(path)) or [np.zeros(0, np.float32)]), info.sample_rate


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
                      orig_sr, target_sr)
    return out.numpy()


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono audio atomically (a killed stage leaves no half-written clip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
