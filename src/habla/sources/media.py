"""What a file holds, judged by its first bytes, and turning compressed or container audio into
FLAC that soundfile reads.

`sniff(head)` names a file's type from its magic bytes (never from its name); `decode(path,
dest)` streams any audio PyAV (FFmpeg, bundled in the `av` wheel: works offline) can read into
a FLAC (a WAV past FLAC's 8 channels) in bounded memory. `SUPPORTED_FORMATS` is the list habla
reads, for the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from habla import atomic
from habla.audio import AudioError, check_rate, fs_name

# What habla reads, by content; the extension does not matter (a file without one, or with a
# wrong one, is read by what it holds).
SUPPORTED_FORMATS = """\
Read as they are (libsndfile): WAV (PCM, float, u-law/a-law, IMA/MS ADPCM, GSM 6.10; also
RIFX, RF64, BW64, Sony Wave64), FLAC, AIFF/AIFC, AU/SND, CAF, VOC, NIST SPHERE.
Decoded to FLAC with PyAV (bundled FFmpeg): MP3, Ogg (Vorbis, Opus, FLAC, Speex), M4A/MP4/MOV/
3GP (AAC, ALAC), WebM/MKA/MKV (Opus, Vorbis, FLAC, AAC), raw AAC (ADTS), AMR, WMA/ASF,
Monkey's Audio (APE), WavPack; and WAV/AIFF/CAF files whose codec libsndfile lacks.
url sources also unpack zip, tar (plain, gzip, bzip2, xz) and single gzip/bzip2/xz files."""

# sniffed kinds read by libsndfile and copied byte for byte
SNDFILE_KINDS = {"wav", "rf64", "w64", "flac", "aiff", "au", "caf", "voc", "nist"}
# sniffed kinds decoded with PyAV, with the FFmpeg demuxer to use (never let FFmpeg pick one by
# probing: playlist and concat demuxers would open other files or URLs)
FFMPEG_KINDS = {"ogg": "ogg", "mp3": "mp3", "adts": "aac", "mp4": "mp4", "matroska": "matroska",
                "amr": "amr", "asf": "asf", "ape": "ape", "wavpack": "wv"}
# kinds libsndfile may fail on: a codec it lacks (WAV with MP3 or AAC inside), or a FLAC
# whose header does not state its length (streamed)
FFMPEG_FALLBACK = {"wav": "wav", "rf64": "wav", "w64": "w64", "aiff": "aiff", "caf": "caf",
                   "flac": "flac"}
ARCHIVE_KINDS = {"zip", "tar", "gzip", "bzip2", "xz", "zstd", "7z", "rar"}
# extensions libsndfile reads whose content `sniff` does not recognise (headerless or rare)
SNDFILE_SUFFIXES = {".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64",
                    ".rf64", ".caf", ".voc", ".nist", ".sph", ".paf", ".svx", ".iff", ".sd2",
                    ".ircam", ".sf", ".mat", ".pvf", ".xi", ".htk", ".wve", ".mpc2k", ".avr"}
SUFFIX = {"wav": ".wav", "rf64": ".rf64", "w64": ".w64", "flac": ".flac", "aiff": ".aiff",
          "au": ".au", "caf": ".caf", "voc": ".voc", "nist": ".nist"}
HEAD_BYTES = 4096  # enough for every signature below (tar's is at 257)
MAX_DECODED_SECONDS = 24 * 3600  # a longer decode is a hostile or broken stream, not speech
LOSSLESS_CODECS = {"alac", "flac", "wavpack", "tta", "ape", "mlp", "truehd"}
FLAC_MAX_CHANNELS = 8

_W64 = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_ASF = b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _mpeg_audio(head: bytes) -> str | None:
    """'mp3' or 'adts' for an MPEG audio / AAC frame header at the start, else None."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 3
    if layer == 0:  # ADTS: 12 sync bits, layer always 00, a sane sampling index
        return "adts" if head[1] & 0xF0 == 0xF0 and (head[2] >> 2) & 0xF < 13 else None
    version, bitrate, rate = (head[1] >> 3) & 3, head[2] >> 4, (head[2] >> 2) & 3
    return "mp3" if version != 1 and bitrate != 15 and rate != 3 else None


def sniff(head: bytes) -> str | None:
    """The type of a file from its first bytes, or None when no known signature matches."""
    four = head[:4]
    if four in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "wav"
    if four in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "rf64"
    if head[:16] == _W64:
        return "w64"
    if four == b"fLaC":
        return "flac"
    if four == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if four == b".snd":
        return "au"
    if four == b"caff":
        return "caf"
    if head.startswith(b"Creative Voice File\x1a"):
        return "voc"
    if head.startswith(b"NIST_1A"):
        return "nist"
    if four == b"OggS":
        return "ogg"
    if head.startswith(b"ID3"):
        return "mp3"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if four == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(_ASF):
        return "asf"
    if four == b"MAC ":
        return "ape"
    if four == b"wvpk":
        return "wavpack"
    if four in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if four == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if head[:6] == b"Rar!\x1a\x07":
        return "rar"
    return _mpeg_audio(head)


@dataclass(frozen=True)
class Decoded:
    """What `decode` wrote."""

    sample_rate: int
    channels: int
    frames: int
    codec: str
    container: str
    subtype: str
    format: str


def decode(path: Path, dest: Path, kind: str) -> Decoded:
    """Decode the first audio stream of `path` (an FFmpeg demuxer per `kind`, see FFMPEG_KINDS
    and FFMPEG_FALLBACK) into `dest` (FLAC; WAV past 8 channels), streaming.

    Raises AudioError: 'undecodable' (not that format, or a decode error part-way),
    'no_audio_stream', 'bad_sample_rate', 'empty', 'too_long'.
    """
    import av

    demuxer = FFMPEG_KINDS.get(kind) or FFMPEG_FALLBACK[kind]
    try:
        # a file object: FFmpeg never sees the name (any bytes) and opens nothing else
        with open(path, "rb") as fh, av.open(fh, "r", format=demuxer) as container:
            if not container.streams.audio:
                raise AudioError("no_audio_stream", f"{path}: {kind} file without an audio "
                                 "stream")
            stream = container.streams.audio[0]
            return _write(container, stream, path, dest, kind)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise AudioError("undecodable", f"{path}: not decodable as {kind}: {exc}") from None


def _write(container, stream, path: Path, dest: Path, kind: str) -> Decoded:
    import av

    context = stream.codec_context
    if context is None:  # FFmpeg has no decoder for this stream's codec
        raise AudioError("undecodable", f"{path}: no decoder for the {kind} file's codec")
    codec = context.name
    lossless = codec in LOSSLESS_CODECS or codec.startswith("pcm_")
    bits = context.format.bits if context.format else 16
    subtype = "PCM_24" if lossless and bits > 16 else "PCM_16"
    resampler = None
    out = None
    rate = channels = frames = 0
    fmt = "FLAC"
    with atomic.atomic_target(dest, suffix=dest.suffix) as tmp:
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    rate, channels = frame.sample_rate, frame.layout.nb_channels
                    check_rate(rate, path)
                    if channels <= 0:
                        raise AudioError("no_audio_stream", f"{path}: audio without channels")
                    # later frames with another rate or layout are converted to the first one's
                    resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=rate)
                    fmt = "FLAC" if channels <= FLAC_MAX_CHANNELS else "WAV"
                    out = sf.SoundFile(fs_name(tmp), "w", rate, channels, subtype, format=fmt)
                for piece in resampler.resample(frame):
                    frames += _put(out, piece, channels)
                if frames > MAX_DECODED_SECONDS * rate:
                    raise AudioError("too_long", f"{path}: decodes to more than "
                                     f"{MAX_DECODED_SECONDS // 3600} hours of audio")
            if resampler is not None:
                for piece in resampler.resample(None):
                    frames += _put(out, piece, channels)
        except AudioError:
            raise
        except (av.error.FFmpegError, ValueError, EOFError) as exc:
            at = f" after {frames / rate:.2f} s" if rate else ""
            raise AudioError("undecodable", f"{path}: {kind} decoding failed{at}: {exc}") from None
        finally:
            if out is not None:
                out.close()
        if frames == 0:
            raise AudioError("empty", f"{path}: {kind} file without audio frames")
    return Decoded(rate, channels, frames, codec, container.format.name, subtype, fmt)


def _put(out: sf.SoundFile, frame, channels: int) -> int:
    """Write one packed float frame; returns its length in frames."""
    data = frame.to_ndarray().reshape(-1, channels)
    if not np.isfinite(data).all():
        raise AudioError("non_finite", "decoded NaN or Inf samples")
    out.write(np.clip(data, -1.0, 1.0))
    return len(data)


def suffix_for(kind: str | None, info_format: str) -> str:
    """The suffix a copied file gets in data/raw: from its content, not from its old name."""
    return SUFFIX.get(kind or "") or "." + (info_format.lower() or "audio")
