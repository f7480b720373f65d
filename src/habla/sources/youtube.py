"""Video and playlist URLs (YouTube or any other site yt-dlp supports) as recordings, audio only.

`fetch` asks yt-dlp (optional extra `youtube`) which videos each URL holds and downloads each
one's best audio stream as it is, with no FFmpeg post-processing, into
data/cache/downloads/youtube/ (an interrupted download resumes from yt-dlp's own `.part` file).
A finished video gets a `done/<key>.json` marker holding its metadata, so reruns neither fetch it
again nor touch the network. `prepare` decodes each file with PyAV (FFmpeg bundled in the `av`
wheel; habla.sources.media, by the file's bytes) into FLAC under data/raw/<source>/ and records
the video's id, title, uploader and licence in the manifest. A video that fails is a reject
with its reason; the others proceed. Respect the rights of what you download: the licence
field says what the site declared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import habla.sources.media as media
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


def to_raw(path: Path, stem: Path) -> tuple[Path, dict[str, Any]]:
    """The downloaded file as audio later stages read: judged by its bytes, copied when
    libsndfile reads it, else decoded with PyAV into FLAC (`habla.sources.media`)."""
    kind = media.sniff(media.read_head(path))
    if kind in media.SNDFILE_KINDS:
        info = probe(path)
        dest = stem.with_suffix(media.suffix_for(kind, info.format))
        shutil.copyfile(path, dest)
        return dest, {"codec": info.subtype, "container": info.format}
    if kind in media.FFMPEG_KINDS:
        dest = stem.with_suffix(".flac")
        got = media.decode(path, dest, kind)
        if got.format != "FLAC":  # more channels than FLAC holds
            dest = dest.rename(dest.with_suffix(".wav"))
        return dest, {"codec": got.codec, "container": got.container}
    raise AudioError("unsupported_format", f"{path.name}: not audio habla recognises (its "
                     "formats: habla.sources.media.SUPPORTED_FORMATS)")


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
        try:
            dest, how = to_raw(video.path, target / rid)
            info = probe(dest)
        except AudioError as exc:
            result.rejects.add(video.meta.get("webpage_url") or video.key, exc.reason,
                               exc.detail)
            continue
        result.records.append(Record(
            id=rid, audio=dest.as_posix(), duration=round(info.duration, 5),
            sample_rate=info.sample_rate, speaker=src.speaker, language=src.language,
            text=None, source=src.name, sha256=sha256_file(dest),
            extra={"video": {k: v for k, v in video.meta.items() if v is not None},
                   "download_sha256": video.sha256, **how, "channels": info.channels}))
    if fetched.videos and not result.records:
        result.warnings.append("no video could be decoded")
    return result
