"""The local-folder source: bad files become rejects, usable formats are kept, transcripts
in LJSpeech / JSON / JSONL (and the wrong encoding) are read without mojibake."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import LocalSource
from habla.errors import StageError
from habla.manifest import sha256_file
from habla.sources import local

RATE = 16000


def _tone(seconds=0.3, rate=RATE, channels=1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _src(folder, **kw) -> LocalSource:
    return LocalSource(kind="local", name="mine", path=str(folder), **kw)


@pytest.fixture
def messy(tmp_path) -> Path:
    """A folder with every kind of input the issue lists."""
    root = tmp_path / "in"
    (root / "sub dir").mkdir(parents=True)
    sf.write(root / "good.wav", _tone(), RATE, subtype="PCM_16")
    sf.write(root / "pcm8.wav", _tone(), RATE, subtype="PCM_U8")
    sf.write(root / "float32.wav", _tone(), RATE, subtype="FLOAT")
    sf.write(root / "stereo.wav", _tone(channels=2), RATE, subtype="PCM_16")
    sf.write(root / "low 8k.wav", _tone(rate=8000), 8000, subtype="PCM_16")
    sf.write(root / "sub dir" / "canción ñandú.flac", _tone(rate=48000), 48000)
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("this is not audio, just text named .wav\n")
    whole = (root / "good.wav").read_bytes()
    (root / "cut.wav").write_bytes(whole[: len(whole) // 2])
    (root / "readme.txt").write_text("not audio: rejected, never silently skipped")
    return root


def test_unusable_files_are_rejected_with_reasons_and_usable_formats_kept(messy, tmp_path):
    result = local.prepare(_src(messy, transcripts="none"), messy, tmp_path / "raw" / "mine")
    reasons = {r.item: r.reason for r in result.rejects.items}
    assert reasons == {"empty.wav": "empty", "notes.wav": "unreadable", "cut.wav": "truncated",
                       "readme.txt": "unsupported_format"}
    kept = {r.extra["original"]: r for r in result.records}
    assert set(kept) == {"good.wav", "pcm8.wav", "float32.wav", "stereo.wav", "low 8k.wav",
                         "sub dir/canción ñandú.flac"}
    assert kept["stereo.wav"].extra["channels"] == 2
    assert kept["low 8k.wav"].sample_rate == 8000
    assert kept["sub dir/canción ñandú.flac"].sample_rate == 48000
    assert result.files_in == 10
    for rec in result.records:  # copied byte for byte under a safe ASCII name
        assert rec.audio.isascii() and " " not in rec.audio
        assert rec.sha256 == sha256_file(messy / rec.extra["original"]) == sha256_file(rec.audio)
        assert rec.text is None and rec.speaker == "speaker0"
    assert len({r.id for r in result.records}) == len(result.records)


def test_ljspeech_metadata_gives_text_and_a_missing_line_is_a_warning(tmp_path):
    root = tmp_path / "lj"
    (root / "wavs").mkdir(parents=True)
    for name in ("LJ001-0001", "LJ001-0002", "LJ001-0003"):
        sf.write(root / "wavs" / f"{name}.wav", _tone(), RATE)
    (root / "metadata.csv").write_text(
        "LJ001-0001|Tengo 2 gatos.|Tengo dos gatos.\n"
        "LJ001-0002|¿Qué tal, señor Muñoz?\n"
        "LJ001-0009|Línea sin audio.\n", encoding="utf-8")
    result = local.prepare(_src(root), root, tmp_path / "raw")
    texts = {Path(r.extra["original"]).stem: r.text for r in result.records}
    assert texts == {"LJ001-0001": "Tengo dos gatos.", "LJ001-0002": "¿Qué tal, señor Muñoz?",
                     "LJ001-0003": None}
    assert any("1 audio file(s) have no line" in w and "LJ001-0003" in w
               for w in result.warnings)
    assert [(r.reason, r.item) for r in result.rejects.items] == [
        ("missing_audio", "metadata.csv:3")]


@pytest.mark.parametrize(("encoding", "warned"), [("cp1252", True), ("utf-8-sig", False),
                                                   ("utf-8", False)])
def test_transcript_encodings_decode_without_mojibake_and_cp1252_is_warned(tmp_path, encoding,
                                                                           warned):
    root = tmp_path / "enc"
    root.mkdir()
    sf.write(root / "a.wav", _tone(), RATE)
    said = "El niño comió piñas — ¡qué rico!"
    (root / "metadata.csv").write_bytes(f"a|{said}\n".encode(encoding))
    result = local.prepare(_src(root), root, tmp_path / "raw")
    assert result.records[0].text == said
    assert any("metadata.csv" in w and "cp1252" in w for w in result.warnings) == warned
    assert len(result.warnings) == warned


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_json_and_jsonl_transcripts_set_text_speaker_and_language(tmp_path, kind):
    root = tmp_path / kind
    (root / "clips").mkdir(parents=True)
    sf.write(root / "clips" / "uno.wav", _tone(), RATE)
    sf.write(root / "clips" / "dos.wav", _tone(), RATE)
    rows = [{"audio_path": "clips/uno.wav", "text": "Uno.", "speaker_id": "ana",
             "language": "es"},
            {"audio_path": "clips/dos.wav", "text": "Dos.", "speaker_id": "leo",
             "language": "ca"}]
    body = json.dumps(rows) if kind == "json" else "\n".join(json.dumps(r) for r in rows)
    (root / f"metadata.{kind}").write_text(body, encoding="utf-8")
    result = local.prepare(_src(root), root, tmp_path / "raw")
    got = sorted((r.text, r.speaker, r.language) for r in result.records)
    assert got == [("Dos.", "leo", "ca"), ("Uno.", "ana", "es")]


def test_malformed_transcript_line_is_rejected_with_file_and_line_and_the_rest_kept(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    sf.write(root / "a.wav", _tone(), RATE)
    sf.write(root / "b.wav", _tone(), RATE)
    (root / "metadata.csv").write_text("a|ok\nno separator here\nb|bien\n", encoding="utf-8")
    result = local.prepare(_src(root), root, tmp_path / "raw")
    assert [(r.item, r.reason) for r in result.rejects.items] == [
        ("metadata.csv:2", "bad_transcript_line")]
    assert "no separator here" in result.rejects.items[0].detail
    assert sorted((r.extra["original"], r.text) for r in result.records) == [
        ("a.wav", "ok"), ("b.wav", "bien")]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        local.prepare(_src(tmp_path / "nope"), tmp_path / "nope", tmp_path / "raw")
