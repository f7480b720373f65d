"""Property-based tests (Hypothesis): whatever bytes a transcript, a file name or an audio
header holds, no exception escapes and every input is accounted for (used or rejected)."""

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from habla.audio import AudioError  # noqa: E402
from habla.config import LocalSource  # noqa: E402
from habla.manifest import (  # noqa: E402
    Record,
    Rejects,
    clean_text,
    has_surrogates,
    name_fields,
    original_bytes,
    read_manifest,
    read_rejects,
    write_json,
    write_manifest,
)
from habla.sources import local, transcripts  # noqa: E402
from habla.vad import scan  # noqa: E402

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# any text, lone surrogates included (they come from JSON '\ud800' escapes)
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
# transcript lines: well-formed, broken, and raw bytes in any encoding
line = st.one_of(
    st.builds(lambda a, t: f"{a}|{t}".encode(), st.text(max_size=12), any_text.map(
        lambda t: t.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))),
    st.builds(lambda a, t: f"{a}|{t}".encode("latin-1", "replace"), st.text(max_size=8),
              st.text(max_size=20)),
    st.binary(max_size=40),
    st.builds(lambda a, t: f'{{"audio_path": {a}, "text": {t}}}'.encode(),
              st.sampled_from(['"a.wav"', '"b"', "7", "null", '"\\ud800"']),
              st.sampled_from(['"Hola"', '"\\udfff"', '""', "[1]", '"a\\u0000b"'])),
)


def _line_items(rejects: Rejects, name: str) -> set[int]:
    out = set()
    for r in rejects.items:
        head, _, rest = r.item.partition(":")
        if head == name and rest.isdigit():
            out.add(int(rest))
    return out


@FAST
@given(lines=st.lists(line, max_size=12), kind=st.sampled_from(["csv", "jsonl"]),
       newline=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_every_transcript_line_is_an_entry_or_a_reject(tmp_path_factory, lines, kind, newline):
    path = tmp_path_factory.mktemp("t") / f"metadata.{kind}"
    path.write_bytes(newline.join(lines))
    rejects, warnings = Rejects("download"), []
    got = transcripts.read(path, rejects, warnings)
    decoded, _ = transcripts.decode_lines(path.read_bytes())
    nonblank = {n for n, text in enumerate(decoded, 1) if text.strip()}
    entries = {int(e.where.rpartition(":")[2]) for e in got.entries.values()}
    rejected = _line_items(rejects, path.name)
    assert entries | rejected == nonblank and not entries & rejected
    assert got.lines == len(nonblank)
    rejects.write(path.with_suffix(".rejects"))  # never a serialisation error
    write_json(path.with_suffix(".summary"), {"warnings": warnings})


@FAST
@given(body=st.binary(max_size=200) | st.builds(
    lambda items: ("[" + ",".join(items) + "]").encode(),
    st.lists(st.sampled_from(['{"audio_path": "a", "text": "x"}', "1", '{"text": "y"}',
                              '{"audio_path": "\\ud800", "text": "z"}', "null"]), max_size=6)))
def test_a_json_transcript_is_read_entry_by_entry_or_rejected_whole(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("j") / "metadata.json"
    path.write_bytes(body)
    rejects = Rejects("download")
    got = transcripts.read(path, rejects, [])
    whole = [r for r in rejects.items if r.item == "metadata.json"]
    if whole:
        assert not got.entries and len(rejects) == 1
    else:
        assert len(got.entries) + len(rejects) == got.lines


names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b".."))


@FAST
@given(name=names, text=any_text, detail=any_text)
def test_any_file_name_round_trips_through_manifest_and_rejects(tmp_path_factory, name, text,
                                                                detail):
    folder = tmp_path_factory.mktemp("m")
    fields = name_fields(os.fsdecode(name))
    rec = Record(id="r", audio="data/raw/r.wav", duration=1, sample_rate=16000, speaker="s",
                 language="es", source="local", sha256="0" * 64, extra=fields)
    write_manifest(folder / "m.jsonl", [rec])
    (back,) = read_manifest(folder / "m.jsonl")
    assert original_bytes(back.extra) == name
    assert os.fsdecode(original_bytes(back.extra)) == os.fsdecode(name)
    rejects = Rejects("download")
    rejects.add(os.fsdecode(name), "unreadable", detail)
    rejects.add(text, "bad_text", text)
    rejects.write(folder / "r.jsonl")
    first, second = read_rejects(folder / "r.jsonl")
    assert original_bytes(first.model_dump(), "item") == name
    if has_surrogates(text):  # not Unicode text: written escaped, never a crash
        assert second.item == clean_text(text) or second.item_b64
    else:
        assert (second.item, second.item_b64) == (text, None)
    assert second.detail == clean_text(text)


def _wav_header(rate: int, channels: int, bits: int, tag: int, data_len: int,
                payload: bytes) -> bytes:
    block = max(channels, 1) * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF,
                      block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", data_len) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


headers = st.one_of(
    st.builds(_wav_header, st.integers(0, 2**32 - 1), st.integers(0, 65535),
              st.sampled_from([0, 1, 8, 16, 24, 32, 64, 65535]),
              st.sampled_from([0, 1, 3, 6, 7, 0x55, 0xFFFE, 0xFFFF]),
              st.integers(0, 2**32 - 1), st.binary(max_size=256)),
    st.binary(max_size=300),
    st.builds(lambda magic, rest: magic + rest,
              st.sampled_from([b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"FORM", b"caff", b".snd",
                               b"\x00\x00\x00\x18ftypmp42", b"\x1a\x45\xdf\xa3", b"RIFF"]),
              st.binary(max_size=300)),
)


@FAST
@given(blobs=st.lists(headers, min_size=1, max_size=4))
def test_random_audio_headers_are_used_or_rejected_never_a_crash(tmp_path_factory, blobs):
    root = tmp_path_factory.mktemp("h")
    folder = root / "in"
    folder.mkdir()
    for k, blob in enumerate(blobs):
        (folder / f"f{k}.wav").write_bytes(blob)
    sf.write(folder / "good.wav", np.full(1600, 0.1, np.float32), 16000)
    src = LocalSource(kind="local", name="h", path=str(folder), transcripts="none")
    result = local.prepare(src, folder, root / "raw")
    assert len(result.records) + len(result.rejects) == result.files_in == len(blobs) + 1
    assert "good.wav" in {r.extra["original"] for r in result.records}
    assert "internal_error" not in result.rejects.counts(), result.rejects.items
    for rec in result.records:  # what download keeps, segment's reader accepts or rejects
        try:
            scan(rec.audio, "energy")
        except AudioError:
            pass


@settings(max_examples=40, deadline=None)
@given(rate=st.integers(1, 2**31 - 1), frames=st.integers(1, 2000))
def test_any_header_rate_is_probed_or_rejected_with_a_reason(rate, frames):
    buf = io.BytesIO(_wav_header(rate, 1, 16, 1, frames * 2, bytes(frames * 2)))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"habla-rate-{os.getpid()}.wav"
    path.write_bytes(buf.getvalue())
    try:
        from habla.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, probe

        try:
            info = probe(path)
        except AudioError as exc:
            assert exc.reason in ("bad_sample_rate", "unreadable")
            assert not (MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE) or exc.reason == "unreadable"
        else:
            assert MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE
    finally:
        path.unlink(missing_ok=True)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(blob=headers)
def test_segment_cuts_or_rejects_any_recording_bytes_never_a_crash(tmp_path_factory, blob):
    from habla.config import SegmentParams
    from habla.manifest import sha256_file
    from habla.stages.segment import segment_all

    root = tmp_path_factory.mktemp("s")
    raw = root / "data/raw"
    raw.mkdir(parents=True)
    (raw / "odd.wav").write_bytes(blob)
    t = np.arange(32000) / 16000
    sf.write(raw / "good.wav", np.where((t > 0.4) & (t < 1.6), 0.3 * np.sin(900 * t), 1e-4),
             16000)
    recs = [Record(id=p.stem, audio=f"data/raw/{p.name}", duration=1, sample_rate=16000,
                   speaker="s", language="es", source="local", sha256=sha256_file(p))
            for p in (raw / "odd.wav", raw / "good.wav")]
    summary = segment_all(recs, SegmentParams(method="energy", workers=1), root)
    assert summary["recordings_used"] + sum(summary["rejects"].values()) == 2
    assert "internal_error" not in summary["rejects"]
