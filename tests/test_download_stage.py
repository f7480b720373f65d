"""The download stage end to end: several sources into one manifest, rejects and summary;
clear errors (not tracebacks) for repeated source names and a missing folder; a source that
fails as a whole costs only itself; names that are not UTF-8; files honour the umask."""

import json

import numpy as np
import pytest
import soundfile as sf
import yaml

from habla.config import load_params
from habla.errors import StageError
from habla.manifest import read_manifest, read_rejects
from habla.runner import run_stage
from habla.stages import download


def _params(tmp_path, sources):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "download": {"sources": sources, "workers": 1}}),
                    encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    sf.write(folder / "a.wav", np.full(4000, 0.1, np.float32), 16000)
    sf.write(folder / "b.wav", np.full(4000, 0.1, np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"")
    (folder / "metadata.csv").write_text("a|Hola.\n", encoding="utf-8")
    return tmp_path


def test_stage_writes_manifest_rejects_and_summary_for_every_source(project):
    stale = project / "data" / "raw" / "old" / "stale.wav"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left from an earlier run")
    params = load_params(_params(project, [
        {"kind": "synthetic", "name": "syn", "sentences": 2, "recording_seconds": [1, 30],
         "voices": [{"speaker": "s1", "voice": "es"}]},
        {"kind": "local", "name": "mine", "path": "mine"},
    ]))
    summary = download.run(params)
    assert not stale.exists()  # data/raw is rebuilt from scratch
    records = read_manifest("data/raw/manifest.jsonl")
    assert {r.source for r in records} == {"syn", "mine"}
    assert all((project / r.audio).exists() for r in records)
    texts = {r.extra.get("original"): r.text for r in records if r.source == "mine"}
    assert texts == {"a.wav": "Hola.", "b.wav": None}
    syn = [r for r in records if r.source == "syn"]
    truths = [json.loads((project / r.extra["truth"]).read_text("utf-8")) for r in syn]
    assert sum(len(t["sentences"]) for t in truths) == 2
    assert [(r.item, r.reason) for r in read_rejects("data/raw/rejects.jsonl")] == [
        ("broken.wav", "empty")]
    written = json.loads((project / "data/raw/summary.json").read_text("utf-8"))
    mine = written["sources"]["mine"]
    assert (mine["files_in"], mine["recordings"], mine["rejects"]) == (3, 2, {"empty": 1})
    assert any("b.wav" in w for w in mine["warnings"])
    assert summary["recordings"] == len(records) == 2 + len(syn)


def test_repeated_source_names_are_refused(project):
    params = load_params(_params(project, [{"kind": "local", "path": "mine"},
                                           {"kind": "local", "path": "mine"}]))
    with pytest.raises(StageError, match="unique.*local"):
        download.run(params)


def test_missing_local_folder_ends_with_a_message_not_a_traceback(project, capsys):
    path = _params(project, [{"kind": "local", "name": "gone", "path": "no/such/folder"}])
    with pytest.raises(SystemExit) as stop:
        run_stage("download", path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "no/such/folder" in err and "does not exist" in err and "Traceback" not in err


def test_a_failing_source_is_a_reject_and_the_other_sources_go_on(project, monkeypatch):
    from habla.sources import local

    prepare = local.prepare

    def broken_for(name):
        def run(src, folder, target):
            if src.name == name:
                target.mkdir(parents=True)
                (target / "half.wav").write_bytes(b"partial output")
                raise RuntimeError("bug in a source")
            return prepare(src, folder, target)
        return run

    monkeypatch.setattr(local, "prepare", broken_for("buggy"))
    sha = "0" * 64  # the url below serves nothing: the fetch fails as a whole
    params = load_params(_params(project, [
        {"kind": "url", "name": "web", "url": "http://127.0.0.1:9/x.zip", "sha256": sha},
        {"kind": "local", "name": "buggy", "path": "mine"},
        {"kind": "local", "name": "mine", "path": "mine"},
        {"kind": "local", "name": "gone", "path": "no/such/folder"},
    ]))
    summary = download.run(params)
    rejects = {r.item: r for r in read_rejects("data/raw/rejects.jsonl")}
    assert {k: r.reason for k, r in rejects.items()} == {
        "web": "source_failed", "buggy": "internal_error", "gone": "source_failed",
        "broken.wav": "empty"}
    assert "RuntimeError: bug in a source" in rejects["buggy"].detail
    assert "127.0.0.1:9" in rejects["web"].detail and "does not exist" in rejects["gone"].detail
    assert not (project / "data/raw/buggy").exists()  # a failed source leaves no partial files
    written = json.loads((project / "data/raw/summary.json").read_text("utf-8"))
    assert "bug in a source" in written["sources"]["buggy"]["failed"]
    assert written["sources"]["mine"]["recordings"] == 2 == summary["recordings"]
    assert {r.source for r in read_manifest("data/raw/manifest.jsonl")} == {"mine"}


def test_a_checksum_mismatch_stops_only_its_own_source(project):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Serve(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        params = load_params(_params(project, [
            {"kind": "url", "name": "web", "sha256": "1" * 64,
             "url": f"http://127.0.0.1:{srv.server_address[1]}/set.zip"},
            {"kind": "local", "name": "mine", "path": "mine"}]))
        download.run(params)
    finally:
        srv.shutdown()
        srv.server_close()
    (web,) = [r for r in read_rejects("data/raw/rejects.jsonl") if r.item == "web"]
    assert web.reason == "source_failed" and "sha256 mismatch" in web.detail
    assert len(read_manifest("data/raw/manifest.jsonl")) == 2


def test_when_every_source_fails_the_message_names_each_failure(project, capsys):
    path = _params(project, [{"kind": "local", "name": "gone", "path": "no/such/folder"},
                             {"kind": "local", "name": "also", "path": "nor/this"}])
    with pytest.raises(SystemExit):
        run_stage("download", path)
    err = capsys.readouterr().err
    assert "source 'gone'" in err and "source 'also'" in err and "nor/this" in err
    assert len(read_rejects("data/raw/rejects.jsonl")) == 2  # written for the post-mortem


def test_names_that_are_not_utf8_survive_the_whole_stage(project):
    import os

    folder = os.fsencode(project / "mine")
    sf.write(folder + b"/se\xf1al.wav", np.full(4000, 0.1, np.float32), 16000)
    (project / "mine" / os.fsdecode(b"ro\xf1o.wav")).write_bytes(b"not audio")
    download.run(load_params(_params(project, [{"kind": "local", "name": "mine",
                                                "path": "mine"}])))
    from habla.manifest import original_bytes

    recs = read_manifest("data/raw/manifest.jsonl")
    assert b"se\xf1al.wav" in {original_bytes(r.extra) for r in recs}
    rejects = read_rejects("data/raw/rejects.jsonl")
    assert b"ro\xf1o.wav" in {original_bytes(r.model_dump(), "item") for r in rejects}
    summary = json.loads((project / "data/raw/summary.json").read_text("utf-8"))
    assert summary["sources"]["mine"]["rejects"] == {"empty": 1, "unreadable": 1}


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755),
                                                              (0o077, 0o600, 0o700)])
def test_download_and_segment_outputs_honour_the_umask(project, mask, file_mode, dir_mode):
    import os

    from habla import atomic
    from habla.config import SegmentParams
    from habla.stages.segment import segment_all

    t = np.arange(3 * 16000) / 16000
    wave = np.where((t > 0.5) & (t < 2.0), 0.3 * np.sin(2 * np.pi * 200 * t), 1e-4)
    sf.write(project / "mine" / "speech.wav", wave.astype(np.float32), 16000)
    (project / "mine" / "memo.m4a").write_bytes(b"")  # rejected; nothing of it is written
    old = os.umask(mask)
    atomic._UMASK = None  # read again under this test's umask
    try:
        download.run(load_params(_params(project, [{"kind": "local", "name": "mine",
                                                    "path": "mine"}])))
        segment_all(read_manifest("data/raw/manifest.jsonl"),
                    SegmentParams(method="energy", workers=1), project)
    finally:
        os.umask(old)
        atomic._UMASK = None
    written = [p for base in ("data/raw", "data/clips") for p in (project / base).rglob("*")]
    files = [p for p in written if p.is_file()]
    assert any(p.suffix == ".wav" and "clips" in p.parts for p in files)
    assert {p.relative_to(project).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} \
        == {p.relative_to(project).as_posix(): oct(file_mode) for p in files}
    assert {oct(p.stat().st_mode & 0o777) for p in written if p.is_dir()} == {oct(dir_mode)}
