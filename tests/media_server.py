"""A loopback HTTP server for media files, and the files to put on it (tests only).

`MediaServer` serves in-memory files on 127.0.0.1 at a free port, with Range requests (resume),
HEAD, and logs of the requests and ranges asked for.
`m4a` encodes a waveform as AAC in MP4 with PyAV, as a video site serves audio; `rss` writes a
podcast feed, which yt-dlp's generic extractor reads as a playlist.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

import numpy as np

TYPES = {".m4a": "audio/mp4", ".webm": "audio/webm", ".mp3": "audio/mpeg",
         ".xml": "application/rss+xml"}


class MediaServer:
    """`with MediaServer() as srv: srv.files["/a.m4a"] = data; url = srv.url("/a.m4a")`."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[tuple[str, str]] = []
        self.hits: list[str] = []  # paths asked for, HEAD and GET
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):  # noqa: N802 (http.server's naming)
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                server.hits.append(path)
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng := self.headers.get("Range"):
                    server.ranges.append((path, rng))
                    start = int(rng.removeprefix("bytes=").split("-")[0] or 0)
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                suffix = path[path.rfind("."):] if "." in path else ""
                self.send_header("Content-Type", TYPES.get(suffix, "application/octet-stream"))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if body:
                    self.wfile.write(data[start:])

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback, free port
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> MediaServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def m4a(wave: np.ndarray, rate: int) -> bytes:
    """Mono float audio as AAC in an MP4 container (what a video site's audio stream is)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.asarray(wave, np.float32)[None, :], format="flt",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def rss(title: str, items: list[tuple[str, str, str]]) -> bytes:
    """A podcast feed of (guid, title, absolute media URL) items."""
    body = "".join(
        f"<item><title>{escape(t)}</title><guid>{escape(g)}</guid>"
        f'<enclosure url="{escape(u)}" type="audio/mp4" length="1"/></item>'
        for g, t, u in items)
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>{escape(title)}</title><link>http://127.0.0.1/</link>{body}"
            f"</channel></rss>").encode()
