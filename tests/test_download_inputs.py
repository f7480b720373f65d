"""A real-world local folder: every file is used or rejected with a reason, never a crash and
never a silent drop: names that are not UTF-8 or are decomposed, links, hidden and special
files, damaged transcripts (bad lines, mixed encodings, lone surrogates, NUL bytes)."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import LocalSource
from habla.manifest import (
    original_bytes,
    read_manifest,
    read_rejects,
    sha256_file,
    write_manifest,
)
from habla.sources import local

RATE = 16000


def tone(seconds=0.3, rate=RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def wav(path: Path | bytes, seconds=0.3, rate=RATE) -> None:
    sf.write(os.fsencode(path), tone(seconds, rate), rate, subtype="PCM_16", format="WAV")


def src(folder, **kw) -> LocalSource:
    return LocalSource(kind="local", name="mine", path=str(folder), **kw)


def run(folder: Path, tmp_path: Path, **kw):
    return local.prepare(src(folder, **kw), folder, tmp_path / "raw" / "mine")


def reasons(result) -> dict[str, str]:
    return {r.item: r.reason for r in result.rejects.items}


def accounted(result) -> int:
    """Files used plus files rejected (transcript-line rejects name 'file:line')."""
    return len(result.records) + sum(":" not in r.item for r in result.rejects.items)


# ---------------------------------------------------------------- 1. names that are not UTF-8
def test_latin1_names_are_used_or_rejected_and_round_trip_through_manifest_and_rejects(tmp_path):
    root = tmp_path / "old archive"
    root.mkdir()
    wav(os.fsencode(root) + b"/caf\xe9.wav")
    (Path(os.fsdecode(os.fsencode(root) + b"/rot\xe9.wav"))).write_bytes(b"RIFF junk")
    # the archive's transcript is latin-1 too: its line matches the latin-1 name
    (root / "metadata.csv").write_bytes("café|Un café, por favor.\n".encode("latin-1"))
    result = run(root, tmp_path)
    (rec,) = result.records
    assert original_bytes(rec.extra) == b"caf\xe9.wav"
    assert rec.extra["original"] == "caf\\xe9.wav"  # readable, and marked as not UTF-8
    assert rec.text == "Un café, por favor."
    assert sha256_file(rec.audio) == sha256_file(os.fsencode(root) + b"/caf\xe9.wav")
    (bad,) = result.rejects.items
    assert bad.reason == "unreadable" and bad.item == "rot\\xe9.wav"

    write_manifest(tmp_path / "m.jsonl", result.records)
    result.rejects.write(tmp_path / "r.jsonl")
    (back,) = read_manifest(tmp_path / "m.jsonl")
    assert original_bytes(back.extra) == b"caf\xe9.wav"
    (rej,) = read_rejects(tmp_path / "r.jsonl")
    assert original_bytes(rej.model_dump(), "item") == b"rot\xe9.wav"
    assert "rot\\xe9.wav" in rej.detail  # the detail names the file readably, no crash


def test_lone_surrogates_in_a_transcript_reject_that_entry_and_the_manifest_is_written(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    wav(root / "a.wav")
    wav(root / "b.wav")
    (root / "metadata.jsonl").write_text(
        '{"audio_path": "a.wav", "text": "bad \\ud800 text"}\n'
        '{"audio_path": "b.wav", "text": "Bien.", "speaker_id": "\\udfff"}\n', encoding="utf-8")
    result = run(root, tmp_path)
    assert reasons(result) == {"metadata.jsonl:1": "bad_text", "metadata.jsonl:2": "bad_text"}
    assert all(r.text is None for r in result.records) and len(result.records) == 2
    write_manifest(tmp_path / "m.jsonl", result.records)
    result.rejects.write(tmp_path / "r.jsonl")
    assert len(read_rejects(tmp_path / "r.jsonl")) == 2


# ---------------------------------------------------------------- 6. links
def test_links_are_never_followed_out_of_the_folder_nor_read_twice(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    wav(outside / "secret.wav")
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    wav(root / "real.wav")
    wav(root / "sub" / "deep.wav")
    (root / "to_file.wav").symlink_to(outside / "secret.wav")
    (root / "to_dir").symlink_to(outside)
    (root / "passwd.wav").symlink_to("/etc/passwd")
    (root / "twin.wav").symlink_to("real.wav")
    (root / "sub_again").symlink_to(root / "sub")
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    (root / "loop.wav").symlink_to(root / "loop.wav")
    (root / "metadata.csv").symlink_to(outside / "meta.csv")
    (outside / "meta.csv").write_text("real|Leído desde fuera.\n", encoding="utf-8")
    result = run(root, tmp_path)
    assert reasons(result) == {
        "to_file.wav": "unsafe_link", "to_dir": "unsafe_link", "passwd.wav": "unsafe_link",
        "metadata.csv": "unsafe_link", "twin.wav": "duplicate_link",
        "sub_again": "duplicate_link", "dangling.wav": "broken_link",
        "loop.wav": "broken_link"}
    assert "real.wav" in next(r.detail for r in result.rejects.items if r.item == "twin.wav")
    assert sorted(r.extra["original"] for r in result.records) == ["real.wav", "sub/deep.wav"]
    assert all(r.text is None for r in result.records)  # the outside transcript was not read
    assert result.files_in == accounted(result) == 10


def test_a_transcript_link_inside_the_folder_is_read_once(tmp_path):
    root = tmp_path / "in"
    (root / "meta").mkdir(parents=True)
    wav(root / "a.wav")
    (root / "meta" / "lines.csv").write_text("a|Hola.\n", encoding="utf-8")
    (root / "metadata.csv").symlink_to(Path("meta") / "lines.csv")
    result = run(root, tmp_path)
    assert [r.text for r in result.records] == ["Hola."] and len(result.rejects) == 0


# ---------------------------------------------------------------- messy folders
def test_hidden_special_empty_odd_and_vanishing_files_are_each_accounted_for(tmp_path,
                                                                             monkeypatch):
    root = tmp_path / "in"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "x.wav").write_bytes(b"")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._a.wav").write_bytes(b"\x00\x05\x16\x07")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "dir.wav").mkdir()  # a folder named like audio: walked into, not read
    wav(root / "dir.wav" / "inner.wav")
    os.mkfifo(root / "pipe.wav")  # opening it would block the stage forever
    (root / "zero.wav").write_bytes(b"")
    wav(root / "line\nbreak.wav")
    long_name = "x" * 240 + ".wav"
    wav(root / long_name)
    wav(root / "A.wav")
    wav(root / "a.wav")
    wav(root / "vanishes.wav")
    walk = local.walk

    def walk_then_delete(folder):
        entries = walk(folder)
        (root / "vanishes.wav").unlink()  # removed after the listing, before the reading
        return entries

    monkeypatch.setattr(local, "walk", walk_then_delete)
    result = run(root, tmp_path)
    assert reasons(result) == {
        ".git": "hidden_folder", "__MACOSX/._a.wav": "hidden_file",
        ".DS_Store": "hidden_file", "pipe.wav": "special_file", "zero.wav": "empty",
        "vanishes.wav": "vanished"}
    used = sorted(r.extra["original"] for r in result.records)
    assert used == sorted(["dir.wav/inner.wav", "line\nbreak.wav", long_name, "A.wav", "a.wav"])
    ids = [r.id for r in result.records]
    assert len({i.casefold() for i in ids}) == len(ids)  # 'A' and 'a' are one file on macOS
    assert all(len(Path(r.audio).name) < 120 for r in result.records)
    assert result.files_in == accounted(result) == 11


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_rejected_and_the_rest_kept(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    wav(root / "ok.wav")
    wav(root / "locked.wav")
    (root / "locked.wav").chmod(0)
    try:
        result = run(root, tmp_path)
    finally:
        (root / "locked.wav").chmod(0o644)
    assert reasons(result) == {"locked.wav": "unreadable"}
    assert "ermission" in result.rejects.items[0].detail and len(result.records) == 1


def test_an_unexpected_error_on_one_file_is_an_internal_error_reject(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    wav(root / "a.wav")
    wav(root / "b.wav")
    copy = local.shutil.copyfile

    def flaky(a, b):
        if Path(a).name == "a.wav":
            raise MemoryError("simulated")
        return copy(a, b)

    monkeypatch.setattr(local.shutil, "copyfile", flaky)
    result = run(root, tmp_path)
    assert reasons(result) == {"a.wav": "internal_error"}
    assert "MemoryError: simulated" in result.rejects.items[0].detail
    assert [r.extra["original"] for r in result.records] == ["b.wav"]


# ---------------------------------------------------------------- damaged headers
def _wav_with(rate: int | None = None, channels: int | None = None, **kw) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(**kw), RATE, subtype="PCM_16", format="WAV")
    data = bytearray(buf.getvalue())
    if rate is not None:  # fmt chunk: sample rate at byte 24, byte rate at 28
        struct.pack_into("<II", data, 24, rate, rate * 2)
    if channels is not None:
        struct.pack_into("<H", data, 22, channels)
    return bytes(data)


def test_damaged_headers_are_rejected_with_their_reason(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "flipped_bit.wav").write_bytes(_wav_with(rate=44100 ^ (1 << 23)))  # ~8.4 MHz
    (root / "slow.wav").write_bytes(_wav_with(rate=1000))
    (root / "no_channels.wav").write_bytes(_wav_with(channels=0))
    (root / "odd_rate.wav").write_bytes(_wav_with(rate=44101))  # odd but legal: kept
    flac = tmp_path / "x.flac"
    sf.write(flac, tone(1.0), RATE)
    whole = flac.read_bytes()
    (root / "cut.flac").write_bytes(whole[: len(whole) // 2])
    result = run(root, tmp_path)
    got = reasons(result)
    assert got.pop("no_channels.wav") in ("unreadable", "no_channels")
    assert got == {"flipped_bit.wav": "bad_sample_rate", "slow.wav": "bad_sample_rate",
                   "cut.flac": "truncated"}
    assert [(r.extra["original"], r.sample_rate) for r in result.records] == [
        ("odd_rate.wav", 44101)]


# ---------------------------------------------------------------- 7, 9, 10: transcripts
def test_bad_lines_of_every_transcript_kind_are_rejected_and_the_rest_kept(tmp_path):
    root = tmp_path / "csv"
    root.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        wav(root / f"{name}.wav")
    (root / "metadata.csv").write_bytes(
        b"a|Uno.\n"
        b"just text\n"
        b"b|Dos\x00 con NUL.\n"
        b"c|\n"
        b"a|Otra vez a.\n"
        b"|sin nombre\n"
        b"d|Cuatro.\n")
    result = run(root, tmp_path)
    assert reasons(result) == {
        "metadata.csv:2": "bad_transcript_line", "metadata.csv:3": "bad_text",
        "metadata.csv:4": "empty_text", "metadata.csv:5": "duplicate_transcript",
        "metadata.csv:6": "bad_transcript_line"}
    texts = {r.extra["original"]: r.text for r in result.records}
    assert texts == {"a.wav": "Uno.", "b.wav": None, "c.wav": None, "d.wav": "Cuatro.",
                     "e.wav": None}
    assert result.transcripts == {"file": "metadata.csv", "lines": 7, "fallback_lines": 0}


def test_jsonl_bad_lines_and_a_malformed_whole_json_are_rejected_by_name(tmp_path):
    root = tmp_path / "jl"
    root.mkdir()
    wav(root / "a.wav")
    wav(root / "b.wav")
    (root / "metadata.jsonl").write_text(
        '{"audio_path": "a.wav", "text": "Bien."}\n{"audio_path": "b.wav", "text": \n'
        '[1, 2]\n{"audio_path": "b.wav", "text": 7}\n' + "[" * 100000 + "\n",
        encoding="utf-8")
    result = run(root, tmp_path)
    assert reasons(result) == {f"metadata.jsonl:{n}": "bad_transcript_line"
                               for n in (2, 3, 4, 5)}
    assert {r.extra["original"]: r.text for r in result.records} == {"a.wav": "Bien.",
                                                                     "b.wav": None}
    whole = tmp_path / "js"
    whole.mkdir()
    wav(whole / "a.wav")
    (whole / "metadata.json").write_text('[{"audio_path": "a.wav", "text": "x"},', "utf-8")
    result = run(whole, tmp_path)
    (rej,) = result.rejects.items
    assert (rej.item, rej.reason) == ("metadata.json", "bad_transcripts")
    assert "kept without text" in rej.detail
    assert [r.text for r in result.records] == [None]


def test_a_transcript_mixing_utf8_and_latin1_lines_decodes_each_line_and_counts_fallbacks(
        tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for name in ("uno", "dos", "tres"):
        wav(root / f"{name}.wav")
    (root / "metadata.csv").write_bytes(
        "uno|Buenos días.\n".encode() + "dos|Año nuevo, señor.\n".encode("latin-1")
        + "tres|¿Qué tal?\r\n".encode())
    result = run(root, tmp_path)
    texts = {r.extra["original"]: r.text for r in result.records}
    assert texts == {"uno.wav": "Buenos días.", "dos.wav": "Año nuevo, señor.",
                     "tres.wav": "¿Qué tal?"}
    assert result.transcripts["fallback_lines"] == 1
    assert result.summary()["transcripts"]["fallback_lines"] == 1
    assert any("1 line(s) not valid UTF-8 (line 2)" in w for w in result.warnings)


def test_utf16_transcripts_with_a_bom_are_read(tmp_path):
    root = tmp_path / "u16"
    root.mkdir()
    wav(root / "a.wav")
    (root / "metadata.csv").write_bytes("a|Adiós.\r\n".encode("utf-16"))
    assert [r.text for r in run(root, tmp_path).records] == ["Adiós."]


def test_decomposed_file_names_match_composed_transcript_lines(tmp_path):
    root = tmp_path / "nfd"
    root.mkdir()
    wav(root / "cancio\u0301n.wav")  # NFD, as macOS writes it
    wav(root / "Nin\u0303o.wav")
    (root / "metadata.csv").write_text("canci\u00f3n|La canción.\nni\u00f1o|El niño.\n",
                                       encoding="utf-8")
    result = run(root, tmp_path)
    assert sorted(r.text for r in result.records) == ["El niño.", "La canción."]
    assert len(result.rejects) == 0


def test_case_only_differences_prefer_the_exact_transcript_line(tmp_path):
    root = tmp_path / "case"
    root.mkdir()
    wav(root / "A.wav")
    wav(root / "a.wav")
    wav(root / "B.wav")
    (root / "metadata.csv").write_text("A|Mayúscula.\na|Minúscula.\nb|Sin distinción.\n",
                                       encoding="utf-8")
    result = run(root, tmp_path)
    texts = {r.extra["original"]: r.text for r in result.records}
    assert texts == {"A.wav": "Mayúscula.", "a.wav": "Minúscula.", "B.wav": "Sin distinción."}


def test_other_transcript_files_are_rejected_as_unused(tmp_path):
    root = tmp_path / "two"
    root.mkdir()
    wav(root / "a.wav")
    (root / "metadata.csv").write_text("a|Hola.\n", encoding="utf-8")
    (root / "metadata.jsonl").write_text(json.dumps({"audio_path": "a.wav", "text": "x"}))
    result = run(root, tmp_path)
    assert reasons(result) == {"metadata.jsonl": "unused_transcripts"}
    result = run(root, tmp_path, transcripts="none")
    assert reasons(result) == {"metadata.csv": "unused_transcripts",
                               "metadata.jsonl": "unused_transcripts"}


def test_a_streamed_flac_without_a_stated_length_is_re_encoded_not_lost(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    path = root / "streamed.flac"
    sf.write(path, tone(1.0), RATE)
    data = bytearray(path.read_bytes())
    head = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # total samples: unknown
    data[18:26] = head.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    (rec,) = run(root, tmp_path).records
    assert sf.info(rec.audio).frames == RATE and rec.duration == 1.0
    assert rec.extra["decoded_from"] == "flac/flac"
