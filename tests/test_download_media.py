"""Compressed and container audio (phone memos, podcasts, video): recognised by content,
decoded with PyAV (bundled FFmpeg, offline) into FLAC that soundfile reads, in bounded memory.
Test media are encoded here with PyAV itself."""

import io
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from habla.config import LocalSource
from habla.sources import local, media


def encode(path: Path, fmt: str, codec: str, rate: int = 16000, seconds: float = 1.0,
           channels: int = 1, video: bool = False) -> Path:
    """A 220 Hz tone encoded with PyAV (`fmt` is the muxer, `codec` the encoder)."""
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if video:
            picture = out.add_stream("mpeg4", rate=5)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in picture.encode(frame):
                out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for i in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(np.tile(x[i:i + 1024], (channels, 1)),
                                               format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def prepare(folder: Path, tmp_path: Path):
    src = LocalSource(kind="local", name="memos", path=str(folder), transcripts="none")
    return local.prepare(src, folder, tmp_path / "raw" / "memos")


@pytest.fixture(scope="module")
def memos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("memos")
    encode(root / "phone memo.m4a", "mp4", "aac", rate=44100)
    encode(root / "podcast.mp3", "mp3", "libmp3lame", rate=22050, channels=2)
    encode(root / "call.opus", "ogg", "libopus", rate=48000)
    encode(root / "browser.webm", "webm", "libopus", rate=48000)
    encode(root / "video.mp4", "mp4", "aac", rate=48000, video=True)
    encode(root / "lossless.m4a", "ipod", "alac", rate=44100)
    encode(root / "raw.aac", "adts", "aac", rate=22050)
    # named wrongly or not at all: recognised by content
    encode(root / "no_extension", "mp3", "libmp3lame", rate=16000)
    encode(root / "actually_m4a.wav", "mp4", "aac", rate=16000)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
    sf.write(root / "flac_named.mp3", tone, 16000, format="FLAC")
    sf.write(root / "vorbis.ogg", tone, 16000, format="OGG", subtype="VORBIS")
    # not usable
    with av.open(str(root / "silent_film.mp4"), "w", format="mp4") as out:
        picture = out.add_stream("mpeg4", rate=5)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*picture.encode(frame), *picture.encode(None)]:
            out.mux(packet)
    whole = (root / "phone memo.m4a").read_bytes()
    (root / "garbage.m4a").write_bytes(whole[:8] + bytes(range(256)) * 20)  # ftyp, then junk
    (root / "notes.pdf").write_bytes(b"%PDF-1.4\n" + bytes(200))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.wav", b"RIFF")
    (root / "bundle.zip").write_bytes(buf.getvalue())
    return root


def test_compressed_and_container_audio_is_decoded_to_flac(memos, tmp_path):
    result = prepare(memos, tmp_path)
    kept = {r.extra["original"]: r for r in result.records}
    assert set(kept) == {"phone memo.m4a", "podcast.mp3", "call.opus", "browser.webm",
                         "video.mp4", "lossless.m4a", "raw.aac", "no_extension",
                         "actually_m4a.wav", "flac_named.mp3", "vorbis.ogg"}
    expect_rate = {"phone memo.m4a": 44100, "podcast.mp3": 22050, "call.opus": 48000,
                   "browser.webm": 48000, "video.mp4": 48000, "lossless.m4a": 44100,
                   "raw.aac": 22050, "no_extension": 16000, "actually_m4a.wav": 16000,
                   "flac_named.mp3": 16000, "vorbis.ogg": 16000}
    for name, rec in kept.items():
        info = sf.info(rec.audio)  # later stages read it with soundfile
        assert info.format == "FLAC" and rec.audio.endswith(".flac"), name
        assert (rec.sample_rate, info.samplerate) == (expect_rate[name], expect_rate[name])
        assert abs(rec.duration - 1.0) < 0.1, (name, rec.duration)
        wave, _ = sf.read(rec.audio, dtype="float32")
        assert 0.15 < np.abs(wave).max() < 0.5, name  # the tone, not silence or noise
    assert kept["podcast.mp3"].extra["channels"] == 2
    assert kept["lossless.m4a"].extra["subtype"] == "PCM_24"  # lossless keeps its depth
    assert kept["phone memo.m4a"].extra["decoded_from"] == "mp4/aac"
    assert "decoded_from" not in kept["flac_named.mp3"].extra  # copied as it is


def test_unusable_media_are_rejected_with_reasons(memos, tmp_path):
    result = prepare(memos, tmp_path)
    got = {r.item: r.reason for r in result.rejects.items}
    assert got == {"silent_film.mp4": "no_audio_stream", "garbage.m4a": "undecodable",
                   "notes.pdf": "unsupported_format", "bundle.zip": "unsupported_format"}
    details = {r.item: r.detail for r in result.rejects.items}
    assert "'.pdf'" in details["notes.pdf"] and "zip archive" in details["bundle.zip"]
    assert result.files_in == len(result.records) + len(result.rejects) == 15


def test_decoding_streams_without_holding_the_file_in_memory(tmp_path, monkeypatch):
    path = encode(tmp_path / "long.m4a", "mp4", "aac", rate=16000, seconds=60.0)
    sizes = []
    put = media._put

    def spy(out, frame, channels):
        sizes.append(put(out, frame, channels))
        return sizes[-1]

    monkeypatch.setattr(media, "_put", spy)
    got = media.decode(path, tmp_path / "long.flac", "mp4")
    assert abs(got.frames - 60 * 16000) < 4096 and sf.info(tmp_path / "long.flac").frames \
        == got.frames
    assert len(sizes) > 500 and max(sizes) <= 4096  # written frame by frame, never whole


@pytest.mark.parametrize(("head", "kind"), [
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"), (b"fLaC\x00\x00\x00\x22", "flac"),
    (b"OggS\x00\x02", "ogg"), (b"ID3\x04\x00", "mp3"), (b"\xff\xfb\x90\x64", "mp3"),
    (b"\xff\xf1\x50\x80", "adts"), (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
    (b"\x1a\x45\xdf\xa3\x9f", "matroska"), (b"PK\x03\x04", "zip"), (b"\x1f\x8b\x08", "gzip"),
    (b"BZh91AY", "bzip2"), (b"\xfd7zXZ\x00\x00", "xz"), (b"\x00" * 257 + b"ustar\x0000", "tar"),
    (b"FORM\x00\x00\x00\x00AIFF", "aiff"), (b"caff\x00\x01", "caf"), (b"hello world", None),
    (b"", None), (b"\xff\xff\xff\xff", None),
])
def test_sniff_recognises_files_by_their_first_bytes(head, kind):
    assert media.sniff(head) == kind


def test_supported_formats_are_listed_for_the_readme():
    for name in ("WAV", "FLAC", "MP3", "M4A", "WebM", "Opus", "zip", "gzip"):
        assert name in media.SUPPORTED_FORMATS
