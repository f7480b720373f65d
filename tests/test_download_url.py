"""The url source against a loopback HTTP server: resume after a cut, checksum mismatch,
safe extraction of zip and tar archives (no `..`, no absolute paths, no links out)."""

import hashlib
import io
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
    cut_once: set[str] = set()  # paths whose first response stops half-way
    ranges: list[str] = []

    def log_message(self, *args):  # keep test output quiet
        pass

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
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    _Files.files, _Files.cut_once, _Files.ranges = {}, set(), []
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
    reasons = sorted((r.item.split(":", 1)[1], r.reason) for r in result.rejects.items)
    assert reasons == [("../evil.wav", "unsafe_path"), ("/etc/evil.wav", "unsafe_path"),
                       ("corpus/hard.wav", "unsafe_link"), ("corpus/out.wav", "unsafe_link")]
    assert not (tmp_path / "cache" / "evil.wav").exists() and not (tmp_path / "evil.wav").exists()
    texts = sorted((r.extra["original"], r.text) for r in result.records)
    # read from inside the archive's single top folder, where metadata.csv is
    assert texts == [("dos.wav", "Dos."), ("inside.wav", None), ("uno.wav", "Uno.")]
    again = url.prepare(src, path, tmp_path / "raw" / "web")  # idempotent, rejects kept
    assert len(again.rejects) == len(result.rejects) and len(again.records) == 3


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
