"""`habla export ljspeech`: the splits as an LJSpeech folder, written without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.export import ExportError, export_ljspeech
from habla.manifest import Record, sha256_file, write_manifest

SRC = Path(__file__).resolve().parents[1] / "src"


def _clip(root: Path, rid: str, text: str | None, split: str, fmt: str = "WAV") -> Record:
    path = root / "data/clips" / f"{rid}.{'wav' if fmt == 'WAV' else 'flac'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(12000) / 24000
    subtype = "PCM_16" if fmt == "WAV" else "PCM_24"
    sf.write(path, (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000,
             subtype=subtype, format=fmt)
    return Record(id=rid, audio=path.relative_to(root).as_posix(), duration=0.5,
                  sample_rate=24000, speaker="ana", language="es", text=text, source="s",
                  sha256=sha256_file(path), split=split)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    splits = tmp_path / "data/splits"
    write_manifest(splits / "train.jsonl", [
        _clip(tmp_path, "a1", "Hola, ¿qué tal?", "train"),
        _clip(tmp_path, "a2", "Uno | dos\ntres", "train", fmt="FLAC"),
        _clip(tmp_path, "a3", None, "train")])
    write_manifest(splits / "val.jsonl", [_clip(tmp_path, "b1", "Adiós.", "val")])
    write_manifest(splits / "test.jsonl", [_clip(tmp_path, "c1", "Buenas noches.", "test")])
    return tmp_path


def test_export_writes_wavs_and_the_metadata_files_of_every_split(project):
    summary = export_ljspeech(project / "lj")
    lj = project / "lj"
    assert summary["clips"] == 4 and summary["skipped"]["no_text"] == 1
    assert (lj / "metadata_train.csv").read_text() == (
        "a1|Hola, ¿qué tal?|Hola, ¿qué tal?\na2|Uno dos tres|Uno dos tres\n")
    assert (lj / "metadata_val.csv").read_text() == "b1|Adiós.|Adiós.\n"
    assert (lj / "metadata_test.csv").read_text() == "c1|Buenas noches.|Buenas noches.\n"
    assert (lj / "metadata.csv").read_text().splitlines() == [
        "a1|Hola, ¿qué tal?|Hola, ¿qué tal?", "a2|Uno dos tres|Uno dos tres",
        "b1|Adiós.|Adiós.", "c1|Buenas noches.|Buenas noches."]
    # a 16-bit wav is copied byte for byte; anything else becomes one
    assert (lj / "wavs/a1.wav").read_bytes() == (project / "data/clips/a1.wav").read_bytes()
    info = sf.info(lj / "wavs/a2.wav")
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 24000)
    assert sorted(p.name for p in (lj / "wavs").iterdir()) == [
        "a1.wav", "a2.wav", "b1.wav", "c1.wav"]


def test_export_replaces_an_earlier_export_but_never_a_foreign_folder(project):
    export_ljspeech(project / "lj")
    (project / "lj/wavs/stale.wav").write_bytes(b"x")
    export_ljspeech(project / "lj")
    assert not (project / "lj/wavs/stale.wav").exists()
    (project / "mine").mkdir()
    (project / "mine/notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier habla LJSpeech export"):
        export_ljspeech(project / "mine")
    assert (project / "mine/notes.txt").read_text() == "keep me"


def test_the_command_writes_the_export_without_importing_torch(project):
    code = ("import sys\nfrom habla.cli import app\n"
            "try:\n    app(['export', 'ljspeech', 'out'])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"clips": 4' in done.stdout
    assert (project / "out/metadata_val.csv").is_file()


def test_the_command_without_splits_says_what_to_run(tmp_path):
    code = "from habla.cli import app\napp(['export', 'ljspeech', 'out'])\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 2 and "tokenize" in done.stderr and "Traceback" not in done.stderr
