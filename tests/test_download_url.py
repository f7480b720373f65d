"""The url source against a loopback HTTP server: resume after a cut, checksum mismatch,
safe extraction of zip and tar archives (no `..`, no absolute paths, no links out), content
recognised without a file extension, Content-Disposition names, single compressed files."""

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from habla.config import UrlSource
from habla.errors import StageError
from habla.sources import url


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    headers_by_path: dict[str, dict[str, str]] = {}  # extra response headers per path
    cut_once: set[str] = set()  # paths whose first response stops half-way
    ranges: list[str] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def headers_for(self) -> dict[str, str]:
        return self.headers_by_path.get(self.path, {})

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            self.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        for key, value in self.headers_for().items():
            self.send_header(key, value)
        self.end_headers()
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Files)  # loopback only
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Files.files, _Files.cut_once, _Files.ranges = {}, set(), []
    _Files.headers_by_path = {}
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _wav_bytes(seconds=0.2, rate=16000) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _src(address: str, data: bytes, **kw) -> UrlSource:
    return UrlSource(kind="url", name="web", url=address, sha256=_sha(data), **kw)


def test_download_resumes_after_a_cut_with_a_range_request(server, tmp_path):
    data = _wav_bytes(1.0)
    _Files.files["/voice.wav"] = data
    _Files.cut_once.add("/voice.wav")
    src = _src(f"{server}/voice.wav", data)
    with pytest.raises(StageError, match="interrupted.*run again"):
        url.fetch(src, tmp_path / "cache")
    part = next((tmp_path / "cache").glob("*.part"))
    assert 0 < part.stat().st_size < len(data)
    path = url.fetch(src, tmp_path / "cache")
    assert path.read_bytes() == data
    assert _Files.ranges == [f"bytes={len(data) // 2}-"]
    assert not part.exists()
    assert url.fetch(src, tmp_path / "cache") == path  # verified copy reused, no request
    assert len(_Files.ranges) == 1


def test_checksum_mismatch_deletes_the_partial_file_and_stops(server, tmp_path):
    _Files.files["/x.wav"] = _wav_bytes()
    src = _src(f"{server}/x.wav", b"something else")
    with pytest.raises(StageError, match="sha256 mismatch"):
        url.fetch(src, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_http_error_and_non_http_scheme_are_clear_errors(server, tmp_path):
    with pytest.raises(StageError, match="HTTP 404"):
        url.fetch(_src(f"{server}/missing.zip", b""), tmp_path / "cache")
    with pytest.raises(StageError, match="only http"):
        url.fetch(_src("ftp://example.org/a.zip", b""), tmp_path / "cache")


def _tar_with_traps(wav: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(name, data=b"", kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tf.addfile(info, io.BytesIO(data))
        add("corpus/metadata.csv", b"uno|Uno.\ndos|Dos.\n")
        add("corpus/uno.wav", wav)
        add("corpus/dos.wav", wav)
        add("../evil.wav", wav)
        add("/etc/evil.wav", wav)
        add("corpus/out.wav", kind=tarfile.SYMTYPE, link="../../outside.wav")
        add("corpus/hard.wav", kind=tarfile.LNKTYPE, link="../outside.wav")
        add("corpus/inside.wav", kind=tarfile.SYMTYPE, link="uno.wav")
    return buf.getvalue()


def test_tar_archive_refuses_traversal_and_outward_links_and_extracts_the_rest(server,
                                                                                 tmp_path):
    wav = _wav_bytes()
    archive = _tar_with_traps(wav)
    _Files.files["/corpus.tar.gz"] = archive
    src = _src(f"{server}/corpus.tar.gz", archive)
    path = url.fetch(src, tmp_path / "cache")
    result = url.prepare(src, path, tmp_path / "raw" / "web")
    reasons = sorted((r.item, r.reason) for r in result.rejects.items)
    assert reasons == [
        ("corpus.tar.gz:../evil.wav", "unsafe_path"),
        ("corpus.tar.gz:/etc/evil.wav", "unsafe_path"),
        ("corpus.tar.gz:corpus/hard.wav", "unsafe_link"),
        ("corpus.tar.gz:corpus/out.wav", "unsafe_link"),
        # a link inside the archive's folder is extracted, but its target is read only once
        ("inside.wav", "duplicate_link")]
    assert "uno.wav" in next(r.detail for r in result.rejects.items if r.item == "inside.wav")
    assert not (tmp_path / "cache" / "evil.wav").exists() and not (tmp_path / "evil.wav").exists()
    texts = sorted((r.extra["original"], r.text) for r in result.records)
    # read from inside the archive's single top folder, where metadata.csv is
    assert texts == [("dos.wav", "Dos."), ("uno.wav", "Uno.")]
    again = url.prepare(src, path, tmp_path / "raw" / "web")  # idempotent, rejects kept
    assert len(again.rejects) == len(result.rejects) and len(again.records) == 2


def test_zip_archive_refuses_dotdot_members_and_keeps_the_rest(server, tmp_path):
    wav = _wav_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("clips/a.wav", wav)
        zf.writestr("clips/b.wav", wav)
        zf.writestr("clips/../../escape.wav", wav)
    archive = buf.getvalue()
    _Files.files["/set.zip"] = archive
    src = _src(f"{server}/set.zip", archive, transcripts="none")
    result = url.prepare(src, url.fetch(src, tmp_path / "cache"), tmp_path / "raw" / "web")
    assert [(r.reason, r.item) for r in result.rejects.items] == [
        ("unsafe_path", "set.zip:clips/../../escape.wav")]
    assert sorted(r.extra["original"] for r in result.records) == ["a.wav", "b.wav"]
    assert not (tmp_path / "escape.wav").exists()


def _prepare(src, tmp_path):
    return url.prepare(src, url.fetch(src, tmp_path / "cache"), tmp_path / "raw" / "web")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("body", ["wav", "zip", "tar.xz"])
def test_a_url_without_extension_is_recognised_by_its_content(server, tmp_path, body):
    wav = _wav_bytes()
    if body == "zip":
        data = _zip({"set/a.wav": wav, "set/b.wav": wav})
    elif body == "tar.xz":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as tf:
            for name in ("a.wav", "b.wav"):
                info = tarfile.TarInfo(name)
                info.size = len(wav)
                tf.addfile(info, io.BytesIO(wav))
        data = buf.getvalue()
    else:
        data = wav
    _Files.files["/files/12345/download"] = data
    result = _prepare(_src(f"{server}/files/12345/download", data, transcripts="none"),
                      tmp_path)
    assert len(result.records) == (1 if body == "wav" else 2) and len(result.rejects) == 0
    assert all(r.audio.endswith(".wav") for r in result.records)


def test_content_disposition_names_the_download(server, tmp_path):
    wav = _wav_bytes()
    flac = io.BytesIO()
    sf.write(flac, sf.read(io.BytesIO(wav))[0], 16000, format="FLAC")
    data = flac.getvalue()
    _Files.files["/get?id=7"] = data
    _Files.headers_by_path["/get?id=7"] = {
        "Content-Disposition": "attachment; filename=\"fallback.flac\"; "
                               "filename*=UTF-8''grabaci%C3%B3n%20n%C2%BA1.flac"}
    (rec,) = _prepare(_src(f"{server}/get?id=7", data), tmp_path).records
    assert rec.extra["original"] == "grabación nº1.flac" and rec.audio.endswith(".flac")


@pytest.mark.parametrize(("header", "name"), [
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ('attachment; filename=".bashrc"', "bashrc"),
    ("attachment; filename*=iso-8859-1'es'caf%E9.wav", "café.wav"),
    ('attachment; filename="a\\b.wav"', "b.wav"),
    ("attachment; filename*=bogus''x%FF.wav", "xÿ.wav"), ("inline", None), (None, None),
])
def test_served_names_are_reduced_to_one_harmless_component(header, name):
    assert url.disposition_name(header) == name


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_a_single_compressed_file_is_decompressed(server, tmp_path, kind):
    wav = _wav_bytes()
    data = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](wav)
    _Files.files[f"/voice.wav.{kind}"] = data
    (rec,) = _prepare(_src(f"{server}/voice.wav.{kind}", data), tmp_path).records
    assert rec.extra["original"] == "voice.wav" and rec.sha256 == _sha(wav)


def test_damaged_compression_and_archive_bombs_are_rejects(server, tmp_path, monkeypatch):
    monkeypatch.setattr(url, "MIN_UNPACK_BYTES", 10_000)
    monkeypatch.setattr(url, "UNPACK_RATIO", 1)
    wav = _wav_bytes()
    bomb = _zip({"a.wav": wav, "zeros.bin": bytes(10_000_000)})  # compresses ~1000x
    _Files.files["/bomb.zip"] = bomb
    result = _prepare(_src(f"{server}/bomb.zip", bomb), tmp_path / "1")
    assert [(r.item, r.reason) for r in result.rejects.items] == [
        ("bomb.zip:zeros.bin", "too_large")]
    assert len(result.records) == 1
    broken = gzip.compress(wav)[:-30]
    _Files.files["/cut.wav.gz"] = broken
    result = _prepare(_src(f"{server}/cut.wav.gz", broken), tmp_path / "2")
    assert [(r.item, r.reason) for r in result.rejects.items] == [("cut.wav.gz", "bad_archive")]


def test_duplicate_zip_members_keep_the_first(server, tmp_path):
    wav, other = _wav_bytes(0.2), _wav_bytes(0.3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.wav", wav)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("a.wav", other)
    data = buf.getvalue()
    _Files.files["/dup.zip"] = data
    result = _prepare(_src(f"{server}/dup.zip", data), tmp_path)
    assert [(r.item, r.reason) for r in result.rejects.items] == [
        ("dup.zip:a.wav", "duplicate_member")]
    assert [r.sha256 for r in result.records] == [_sha(wav)]
