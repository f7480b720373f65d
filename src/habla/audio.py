"""Reading, checking and writing audio with soundfile (torchaudio.load needs FFmpeg now).

`probe()` tells whether a file is usable and why not, without reading it whole; `blocks()`
streams a long file as mono float32 so a 2-hour recording never sits in memory at once;
`resample()` goes through torchaudio; `write_wav()` writes 16-bit PCM atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from habla import atomic
from habla.errors import HablaError


class AudioError(HablaError, ValueError):
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


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int,
              subtype: str = "PCM_16") -> None:
    """Write mono audio atomically (a killed stage leaves no half-written clip)."""
    with atomic.atomic_target(path, suffix=".wav") as tmp:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")


def read_span(path: str | Path, start: int, frames: int) -> np.ndarray:
    """Frames [start, start + frames) of a file as mono float32, without reading the rest."""
    with sf.SoundFile(str(path)) as f:
        f.seek(max(0, start))
        data = f.read(frames=max(0, frames), dtype="float32", always_2d=True)
    return data.mean(axis=1, dtype=np.float32)


def resample_stream(chunks: Iterable[np.ndarray], orig_sr: int, target_sr: int
                    ) -> Iterator[np.ndarray]:
    """Resample a stream of mono blocks in bounded memory, with no seams at block joins.

    Each piece is resampled with enough input context on both sides for torchaudio's sinc
    kernel, and pieces start at multiples of orig/gcd samples so the filter phase lines up:
    the joined output equals resampling the whole signal (to float rounding).
    """
    if orig_sr == target_sr:
        yield from (c.astype(np.float32, copy=False) for c in chunks)
        return
    g = math.gcd(orig_sr, target_sr)
    step_in, step_out = orig_sr // g, target_sr // g
    # The kernel spans about 6 zero crossings of the lower rate: 256 input samples is ample.
    ctx = step_in * math.ceil(max(256, 16 * orig_sr / min(orig_sr, target_sr)) / step_in)
    buf = np.zeros(0, np.float32)
    left = 0  # samples of already-emitted context at the start of buf
    for chunk in chunks:
        buf = np.concatenate([buf, chunk.astype(np.float32, copy=False)])
        n = (len(buf) - left - ctx) // step_in * step_in
        if n <= 0:
            continue
        out = resample(buf[: left + n + ctx], orig_sr, target_sr)
        o0 = left // step_in * step_out
        yield out[o0: o0 + n // step_in * step_out]
        new_left = min(ctx, left + n)
        buf = buf[left + n - new_left:]
        left = new_left
    if len(buf) > left:
        out = resample(buf, orig_sr, target_sr)
        yield out[left // step_in * step_out:]


PEAK_LIMIT = 10 ** (-1.0 / 20)  # -1 dBFS: headroom for resampling overshoot downstream


def normalise_loudness(wave: np.ndarray, speech_rms: float, target_db: float
                       ) -> tuple[np.ndarray, float, bool]:
    """Scale so the speech RMS reaches `target_db` dBFS; returns (wave, gain_db, limited).

    The gain is lowered (never clipped) when the peak would pass -1 dBFS: such a clip ends
    quieter than the target, and `limited` says so.
    """
    gain = 10 ** (target_db / 20) / max(speech_rms, 1e-9)
    peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
    limited = peak * gain > PEAK_LIMIT
    if limited:
        gain = PEAK_LIMIT / peak
    return (wave * gain).astype(np.float32), float(20 * np.log10(gain)), bool(limited)


def check_wav_complete(path: str | Path) -> None:
    """Raise AudioError('truncated') when a RIFF/WAVE file is shorter than its data chunk says.

    libsndfile quietly shortens such files to what is there, so `probe()` cannot tell a cut-off
    download from a complete file. Other formats pass unchecked.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        order = "little" if head[:4] == b"RIFF" else "big"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            length = int.from_bytes(chunk[4:8], order)
            if chunk[:4] == b"data":
                if length != 0xFFFFFFFF and pos + 8 + length > size:  # 0xFFFFFFFF: streamed
                    raise AudioError("truncated", f"{path}: data chunk declares {length} bytes, "
                                     f"file holds {size - pos - 8}")
                return
            pos += 8 + length + (length & 1)
