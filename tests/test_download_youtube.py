"""The youtube source against a loopback server through yt-dlp's generic extractor: audio as
served, decoded with PyAV (no system FFmpeg), metadata in the manifest, playlists, one failing
video among good ones, resume of a cut download, and reruns that need no network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from media_server import MediaServer, m4a, rss

from habla.config import YoutubeSource
from habla.errors import StageError
from habla.sources import youtube

pytest.importorskip("yt_dlp", reason=f"needs yt-dlp: {youtube.INSTALL}")

RATE = 24000


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def server():
    with MediaServer() as srv:
        srv.files["/talk.m4a"] = m4a(_tone(2.0, 220), RATE)
        srv.files["/other.m4a"] = m4a(_tone(1.5, 330), RATE)
        yield srv


def _src(*urls: str, **kw) -> YoutubeSource:
    return YoutubeSource(kind="youtube", name="yt", urls=list(urls), speaker="ana", **kw)


def _run(src, tmp_path):
    fetched = youtube.fetch(src, tmp_path / "cache")
    return youtube.prepare(src, fetched, tmp_path / "raw" / src.name)


def test_a_video_becomes_a_flac_recording_with_its_metadata(server, tmp_path):
    result = _run(_src(server.url("/talk.m4a")), tmp_path)
    assert len(result.records) == 1 and len(result.rejects) == 0
    rec = result.records[0]
    data, rate = sf.read(rec.audio)
    assert rec.audio.endswith(".flac") and rate == RATE == rec.sample_rate
    assert abs(rec.duration - 2.0) < 0.1 and abs(len(data) / rate - rec.duration) < 1e-3
    assert np.abs(data).max() > 0.2  # the tone, not silence
    video = rec.extra["video"]
    assert video["id"] == "talk" and video["title"] == "talk"
    assert video["webpage_url"] == server.url("/talk.m4a") and video["extractor"] == "generic"
    assert rec.speaker == "ana" and rec.language == "es" and rec.text is None
    assert rec.extra["codec"] == "aac"


def test_a_failing_video_is_rejected_with_its_reason_and_the_others_proceed(server, tmp_path):
    result = _run(_src(server.url("/missing.m4a"), server.url("/talk.m4a")), tmp_path)
    assert [r.extra["video"]["id"] for r in result.records] == ["talk"]
    assert [(r.item, r.reason) for r in result.rejects.items] == [
        (server.url("/missing.m4a"), "extract_failed")]
    assert "404" in result.rejects.items[0].detail


def test_a_playlist_gives_one_recording_per_entry_with_the_playlist_titles(server, tmp_path):
    server.files["/feed.xml"] = rss("Charlas", [
        ("ep1", "Primera charla", server.url("/talk.m4a")),
        ("ep2", "Segunda charla", server.url("/other.m4a"))])
    result = _run(_src(server.url("/feed.xml")), tmp_path)
    titles = sorted(r.extra["video"]["title"] for r in result.records)
    assert titles == ["Primera charla", "Segunda charla"]
    assert sorted(r.extra["video"]["id"] for r in result.records) == ["ep1", "ep2"]
    capped = _run(_src(server.url("/feed.xml"), max_videos=1), tmp_path / "capped")
    assert len(capped.records) == 1


def test_a_rerun_needs_no_network_and_gives_identical_files(server, tmp_path):
    src = _src(server.url("/talk.m4a"))
    first = _run(src, tmp_path)
    flac = open(first.records[0].audio, "rb").read()
    server.files.clear()  # the site is gone: only the cache can answer
    server.hits.clear()
    second = _run(src, tmp_path)
    assert server.hits == []
    assert [r.model_dump() for r in second.records] == [r.model_dump() for r in first.records]
    assert open(second.records[0].audio, "rb").read() == flac


def test_a_download_killed_half_way_resumes_from_its_part_file(server, tmp_path):
    src = _src(server.url("/talk.m4a"))
    media = tmp_path / "cache/youtube/media"
    media.mkdir(parents=True)
    whole = server.files["/talk.m4a"]
    have = len(whole) // 2
    (media / "talk.m4a.part").write_bytes(whole[:have])  # what a killed run leaves behind
    fetched = youtube.fetch(src, tmp_path / "cache")
    assert len(fetched.videos) == 1 and len(fetched.rejects) == 0
    assert ("/talk.m4a", f"bytes={have}-") in server.ranges
    assert fetched.videos[0].path.read_bytes() == whole
    assert not list(media.glob("*.part"))
    done = json.loads(next((tmp_path / "cache/youtube/done").glob("*.json")).read_text())
    assert done["meta"]["id"] == "talk" and done["bytes"] == len(whole)


def test_an_undecodable_download_is_a_reject_not_a_failed_stage(server, tmp_path):
    server.files["/broken.m4a"] = b"\x00\x00\x00\x18ftypM4A " + b"\x01" * 2000
    result = _run(_src(server.url("/broken.m4a"), server.url("/talk.m4a")), tmp_path)
    assert len(result.records) == 1
    assert [r.reason for r in result.rejects.items] == ["undecodable"]


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match="http"):
        _src("file:///etc/passwd")


def test_without_yt_dlp_the_error_names_the_install_command(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "yt_dlp", None)
    with pytest.raises(StageError, match=r"habla\[youtube\]"):
        youtube.fetch(_src("http://127.0.0.1:9/x.m4a"), tmp_path)
