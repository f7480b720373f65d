"""Manifests: JSONL round trips, errors that name file:line, duplicate ids, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from habla import atomic
from habla import manifest as m
from habla.manifest import ManifestError, Record, Rejects, Word, read_manifest, write_manifest


def clip(i: int, **extra) -> Record:
    return Record(id=f"c{i}", audio=f"data/clips/c{i}.wav", duration=1.5 + i, sample_rate=24000,
                  speaker="ana", language="es", source="synthetic", sha256=f"{i:x}" * 64, **extra)


def test_round_trip_keeps_every_field(tmp_path):
    recs = [
        clip(1, text="Hola, ¿qué tal?", text_source="asr",
             words=[Word(word="Hola,", start=0.1, end=0.4, confidence=0.9),
                    Word(word="tal?", aligned=False)],
             asr=m.AsrResult(model="whisper-base", text="hola que tal", wer=0.0, cer=0.1),
             aligned_fraction=0.5, split="test", extra={"snr_db": 31.5, "tags": ["a"]}),
        clip(2),
    ]
    path = tmp_path / "sub/clips.jsonl"
    assert write_manifest(path, recs) == 2
    assert read_manifest(path) == recs
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "¿qué" in lines[0]  # UTF-8, not \\u escapes
    assert "null" not in lines[1]  # unset optional fields are left out


def test_invalid_line_names_the_file_line_and_field(tmp_path):
    path = tmp_path / "clips.jsonl"
    write_manifest(path, [clip(1), clip(2)])
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["duration"] = -3
    path.write_text(lines[0] + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ManifestError, match=rf"{path}:3: 'duration': .*greater than or equal"):
        read_manifest(path)
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ManifestError, match=rf"{path}:2:"):
        read_manifest(path)
    path.write_text(lines[0].replace('"speaker"', '"spekaer"') + "\n")
    with pytest.raises(ManifestError, match=rf"{path}:1: '(speaker|spekaer)'"):
        read_manifest(path)


def test_missing_manifest_says_which_stage_to_run(tmp_path):
    with pytest.raises(ManifestError, match=r"nope.jsonl: manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")


def test_duplicate_ids_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "clips.jsonl"
    with pytest.raises(ManifestError, match=r"duplicate record id 'c1'"):
        write_manifest(path, [clip(1), clip(2), clip(1)])
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_invalid_record_leaves_the_previous_manifest_intact(tmp_path):
    path = tmp_path / "clips.jsonl"
    write_manifest(path, [clip(1)])
    before = path.read_bytes()
    broken = clip(2)
    broken.duration = -1.0  # mutation is not validated on assignment
    with pytest.raises(ManifestError, match=r"clips.jsonl: record 'c2': 'duration'"):
        write_manifest(path, [clip(3), broken])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["clips.jsonl"]


def test_a_crash_while_writing_leaves_no_partial_or_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "clips.jsonl"
    write_manifest(path, [clip(1)])
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(path, [clip(1), clip(2)])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["clips.jsonl"]


def test_rejects_are_written_with_reason_codes_and_counted(tmp_path):
    rejects = Rejects("segment")
    rejects.add(Path("data/raw/a.wav"), "unreadable", "not a WAV header")
    rejects.add("r2", "all_silence")
    rejects.add("r3", "all_silence")
    rejects.write(tmp_path / "rejects.jsonl")
    back = m.read_rejects(tmp_path / "rejects.jsonl")
    assert [(r.item, r.reason) for r in back] == [
        ("data/raw/a.wav", "unreadable"), ("r2", "all_silence"), ("r3", "all_silence")]
    assert rejects.counts() == {"all_silence": 2, "unreadable": 1} and len(rejects) == 3
    assert m.read_rejects(tmp_path / "none.jsonl") == []


def test_write_json_is_stable_and_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    m.write_json(tmp_path / "a.json", {"b": 1, "a": "ñ"})
    m.write_json(tmp_path / "b.json", {"a": "ñ", "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert "ñ" in (tmp_path / "a.json").read_text(encoding="utf-8")
    data = os.urandom(3 << 20)
    (tmp_path / "blob").write_bytes(data)
    assert m.sha256_file(tmp_path / "blob", chunk=1 << 16) == hashlib.sha256(data).hexdigest()


def test_names_that_are_not_utf8_keep_their_bytes_in_base64_and_round_trip(tmp_path):
    name = os.fsdecode(b"caf\xe9 \xff.wav")  # how Python lists a latin-1 name from disk
    fields = m.name_fields(name)
    assert fields["original"] == "caf\\xe9 \\xff.wav" and "original_b64" in fields
    assert m.name_fields("café.wav") == {"original": "café.wav"}  # UTF-8: text only
    write_manifest(tmp_path / "c.jsonl", [clip(1, extra=fields)])
    (back,) = read_manifest(tmp_path / "c.jsonl")
    assert m.original_bytes(back.extra) == b"caf\xe9 \xff.wav"
    assert os.fsdecode(m.original_bytes(back.extra)) == name
    rejects = Rejects("download")
    rejects.add(name, "unreadable", f"{name}: not audio")
    rejects.add(Path(name), "empty")
    rejects.write(tmp_path / "r.jsonl")
    for r in m.read_rejects(tmp_path / "r.jsonl"):
        assert os.fsdecode(m.original_bytes(r.model_dump(), "item")) == name
    assert m.read_rejects(tmp_path / "r.jsonl")[0].detail == "caf\\xe9 \\xff.wav: not audio"


def test_text_that_is_not_unicode_never_crashes_a_writer(tmp_path):
    bad = "x\ud800y"  # what json.loads makes of a "\ud800" escape
    with pytest.raises(ManifestError, match=r"record 'c1' cannot be written as UTF-8"):
        write_manifest(tmp_path / "c.jsonl", [clip(1, text=bad)])
    assert not (tmp_path / "c.jsonl").exists()
    m.write_json(tmp_path / "s.json", {"warnings": [bad], bad: 1})
    assert json.loads((tmp_path / "s.json").read_text("utf-8")) == {
        "warnings": ["x\\ud800y"], "x\\ud800y": 1}
    rejects = Rejects("download")
    rejects.add(bad, "bad_text", bad)
    rejects.write(tmp_path / "r.jsonl")
    assert m.read_rejects(tmp_path / "r.jsonl")[0].detail == "x\\ud800y"


def test_rejects_with_unicode_line_separators_read_back_whole(tmp_path):
    rejects = Rejects("download")
    rejects.add("a\u2028b\x85c.wav", "unreadable", "line\u2029separators")
    rejects.write(tmp_path / "r.jsonl")
    (back,) = m.read_rejects(tmp_path / "r.jsonl")
    assert back.item == "a\u2028b\x85c.wav" and back.detail == "line\u2029separators"
