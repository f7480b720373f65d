"""An http(s) audio file or archive (zip, tar, tar.gz/bz2/xz, a single gzip/bzip2/xz file)
with a required sha256.

`fetch` downloads into data/cache/downloads/ (resumable through Range requests into a `.part`
file; a checksum mismatch deletes it and stops) and keeps the server's file name
(Content-Disposition) beside it; `prepare` recognises the download by its content, not by the
URL (`.../download` is fine), extracts archives safely (no absolute paths, no `..`, no links out
of the target, no duplicate members, a bound on unpacked size: such members become rejects) and
then reads the files like a local folder.
"""

from __future__ import annotations

import bz2
import email.message
import gzip
import http.client
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from habla import atomic
from habla.config import UrlSource
from habla.errors import StageError
from habla.manifest import Reject, Rejects, sha256_file
from habla.sources.common import SourceResult
from habla.sources.local import prepare as prepare_folder
from habla.sources.media import read_head, sniff

log = logging.getLogger("habla.download")

CHUNK = 1 << 20
TIMEOUT_S = 60
# Unpacking stops past max(MIN_UNPACK_BYTES, UNPACK_RATIO x the download's size): a zip or
# gzip bomb fills the disk, real audio archives unpack to a few times their size.
MIN_UNPACK_BYTES = 1 << 30
UNPACK_RATIO = 100
MAX_NAME_BYTES = 200  # file systems allow 255 bytes per name; room for suffixes
_DECOMPRESS = {"gzip": (gzip.open, (".gz", ".gzip")), "bzip2": (bz2.open, (".bz2",)),
               "xz": (lzma.open, (".xz",))}


def _suffix(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    for double in (".tar.gz", ".tar.bz2", ".tar.xz"):
        if name.lower().endswith(double):
            return double
    return PurePosixPath(name).suffix.lower()


def safe_name(name: str | None) -> str | None:
    """A server- or URL-given file name as one harmless path component, or None."""
    if not name:
        return None
    name = PurePosixPath(name.replace("\\", "/")).name
    name = re.sub(r"[\x00-\x1f\x7f]", "_", name).strip().lstrip(".")
    while len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:-1] + dot + ext) if dot and len(ext) < 16 and stem else name[:-1]
    return name or None


def disposition_name(value: str | None) -> str | None:
    """The file name in a Content-Disposition header: `filename*` (RFC 6266/5987, any
    charset) over `filename`."""
    if not value:
        return None
    star = re.search(r"filename\*\s*=\s*([^;]+)", value, re.IGNORECASE)
    if star:
        charset, _, rest = star.group(1).strip().strip('"').partition("'")
        encoded = rest.partition("'")[2]
        try:
            name = unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            name = None
        if name:
            return safe_name(name)
    msg = email.message.Message()
    msg["content-disposition"] = value
    plain = msg.get_filename()
    return safe_name(plain if isinstance(plain, str) else None)


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def download(url: str, sha256: str, dest: Path) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify sha256; idempotent. The server's
    file name (Content-Disposition), if any, is kept in `<dest>.json` (`download_name`)."""
    if urlparse(url).scheme not in ("http", "https"):
        raise StageError(f"{url}: only http(s) URLs are supported")
    sha256 = sha256.lower()
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "habla"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    part_meta = _meta_path(part)  # the served name, kept across a resumed download
    served_name = None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            served_name = disposition_name(response.headers.get("Content-Disposition"))
            if served_name:
                atomic.write_text(part_meta, json.dumps({"filename": served_name}))
            if have and response.status != 206:
                log.info("%s: server ignored the range request; starting over", url)
                have = 0
            elif have:
                log.info("%s: resuming after %d bytes", url, have)
            expected = response.headers.get("Content-Length")
            written = 0
            with open(part, "ab" if have else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    written += len(block)
            # http.client returns b"" when a connection drops early in read(n): check the length
            if expected is not None and written < int(expected):
                raise ConnectionError(f"connection closed after {written} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:  # 416: nothing left to send, the part is complete
            raise StageError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        got = part.stat().st_size if part.exists() else 0
        raise StageError(f"{url}: download interrupted after {got} bytes ({exc}); run again "
                           f"to resume from {part}") from None
    got = sha256_file(part)
    if got != sha256:
        size = part.stat().st_size
        part.unlink()
        part_meta.unlink(missing_ok=True)
        raise StageError(f"{url}: sha256 mismatch: expected {sha256}, got {got} "
                           f"({size} bytes); the partial file was deleted")
    if not served_name and part_meta.exists():
        served_name = json.loads(part_meta.read_text("utf-8")).get("filename")
    part.replace(dest)
    atomic.write_text(_meta_path(dest), json.dumps({"url": url, "filename": served_name}))
    part_meta.unlink(missing_ok=True)
    return dest


def download_name(download_path: Path, url: str) -> str:
    """The name to give the download: the server's (Content-Disposition), else the URL's last
    path segment, else the cache file's name."""
    served = None
    try:
        served = json.loads(_meta_path(download_path).read_text("utf-8")).get("filename")
    except (OSError, ValueError, AttributeError):
        pass
    from_url = safe_name(PurePosixPath(unquote(urlparse(url).path)).name)
    return safe_name(served) or from_url or download_path.name


def fetch(src: UrlSource, cache: Path) -> Path:
    """The verified download for `src`, named by its checksum so reruns reuse it."""
    return download(src.url, src.sha256, cache / f"{src.sha256.lower()}{_suffix(src.url)}")


def _unsafe_name(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        return "absolute path"
    if ".." in path.parts:
        return "'..' in path"
    return None


def _inside(root: Path, candidate: Path) -> bool:
    root = root.resolve()
    return candidate.resolve() == root or root in candidate.resolve().parents


class _Budget:
    """Bytes left to unpack; members past it are rejected as `too_large`."""

    def __init__(self, archive: Path) -> None:
        self.left = max(MIN_UNPACK_BYTES, UNPACK_RATIO * archive.stat().st_size)
        self.limit = self.left

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True

    def why(self) -> str:
        return (f"unpacking would pass {self.limit} bytes (max({MIN_UNPACK_BYTES}, "
                f"{UNPACK_RATIO} x the download)): an archive bomb?")


def extract_zip(archive: Path, dest: Path, rejects: Rejects, name: str) -> int:
    count = 0
    budget = _Budget(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise StageError(f"{name}: not a readable zip archive: {exc}") from None
    with zf:
        for info in zf.infolist():
            item = f"{name}:{info.filename}"
            why = _unsafe_name(info.filename)
            if why:
                rejects.add(item, "unsafe_path", why)
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                rejects.add(item, "unsafe_link", "symbolic links are not extracted from zips")
                continue
            out = dest / info.filename
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            if os.path.lexists(out):
                rejects.add(item, "duplicate_member", "a member of the same name came first")
                continue
            if not budget.take(info.file_size):
                rejects.add(item, "too_large", budget.why())
                continue
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK)
            except (zipfile.BadZipFile, RuntimeError, OSError, ValueError, EOFError,
                    NotImplementedError) as exc:  # CRC error, encrypted, bad compression
                if out.is_file():
                    out.unlink()
                rejects.add(item, "bad_member", f"{type(exc).__name__}: {exc}")
                continue
            count += 1
    return count


def extract_tar(archive: Path, dest: Path, rejects: Rejects, name: str) -> int:
    count = 0
    budget = _Budget(archive)
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StageError(f"{name}: not a readable tar archive: {exc}") from None
    with tf:
        members = iter(tf)
        while True:
            try:
                member = next(members)
            except StopIteration:
                break
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                rejects.add(name, "bad_archive", f"damaged after {count} file(s); the rest is "
                            f"lost: {type(exc).__name__}: {exc}")
                break
            item = f"{name}:{member.name}"
            why = _unsafe_name(member.name)
            if why:
                rejects.add(item, "unsafe_path", why)
                continue
            if member.issym() or member.islnk():
                base = dest / member.name
                # symlinks resolve from their own folder, hard links from the archive root
                target = (base.parent if member.issym() else dest) / member.linkname
                if _unsafe_name(member.linkname) or not _inside(dest, target):
                    rejects.add(item, "unsafe_link", f"link to '{member.linkname}' leaves the "
                                "extraction folder")
                    continue
            elif not (member.isfile() or member.isdir()):
                rejects.add(item, "special_file", "devices and fifos are not extracted")
                continue
            if not member.isdir() and os.path.lexists(dest / member.name):
                rejects.add(item, "duplicate_member", "a member of the same name came first")
                continue
            if member.isfile() and not budget.take(member.size):
                rejects.add(item, "too_large", budget.why())
                continue
            try:
                # the 'data' filter re-checks paths and links and drops odd permissions
                tf.extract(member, dest, filter="data")
            except (tarfile.TarError, OSError, KeyError, EOFError, zlib.error) as exc:
                rejects.add(item, "unsafe_member", f"{type(exc).__name__}: {exc}")
                continue
            count += member.isfile()
    return count


def decompress(path: Path, kind: str, dest: Path, rejects: Rejects, name: str) -> int:
    """A single gzip/bzip2/xz-compressed file into `dest` (its name without the compression
    suffix); returns 1, or 0 with a reject."""
    opener, suffixes = _DECOMPRESS[kind]
    inner = next((name[: -len(s)] for s in suffixes if name.lower().endswith(s)), name)
    out = dest / (safe_name(inner) or "download")
    budget = _Budget(path)
    try:
        with opener(path, "rb") as fin, open(out, "wb") as fout:
            while block := fin.read(CHUNK):
                if not budget.take(len(block)):
                    out.unlink()
                    rejects.add(name, "too_large", budget.why())
                    return 0
                fout.write(block)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        out.unlink(missing_ok=True)
        rejects.add(name, "bad_archive", f"{kind}: {type(exc).__name__}: {exc}")
        return 0
    return 1


def unpack(download_path: Path, dest: Path, name: str) -> tuple[Rejects, int]:
    """Extract (or place) the download into `dest` once; later calls reuse it and its rejects.

    The kind is read from the content (zip, tar in any compression, a single gzip/bzip2/xz
    file, else one plain file); `name` (the served or URL file name) names it in rejects.
    """
    marker = dest.with_name(dest.name + ".completed")  # beside, not inside: it is no input
    if marker.exists() and dest.is_dir():
        state = json.loads(marker.read_text(encoding="utf-8"))
        rejects = Rejects("download")
        rejects.extend(Reject.model_validate(r) for r in state["rejects"])
        return rejects, state["files"]
    marker.unlink(missing_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rejects = Rejects("download")
    kind = sniff(read_head(download_path))
    if kind == "zip" or (kind is None and zipfile.is_zipfile(download_path)):
        files = extract_zip(download_path, dest, rejects, name)
    elif kind in ("tar", "gzip", "bzip2", "xz", None) and tarfile.is_tarfile(download_path):
        files = extract_tar(download_path, dest, rejects, name)
    elif kind in _DECOMPRESS:
        files = decompress(download_path, kind, dest, rejects, name)
    else:  # a single file (audio, or anything: the folder reader decides by content)
        shutil.copyfile(download_path, dest / (safe_name(name) or "download"))
        files = 1
    atomic.write_text(marker, json.dumps({"files": files, "rejects": [
        r.model_dump(exclude_none=True) for r in rejects.items]}))
    return rejects, files


def _content_root(folder: Path) -> Path:
    """Archives usually wrap everything in one folder (LJSpeech-1.1/): read from inside it."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return _content_root(entries[0])
    return folder


def prepare(src: UrlSource, download_path: Path, target: Path) -> SourceResult:
    """Unpack the verified download and read it as a local folder into `target`."""
    extracted = download_path.with_name(download_path.name + ".d")
    rejects, _ = unpack(download_path, extracted, download_name(download_path, src.url))
    result = prepare_folder(src, _content_root(extracted), target)
    result.rejects.extend(rejects.items)
    result.files_in += len(rejects)
    return result
