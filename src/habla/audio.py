"""Reading, checking and writing audio with soundfile (torchaudio.load needs FFmpeg now).

`probe()` tells whether a file is usable and why not, without reading it whole; `blocks()`
streams a long file as mono float32 so a 2-hour recording never sits in memory at once;
`resample()` goes through torchaudio with a bounded ratio (any rate pair, bounded memory);
`write_wav()` writes 16-bit PCM atomically. Paths may be any bytes (names that are not UTF-8).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from habla import atomic
from habla.errors import HablaError

# Sample rates habla accepts: telephone-band 4 kHz up to 384 kHz studio files. A header outside
# this range is damaged (one flipped bit makes 44100 Hz read as ~8.4 MHz), not a recording.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000
# libsndfile's frame count for a file that does not state its length (a streamed FLAC)
UNKNOWN_FRAMES = 1 << 62
# At most this many samples (frames x channels) are read at once, whatever the channel count.
MAX_BLOCK_SAMPLES = 1 << 24
# torchaudio's sinc kernel holds about (orig/gcd) x (target/gcd) float64 values (44101 ->
# 16000 Hz: 705 million, 5.6 GB; 11 GB peak). Past this product the ratio is approximated.
MAX_RATIO_PRODUCT = 1 << 21  # 16 MB of kernel; every common rate pair is far below it


def fs_name(path: str | Path) -> bytes:
    """The path as bytes for libsndfile: soundfile encodes str names as strict UTF-8, which
    fails on a name that is not valid UTF-8 (os.fsdecode's surrogate escapes)."""
    return os.fsencode(path)


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


def check_rate(sample_rate: int, where: object) -> None:
    """Raise AudioError('bad_sample_rate') for a rate outside MIN/MAX_SAMPLE_RATE."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError("bad_sample_rate", f"{where}: header says {sample_rate} Hz, outside "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz (a damaged header?)")


def probe(path: str | Path) -> AudioInfo:
    """Header check; raises AudioError('missing'|'not_a_file'|'empty'|'unreadable'|
    'bad_sample_rate'|'no_channels'|'unknown_length', ...) for unusable files."""
    path = Path(path)
    if not path.exists():
        raise AudioError("missing", f"{path} does not exist")
    if not path.is_file():
        raise AudioError("not_a_file", f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise AudioError("empty", f"{path} is a zero-length file")
    try:
        info = sf.info(fs_name(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioError("unreadable", f"{path}: {exc}") from None
    if info.channels <= 0:
        raise AudioError("no_channels", f"{path}: header says {info.channels} channels")
    check_rate(info.samplerate, path)
    if info.frames <= 0:
        raise AudioError("empty", f"{path} holds no audio frames")
    if info.frames >= UNKNOWN_FRAMES:
        raise AudioError("unknown_length", f"{path}: its header does not say how long it is "
                         "(a streamed FLAC?); download re-encodes such files")
    return AudioInfo(str(path), info.samplerate, info.channels, info.frames, info.subtype,
                     info.format)


def _block_frames(frames: int, channels: int) -> int:
    """`frames` per read, lowered so one read never holds more than MAX_BLOCK_SAMPLES."""
    return max(1, min(frames, MAX_BLOCK_SAMPLES // max(1, channels)))


def blocks(path: str | Path, seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield the file as mono float32 blocks of about `seconds` each.

    Raises AudioError('truncated', ...) when the file ends before its header says it should.
    """
    info = probe(path)
    blocksize = _block_frames(max(1, int(seconds * info.sample_rate)), info.channels)
    read = 0
    try:
        with sf.SoundFile(fs_name(path)) as f:
            # not f.blocks(): it yields full blocks of stale data past a short file's real end
            while read < info.frames:
                want = min(blocksize, info.frames - read)
                block = f.read(want, dtype="float32", always_2d=True)
                read += len(block)
                if len(block):
                    yield block.mean(axis=1, dtype=np.float32)
                if len(block) < want:
                    break
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


def resample_ratio(orig_sr: int, target_sr: int) -> tuple[int, int]:
    """(input step, output step): the ratio target/orig in lowest terms; when the terms'
    product passes MAX_RATIO_PRODUCT, the nearest ratio whose product does not (44101 ->
    16000 Hz: 1733 -> 629, off by 0.06 ppm). Common rate pairs are exact."""
    g = math.gcd(orig_sr, target_sr)
    step_in, step_out = orig_sr // g, target_sr // g
    if step_in * step_out <= MAX_RATIO_PRODUCT:
        return step_in, step_out
    # approximate the ratio below 1: terms lo <= hi with lo x hi ~ hi^2 x ratio <= the bound
    small = Fraction(min(orig_sr, target_sr), max(orig_sr, target_sr))
    near = small.limit_denominator(max(1, math.isqrt(int(MAX_RATIO_PRODUCT / small))))
    lo, hi = max(1, near.numerator), near.denominator
    return (hi, lo) if orig_sr > target_sr else (lo, hi)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float32 with torchaudio's sinc filter, in memory bounded whatever the
    rates (see `resample_ratio`)."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import torch
    from torchaudio.functional.functional import _apply_sinc_resample_kernel

    step_in, step_out = resample_ratio(orig_sr, target_sr)
    if step_in * target_sr != step_out * orig_sr:  # approximated: resample by the near ratio
        orig_sr, target_sr = step_in, step_out
    kernel, width, gcd = _sinc_kernel(orig_sr, target_sr)
    # torchaudio.functional.resample, with its kernel computed once per rate pair (it builds
    # the kernel on every call: a fifth of segment's time): the same numbers, bit for bit
    out = _apply_sinc_resample_kernel(
        torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), orig_sr, target_sr, gcd,
        kernel, width)
    return out.numpy()


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig_sr: int, target_sr: int) -> tuple[Any, int, int]:
    import torch
    from torchaudio.functional.functional import _get_sinc_resample_kernel

    gcd = math.gcd(orig_sr, target_sr)
    kernel, width = _get_sinc_resample_kernel(orig_sr, target_sr, gcd, 6, 0.99,
                                              "sinc_interp_hann", None, torch.device("cpu"),
                                              torch.float32)
    return kernel, width, gcd


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int,
              subtype: str = "PCM_16") -> None:
    """Write mono audio atomically (a killed stage leaves no half-written clip)."""
    with atomic.atomic_target(path, suffix=".wav") as tmp:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")


def read_span(path: str | Path, start: int, frames: int) -> np.ndarray:
    """Frames [start, start + frames) of a file as mono float32, without reading the rest
    (read in pieces, so a file with many channels never sits in memory whole)."""
    parts = []
    with sf.SoundFile(fs_name(path)) as f:
        f.seek(max(0, start))
        step = _block_frames(max(1, frames), f.channels)
        left = max(0, frames)
        while True:
            data = f.read(frames=min(step, left), dtype="float32", always_2d=True)
            parts.append(data.mean(axis=1, dtype=np.float32))
            left -= len(data)
            if left <= 0 or len(data) == 0:
                break
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
    step_in, step_out = resample_ratio(orig_sr, target_sr)
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
