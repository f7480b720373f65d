"""An http(s) audio file or archive (zip, tar, tar.gz/bz2/xz) with a required sha256.

`fetch` downloads into data/cache/downloads/ (resumable through Range requests into a `.part`
file; a checksum mismatch deletes it and stops); `prepare` extracts archives safely (no absolute
paths, no `..`, no links out of the target: such members become rejects) and then reads the
files like a local folder.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from habla.config import UrlSource
from habla.errors import StageError
from habla.manifest import Rejects, sha256_file
from habla.sources.common import SourceResult
from habla.sources.local import prepare as prepare_folder

log = logging.getLogger("habla.download")

CHUNK = 1 << 20
TIMEOUT_S = 60
_COMPLETED = ".completed"


def _suffix(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    for double in (".tar.gz", ".tar.bz2", ".tar.xz"):
        if name.lower().endswith(double):
            return double
    return PurePosixPath(name).suffix.lower()


def download(url: str, sha256: str, dest: Path) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify sha256; idempotent."""
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
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
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
        raise StageError(f"{url}: sha256 mismatch: expected {sha256}, got {got} "
                           f"({size} bytes); the partial file was deleted")
    part.replace(dest)
    return dest


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


def extract_zip(archive: Path, dest: Path, rejects: Rejects, name: str) -> int:
    count = 0
    with zipfile.ZipFile(archive) as zf:
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
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
            count += 1
    return count


def extract_tar(archive: Path, dest: Path, rejects: Rejects, name: str) -> int:
    count = 0
    with tarfile.open(archive) as tf:
        for member in tf:
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
            try:
                # the 'data' filter re-checks paths and links and drops odd permissions
                tf.extract(member, dest, filter="data")
            except (tarfile.FilterError, OSError, KeyError) as exc:
                rejects.add(item, "unsafe_member", str(exc))
                continue
            count += member.isfile()
    return count


def unpack(download_path: Path, dest: Path, name: str) -> tuple[Rejects, int]:
    """Extract (or place) the download into `dest` once; later calls reuse it and its rejects.

    `name` (the URL's file name) is what rejects call the archive.
    """
    marker = dest / _COMPLETED
    if marker.exists():
        state = json.loads(marker.read_text(encoding="utf-8"))
        rejects = Rejects("download")
        for r in state["rejects"]:
            rejects.add(r["item"], r["reason"], r["detail"])
        return rejects, state["files"]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rejects = Rejects("download")
    if zipfile.is_zipfile(download_path):
        files = extract_zip(download_path, dest, rejects, name)
    elif tarfile.is_tarfile(download_path):
        files = extract_tar(download_path, dest, rejects, name)
    else:  # a single audio file
        shutil.copyfile(download_path, dest / name)
        files = 1
    marker.write_text(json.dumps({"files": files,
                                  "rejects": [r.model_dump() for r in rejects.items]}))
    return rejects, files


def _content_root(folder: Path) -> Path:
    """Archives usually wrap everything in one folder (LJSpeech-1.1/): read from inside it."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return _content_root(entries[0])
    return folder


def prepare(src: UrlSource, download_path: Path, target: Path) -> SourceResult:
    """Unpack the verified download and read it as a local folder into `target`."""
    extracted = download_path.with_name(download_path.name + ".d")
    name = PurePosixPath(unquote(urlparse(src.url).path)).name or download_path.name
    rejects, _ = unpack(download_path, extracted, name)
    result = prepare_folder(src, _content_root(extracted), target)
    result.rejects.extend(rejects.items)
    result.files_in += len(rejects)
    return result
