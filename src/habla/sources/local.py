"""A folder of recordings (searched recursively) with optional transcripts: LJSpeech
`metadata.csv`, `metadata.json` or a JSONL of {audio_path, text, ...} (sources.transcripts).

Every file under the folder is used or rejected with a reason. Audio is recognised by its
content (sources.media, whatever its name), checked, and copied (formats libsndfile reads) or
decoded to FLAC (compressed and container formats) into data/raw/<source>/ under a safe unique
id; the original relative path stays in extra (raw bytes in base64 when it is not UTF-8).
Links are never followed: one that leaves the folder is `unsafe_link`, one that stays inside is
`duplicate_link` (its target is read once, under its own name).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import soundfile as sf

import habla.sources.media as media
import habla.sources.transcripts as transcripts
from habla.audio import AudioError, AudioInfo, fs_name, probe
from habla.config import LocalSource, UrlSource
from habla.errors import StageError
from habla.manifest import Record, clean_text, name_fields, sha256_file
from habla.sources.common import SourceResult, safe_id
from habla.sources.transcripts import TRANSCRIPT_FILES, Transcripts

log = logging.getLogger("habla.download")


@dataclass(frozen=True)
class Entry:
    """One thing found under a source folder: a regular file to read (`verdict` None) or
    something rejected without being opened (`verdict` is the reason)."""

    path: Path
    rel: str  # relative to the folder, '/'-separated; may hold os.fsdecode surrogate escapes
    verdict: str | None = None
    detail: str = ""


def _special(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _link(root: Path, path: Path, rel: str) -> Entry:
    """The verdict on a symbolic link: never read, whatever it points to."""
    target = os.path.realpath(path)
    base = str(root)
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        return Entry(path, rel, "unsafe_link",
                     f"link to '{clean_text(target)}' leaves the source folder: not read")
    if not os.path.exists(target):
        return Entry(path, rel, "broken_link", "link to a missing target (or a link loop)")
    inside = PurePosixPath(os.path.relpath(target, root)).as_posix()
    return Entry(path, rel, "duplicate_link",
                 f"link to '{clean_text(inside)}', which is read (or rejected) under its own "
                 "name; links are never read twice")


def walk(folder: Path) -> list[Entry]:
    """Everything under `folder`, sorted by relative path. Links are not followed; hidden
    files and folders, special files and unreadable folders are verdicts. Paths stay as given
    (relative paths stay relative: rejects must not depend on where the project lives)."""
    root = folder.resolve()  # only to tell where links lead
    found: list[Entry] = []
    stack: list[tuple[Path, str]] = [(folder, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except FileNotFoundError:
            found.append(Entry(folder, prefix.rstrip("/"), "vanished",
                               "folder disappeared while it was being read"))
            continue
        except OSError as exc:
            found.append(Entry(folder, prefix.rstrip("/") or ".", "unreadable",
                               f"folder not readable: {exc.strerror or exc}"))
            continue
        for item in items:
            rel, path = prefix + item.name, Path(item.path)
            try:
                if item.name.startswith("."):
                    what = "folder" if item.is_dir(follow_symlinks=False) else "file"
                    found.append(Entry(path, rel, f"hidden_{what}",
                                       f"hidden {what} (name starts with '.'): not read"))
                elif item.is_symlink():
                    found.append(_link(root, path, rel))
                elif item.is_dir(follow_symlinks=False):
                    stack.append((path, rel + "/"))
                elif item.is_file(follow_symlinks=False):
                    found.append(Entry(path, rel))
                else:
                    mode = item.stat(follow_symlinks=False).st_mode
                    found.append(Entry(path, rel, "special_file", f"{_special(mode)}: not read"))
            except FileNotFoundError:
                found.append(Entry(path, rel, "vanished", "disappeared while it was listed"))
            except OSError as exc:
                found.append(Entry(path, rel, "unreadable", str(exc)))
    return sorted(found, key=lambda e: e.rel)


def wav_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None. libsndfile silently shortens such files."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not RIFF/WAVE (or RF64/W64): nothing to check here
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streamed writers leave the size unset
                    return None
                if pos + 8 + chunk_size > size:
                    return (f"data chunk declares {chunk_size} bytes, file holds "
                            f"{size - pos - 8}")
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return "no complete 'data' chunk"


def _last_frame_missing(path: Path, info: AudioInfo) -> str | None:
    """Why the header's last frame cannot be read, or None. A cut FLAC (or AIFF, CAF...)
    keeps its header's length; seeking there is cheap and fails when the data is not there."""
    try:
        with sf.SoundFile(fs_name(path)) as f:
            f.seek(info.frames - 1)
            got = len(f.read(1, dtype="float32", always_2d=True))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError
        return f"cannot reach the last of the {info.frames} frames its header declares: {exc}"
    if got != 1:
        return f"ends before the {info.frames} frames its header declares"
    return None


def check_audio(path: Path) -> AudioInfo:
    """probe() plus truncation checks; raises AudioError with a reason code."""
    info = probe(path)
    why = wav_truncation(path) or _last_frame_missing(path, info)
    if why:
        raise AudioError("truncated", f"{path}: {why}")
    return info


def _detect(root: Path, kind: str) -> Path | None:
    if kind == "none":
        return None
    if kind != "auto":
        path = root / TRANSCRIPT_FILES[kind]
        if not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: transcripts: {kind} was asked for, but this file "
                                    "does not exist")
        return path
    for name in TRANSCRIPT_FILES.values():
        if os.path.lexists(root / name):
            return root / name
    return None


def _match_keys(rel: str) -> list[str]:
    """Transcript keys a file may be listed under: its relative path, then its bare name
    (LJSpeech lists 'LJ001-0001' for wavs/LJ001-0001.wav). A name that is not UTF-8 is also
    tried as cp1252 (an old archive's transcript in the same encoding)."""
    raw = os.fsencode(rel)
    try:
        texts = [raw.decode("utf-8")]
    except UnicodeDecodeError:
        texts = [raw.decode("cp1252", "replace"), raw.decode("latin-1")]
    keys = [transcripts.key(t) for t in texts]
    keys += [transcripts.key(PurePosixPath(t).name) for t in texts]
    return list(dict.fromkeys(keys))


class _Folder:
    """The state of one prepare() run: ids taken, transcript entries matched."""

    def __init__(self, src: LocalSource | UrlSource, target: Path, table: Transcripts,
                 result: SourceResult) -> None:
        self.src, self.target, self.table, self.result = src, target, table, result
        self.taken: set[str] = set()
        self.matched: set[str] = set()
        self.untranscribed: list[str] = []

    def use(self, entry: Entry) -> None:
        """Check one regular file and copy or decode it into the target; raises AudioError."""
        path, rel = entry.path, entry.rel
        head = media.read_head(path)
        if not head:
            raise AudioError("empty", f"{path} is a zero-length file")
        kind = media.sniff(head)
        ext = PurePosixPath(rel).suffix.lower()
        key = self.table.find(_match_keys(rel)) if self.table.entries else None
        if key is not None:
            self.matched.add(key)  # a rejected file's line is accounted for by its reject
        stem = safe_id(str(PurePosixPath(rel).with_suffix("")), self.taken)
        rid = f"{safe_id(self.src.name)}_{stem}"
        if kind in media.SNDFILE_KINDS or (kind is None and ext in media.SNDFILE_SUFFIXES):
            try:
                info = check_audio(path)
            except AudioError as exc:
                if exc.reason not in ("unreadable", "unknown_length") \
                        or kind not in media.FFMPEG_FALLBACK:
                    raise
                try:  # a codec libsndfile lacks (MP3 or AAC in a WAV), a streamed FLAC?
                    extra = self._decode(path, rid, kind)
                except AudioError as also:
                    if also.reason != "undecodable":
                        raise
                    raise AudioError(exc.reason, f"{exc.detail}; FFmpeg: {also.detail}") from None
            else:
                dest = self.target / f"{rid}{media.suffix_for(kind, info.format)}"
                try:
                    shutil.copyfile(path, dest)
                except BaseException:  # vanished or unreadable part-way: leave no half copy
                    dest.unlink(missing_ok=True)
                    raise
                extra = {"dest": dest, "channels": info.channels, "subtype": info.subtype,
                         "format": info.format}
        elif kind in media.FFMPEG_KINDS:
            extra = self._decode(path, rid, kind)
        elif kind in media.ARCHIVE_KINDS:
            raise AudioError("unsupported_format", f"{path}: a {kind} archive; habla unpacks "
                             "archives only from url sources: unpack it into the folder")
        else:
            raise AudioError("unsupported_format", f"{path}: '{ext or 'no extension'}' file, "
                             "not audio habla recognises (its formats: habla.sources.media."
                             "SUPPORTED_FORMATS)")
        self._record(rel, rid, key, extra)

    def _decode(self, path: Path, rid: str, kind: str) -> dict:
        dest = self.target / f"{rid}.flac"
        got = media.decode(path, dest, kind)
        if got.format != "FLAC":
            dest = dest.rename(dest.with_suffix(".wav"))
        return {"dest": dest, "channels": got.channels, "subtype": got.subtype,
                "format": got.format, "decoded_from": f"{got.container}/{got.codec}"}

    def _record(self, rel: str, rid: str, key: str | None, extra: dict) -> None:
        dest = extra.pop("dest")
        try:
            info = probe(dest)  # what later stages will read
            found = self.table.entries.get(key) if key is not None else None
            rec = Record(
                id=rid, audio=dest.as_posix(), duration=round(info.duration, 5),
                sample_rate=info.sample_rate,
                speaker=(found and found.speaker) or self.src.speaker,
                language=(found and found.language) or self.src.language,
                text=found.text if found else None, source=self.src.name,
                sha256=sha256_file(dest), extra={**name_fields(rel), **extra},
            )
            rec.model_dump_json()  # fails here, as this file's reject, not in write_manifest
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        if found is None and self.table.entries:
            self.untranscribed.append(clean_text(rel))
        self.result.records.append(rec)


def _transcript_file(folder: Path, root: Path, path: Path) -> Path | None:
    """The transcript file to read: a regular file, or a link's target inside the folder. A
    link that leaves the folder, or anything else, is not read (the walk rejects it)."""
    if path.is_symlink():
        if _link(root, path, path.name).verdict != "duplicate_link":
            return None
        path = folder / os.path.relpath(os.path.realpath(path), root)
    return path if path.is_file() and not path.is_symlink() else None


def prepare(src: LocalSource | UrlSource, folder: Path, target: Path) -> SourceResult:
    """Use or reject every file under `folder`; rebuilds `target`."""
    if not folder.is_dir():
        raise StageError(f"source '{src.name}': folder '{folder}' does not exist "
                         f"(download.sources[].path, relative to the project folder)")
    root = folder.resolve()
    result = SourceResult(src.name)
    chosen = _detect(folder, src.transcripts)
    metadata = _transcript_file(folder, root, chosen) if chosen else None
    if chosen is not None and metadata is None:
        why = (f"{chosen.name} is not a regular file in the folder (a folder, or a link that "
               "leaves it)")
        if src.transcripts != "auto":
            raise StageError(f"source '{src.name}': transcripts: {src.transcripts} was asked "
                             f"for, but {why}")
        result.warnings.append(f"{why}: no transcripts are read")
    table = Transcripts()
    used: set[str] = set()  # relative paths of the transcript file (and a link's target)
    if metadata is not None:
        table = transcripts.read(metadata, result.rejects, result.warnings)
        result.transcripts = {"file": chosen.name, "lines": table.lines,
                              "fallback_lines": table.fallback_lines}
        used = {chosen.name, PurePosixPath(os.path.relpath(metadata, folder)).as_posix()}
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)

    state = _Folder(src, target, table, result)
    for entry in walk(folder):
        if entry.rel in used:
            continue  # the transcript file (or a link's target) is used, not an audio file
        result.files_in += 1
        if entry.verdict is not None:
            result.rejects.add(entry.rel, entry.verdict, entry.detail)
            continue
        if entry.rel in TRANSCRIPT_FILES.values():
            result.rejects.add(entry.rel, "unused_transcripts",
                               f"transcripts: {src.transcripts}; "
                               + (f"{chosen.name} is read" if metadata else "none are read"))
            continue
        try:
            state.use(entry)
        except AudioError as exc:
            result.rejects.add(entry.rel, exc.reason, exc.detail)
        except FileNotFoundError as exc:
            result.rejects.add(entry.rel, "vanished", f"disappeared while being read: {exc}")
        except PermissionError as exc:
            result.rejects.add(entry.rel, "unreadable", f"permission denied: {exc}")
        except Exception as exc:  # one file must never stop the source: reject it, go on
            log.exception("%s: unexpected error", clean_text(entry.rel))
            result.rejects.add(entry.rel, "internal_error", f"{type(exc).__name__}: {exc}")
    if state.untranscribed:
        names = state.untranscribed
        result.warnings.append(
            f"{len(names)} audio file(s) have no line in {chosen.name}, kept without "
            f"text: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    for key in sorted(set(table.entries) - state.matched):
        entry = table.entries[key]
        result.rejects.add(entry.where, "missing_audio",
                           f"names audio file '{key}', which is not in the folder")
    return result
