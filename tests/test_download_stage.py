"""The download stage end to end: several sources into one manifest, rejects and summary;
clear errors (not tracebacks) for repeated source names and a missing folder."""

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
