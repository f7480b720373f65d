"""Video and playlist URLs (YouTube or any other site yt-dlp supports) as recordings, audio only.

`fetch` asks yt-dlp (optional extra `youtube`) which videos each URL holds and downloads each
one's best audio stream as it is, with no FFmpeg post-processing, into
data/cache/downloads/youtube/ (an interrupted download resumes from yt-dlp's own `.part` file).
A finished video gets a `done/<key>.json` marker holding its metadata, so reruns neither fetch it
again nor touch the network. `prepare` decodes each file with PyAV (FFmpeg bundled in the `av`
wheel) into FLAC under data/raw/<source>/ and records the video's id, title, uploader and
licence in the manifest. A video that fails is a reject with its reason; the others proceed.
Respect the rights of what you download: the licence field says what the site declared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from habla import atomic
from habla.audio import AudioError, probe
from habla.config import YoutubeSource
from habla.errors import StageError
from habla.manifest import Record, Rejects, sha256_file
from habla.sources.common import SourceResult, safe_id

log = logging.getLogger("habla.download")

INSTALL = "pip install 'habla[youtube]'"
RETRIES = 3  # yt-dlp's own retries of a broken connection within one run
SOCKET_TIMEOUT_S = 60
# what the manifest keeps of yt-dlp's metadata (None where the site gives nothing)
# containers sites serve audio in, and the FFmpeg demuxer for each: never let FFmpeg probe a
# downloaded file, since its playlist and concat demuxers would open other files or URLs
DEMUXERS = {"m4a": "mp4", "mp4": "mp4", "mov": "mp4", "3gp": "mp4", "webm": "matroska",
            "weba": "matroska", "mka": "matroska", "mkv": "matroska", "opus": "ogg",
            "ogg": "ogg", "oga": "ogg", "mp3": "mp3", "aac": "aac", "flac": "flac", "wav": "wav"}
META_KEYS = ("id", "title", "uploader", "uploader_id", "channel", "license", "webpage_url",
             "extractor", "upload_date", "duration", "ext", "format_id", "acodec", "abr")


@dataclass
class Downloaded:
    """One video's audio in the download cache, and what yt-dlp said about it."""

    key: str
    path: Path
    sha256: str
    meta: dict[str, Any]


@dataclass
class Fetched:
    videos: list[Downloaded] = field(default_factory=list)
    rejects: Rejects = field(default_factory=lambda: Rejects("download"))
    urls: int = 0


class _Log:
    """yt-dlp's messages into habla's log (its errors also come back as exceptions)."""

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        log.warning("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


def _yt_dlp() -> Any:
    try:
        import yt_dlp
    except ImportError:
        raise StageError(f"download.sources: kind 'youtube' needs yt-dlp: {INSTALL}") from None
    return yt_dlp


def _options(src: YoutubeSource, media: Path) -> dict[str, Any]:
    return {
        "format": src.format,
        "outtmpl": {"default": str(media / "%(id)s.%(ext)s")},
        # the file as the site serves it: post-processing and fix-ups would need FFmpeg
        "postprocessors": [], "fixup": "never", "keepvideo": True,
        "continuedl": True, "nopart": False, "overwrites": False,
        "retries": RETRIES, "fragment_retries": RETRIES, "socket_timeout": SOCKET_TIMEOUT_S,
        "noplaylist": False, "quiet": True, "no_warnings": False, "noprogress": True,
        "cachedir": False, "logger": _Log(),
    }


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _entries(ydl: Any, url: str, cache: Path) -> list[dict[str, Any]]:
    """The videos `url` names (one, or a playlist's), as yt-dlp references that it can resolve
    later; remembered in the cache so that a rerun needs no network for finished videos."""
    marker = cache / "urls" / f"{_key(url)}.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))["entries"]
    info = ydl.extract_info(url, download=False, process=False)
    if info.get("_type") in ("playlist", "multi_video"):
        entries = []
        for entry in info.get("entries") or []:
            if not entry:
                continue
            if entry.get("_type") in ("url", "url_transparent"):
                entries.append(ydl.sanitize_info(entry))
            else:  # a fully extracted entry: its format URLs expire, keep only its page
                page = entry.get("webpage_url") or entry.get("original_url") or entry["url"]
                entries.append({"_type": "url", "url": page, "id": entry.get("id")})
    else:
        entries = [{"_type": "url", "url": url, "id": info.get("id")}]
    atomic.write_text(marker, json.dumps({"url": url, "entries": entries}, indent=1))
    return entries


def _downloaded_file(info: dict[str, Any]) -> Path:
    for item in info.get("requested_downloads") or []:
        if item.get("filepath"):
            return Path(item["filepath"])
    if info.get("filepath"):
        return Path(info["filepath"])
    raise StageError(f"yt-dlp reported no file for {info.get('webpage_url')}")


def _download(ydl: Any, entry: dict[str, Any], cache: Path) -> Downloaded:
    """One video: from its completion marker, or downloaded (resuming a `.part`) now."""
    key = safe_id(str(entry.get("id") or _key(entry["url"])))
    marker = cache / "done" / f"{key}.json"
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        path = cache / "media" / done["file"]
        if path.is_file() and path.stat().st_size == done["bytes"]:
            return Downloaded(key, path, done["sha256"], done["meta"])
    info = ydl.process_ie_result(dict(entry), download=True)
    path = _downloaded_file(info)
    meta = {k: info.get(k) for k in META_KEYS}
    digest = sha256_file(path)
    atomic.write_text(marker, json.dumps({"file": path.name, "bytes": path.stat().st_size,
                                          "sha256": digest, "meta": meta}, indent=1,
                                         ensure_ascii=False, default=str))
    return Downloaded(key, path, digest, meta)


def fetch(src: YoutubeSource, cache: Path) -> Fetched:
    """Every video of every URL of `src` in `cache`/youtube; failures become rejects."""
    yt_dlp = _yt_dlp()
    root = cache / "youtube"
    (root / "media").mkdir(parents=True, exist_ok=True)
    out = Fetched()
    seen: set[str] = set()
    with yt_dlp.YoutubeDL(_options(src, root / "media")) as ydl:
        for url in src.urls:
            out.urls += 1
            try:
                entries = _entries(ydl, url, root)
            except (yt_dlp.utils.DownloadError, yt_dlp.utils.ExtractorError) as exc:
                out.rejects.add(url, "extract_failed", _message(exc))
                continue
            for entry in entries[: src.max_videos]:
                item = entry.get("id") or entry.get("url")
                try:
                    video = _download(ydl, entry, root)
                except (yt_dlp.utils.DownloadError, yt_dlp.utils.ExtractorError,
                        StageError, OSError) as exc:
                    out.rejects.add(str(item), "download_failed", _message(exc))
                    continue
                if video.key in seen:  # the same video listed twice
                    continue
                seen.add(video.key)
                out.videos.append(video)
    return out


def _message(exc: BaseException) -> str:
    return str(exc).removeprefix("ERROR: ").strip()


def decode(path: Path, dest: Path) -> tuple[int, int, str]:
    """The first audio stream of `path` (a container in DEMUXERS, by its extension) as FLAC at
    its own rate and channel count, streamed; returns (sample rate, frames, codec)."""
    import av

    demuxer = DEMUXERS.get(path.suffix.lower().lstrip("."))
    if demuxer is None:
        raise AudioError("unsupported_container", f"{path.name}: not one of "
                         f"{', '.join(sorted(DEMUXERS))}")
    frames = 0
    rate = 0
    codec = "?"
    try:
        with open(path, "rb") as fh, av.open(fh, "r", format=demuxer) as container:
            if not container.streams.audio:
                raise AudioError("no_audio_stream", f"{path.name}: no audio stream")
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            resampler = out = None
            with atomic.atomic_target(dest, suffix=".flac") as tmp:
                try:
                    for frame in container.decode(stream):
                        if resampler is None:
                            rate, channels = frame.sample_rate, frame.layout.nb_channels
                            resampler = av.AudioResampler(format="flt", layout=frame.layout,
                                                          rate=rate)
                            out = sf.SoundFile(str(tmp), "w", rate, channels, "PCM_16",
                                               format="FLAC")
                        for piece in resampler.resample(frame):
                            data = piece.to_ndarray().reshape(-1, channels)
                            out.write(np.clip(data, -1.0, 1.0))
                            frames += len(data)
                finally:
                    if out is not None:
                        out.close()
                if frames == 0:
                    raise AudioError("empty", f"{path.name}: no audio frames")
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise AudioError("undecodable", f"{path.name}: {exc}") from None
    return rate, frames, codec


def prepare(src: YoutubeSource, fetched: Fetched, target: Path) -> SourceResult:
    """Decode every fetched video into `target` (rebuilt) and describe it as a Record."""
    result = SourceResult(src.name)
    result.rejects.extend(fetched.rejects.items)
    result.files_in = len(fetched.videos) + len(fetched.rejects)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    taken: set[str] = set()
    for video in fetched.videos:
        rid = f"{safe_id(src.name)}_{safe_id(video.key, taken)}"
        dest = target / f"{rid}.flac"
        try:
            rate, _, codec = decode(video.path, dest)
            info = probe(dest)
        except AudioError as exc:
            result.rejects.add(video.meta.get("webpage_url") or video.key, exc.reason,
                               exc.detail)
            continue
        result.records.append(Record(
            id=rid, audio=dest.as_posix(), duration=round(info.duration, 5),
            sample_rate=rate, speaker=src.speaker, language=src.language, text=None,
            source=src.name, sha256=sha256_file(dest),
            extra={"video": {k: v for k, v in video.meta.items() if v is not None},
                   "download_sha256": video.sha256, "codec": codec,
                   "channels": info.channels}))
    if fetched.videos and not result.records:
        result.warnings.append("no video could be decoded")
    return result
