"""Bad and unusual inputs: each unusable file is rejected with a reason, the rest are kept."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import SegmentParams
from habla.errors import StageError
from habla.manifest import Record, read_manifest, read_rejects, sha256_file
from habla.stages.segment import segment_all

SR = 16000


def bursts(sr: int, channels: int = 1) -> np.ndarray:
    """Three 1.5 s tone bursts between pauses over a faint noise floor (energy VAD fodder)."""
    t = np.arange(int(7.0 * sr)) / sr
    x = np.random.default_rng(0).standard_normal(len(t)) * 1e-3
    for a in (0.5, 2.6, 4.8):
        m = (t >= a) & (t < a + 1.5)
        x[m] += 0.3 * np.sin(2 * np.pi * 200 * t[m])
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def record(root: Path, rel: str, sha: str | None = None) -> Record:
    path = root / rel
    return Record(id=Path(rel).stem, audio=rel, duration=7.0, sample_rate=SR, speaker="s",
                  language="es", source="local", sha256=sha or sha256_file(path))


def write_inputs(root: Path) -> list[Record]:
    raw = root / "data/raw"
    raw.mkdir(parents=True)
    good = bursts(SR)
    files = {
        "good.wav": (good, SR, "PCM_16"),
        "eight_bit.wav": (good, SR, "PCM_U8"),
        "float32.wav": (good * 2.5, SR, "FLOAT"),  # float may exceed full scale: not clipped
        "stereo.wav": (bursts(SR, 2), SR, "PCM_16"),
        "rate8k.wav": (bursts(8000), 8000, "PCM_16"),
        "rate48k.wav": (bursts(48000), 48000, "PCM_24"),
        "mi grabación ñandú.wav": (good, SR, "PCM_16"),
        "silence.wav": (np.zeros(SR * 5, np.float32), SR, "PCM_16"),
        "clipped.wav": (np.clip(good * 8, -1, 1), SR, "PCM_16"),
    }
    for name, (x, sr, subtype) in files.items():
        sf.write(raw / name, x, sr, subtype=subtype)
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = good.copy()
        x[12345] = value
        sf.write(raw / name, x, SR, subtype="FLOAT")
    data = (raw / "good.wav").read_bytes()
    (raw / "truncated.wav").write_bytes(data[: len(data) // 2])
    (raw / "corrupt.wav").write_bytes(data[:12] + bytes(range(256)) * 8)
    (raw / "empty.wav").write_bytes(b"")
    (raw / "notes.wav").write_text("these are my notes, not audio\n")
    recs = [record(root, f"data/raw/{p.name}") for p in sorted(raw.iterdir())]
    recs.append(record(root, "data/raw/good.wav", sha="0" * 64).model_copy(
        update={"id": "stale_hash"}))
    recs.append(Record(id="missing", audio="data/raw/missing.wav", duration=1, sample_rate=SR,
                       speaker="s", language="es", source="local", sha256="1" * 64))
    return recs


EXPECTED_REJECTS = {
    "truncated.wav": "truncated", "corrupt.wav": "unreadable", "empty.wav": "empty",
    "notes.wav": "unreadable", "nan.wav": "non_finite", "inf.wav": "non_finite",
    "silence.wav": "no_speech", "clipped.wav": "clipped", "missing.wav": "missing",
}
USABLE = ["good", "eight_bit", "float32", "stereo", "rate8k", "rate48k", "mi grabación ñandú"]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    recs = write_inputs(root)
    summary = segment_all(recs, SegmentParams(method="energy", workers=1), root)
    return root, recs, summary


def test_each_unusable_input_is_rejected_once_with_its_reason(outcome):
    root, _, summary = outcome
    rejects = read_rejects(root / "data/clips/rejects.jsonl")
    got = {Path(r.item).name: r.reason for r in rejects if Path(r.item).name != "good.wav"}
    assert got == EXPECTED_REJECTS
    stale = [r for r in rejects if r.reason == "sha256_mismatch"]
    assert len(stale) == 1 and stale[0].item == "data/raw/good.wav"
    assert all(r.detail for r in rejects)
    assert sum(summary["rejects"].values()) == len(rejects) == len(EXPECTED_REJECTS) + 1


def test_converted_formats_and_odd_names_are_all_kept(outcome):
    root, _, summary = outcome
    clips = read_manifest(root / "data/clips/manifest.jsonl")
    by_rec = {rid: [c for c in clips if c.recording_id == rid] for rid in USABLE}
    assert all(len(v) == 3 for v in by_rec.values()), {k: len(v) for k, v in by_rec.items()}
    assert summary["recordings_used"] == len(USABLE)
    for c in clips:
        info = sf.info(root / c.audio)
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
        assert abs(c.duration - 1.7) < 0.1  # 1.5 s burst + two 0.1 s margins
    odd = by_rec["mi grabación ñandú"]
    assert odd[0].id == "mi grabación ñandú_0000" and (root / odd[0].audio).is_file()
    assert " " not in odd[0].audio


def test_clip_offsets_agree_whatever_the_input_format(outcome):
    root, _, _ = outcome
    clips = read_manifest(root / "data/clips/manifest.jsonl")
    offsets = {rid: [c.offset for c in clips if c.recording_id == rid] for rid in USABLE}
    for rid, offs in offsets.items():
        assert np.allclose(offs, offsets["good"], atol=0.03), rid


def test_summary_counts_hours_in_and_kept(outcome):
    root, _, summary = outcome
    saved = json.loads((root / "data/clips/summary.json").read_text())
    assert saved["clips_out"] == 3 * len(USABLE) == summary["clips_out"]
    assert saved["hours_kept"] == pytest.approx(3 * len(USABLE) * 1.7 / 3600, rel=0.05)
    assert saved["hours_in"] > saved["hours_kept"]


def test_stage_fails_only_when_nothing_usable_remains(tmp_path):
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    sf.write(raw / "quiet.wav", np.zeros(SR * 2, np.float32), SR)
    (raw / "bad.wav").write_text("nope")
    recs = [record(tmp_path, "data/raw/quiet.wav"), record(tmp_path, "data/raw/bad.wav")]
    with pytest.raises(StageError, match="no usable clips"):
        segment_all(recs, SegmentParams(method="energy", workers=1), tmp_path)
    reasons = {r.reason for r in read_rejects(tmp_path / "data/clips/rejects.jsonl")}
    assert reasons == {"no_speech", "unreadable"}


def test_duplicate_recording_ids_keep_the_first_and_reject_the_second(tmp_path):
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    sf.write(raw / "a.wav", bursts(SR), SR)
    rec = record(tmp_path, "data/raw/a.wav")
    summary = segment_all([rec, rec], SegmentParams(method="energy", workers=1), tmp_path)
    assert summary["clips_out"] == 3 and summary["rejects"] == {"duplicate_id": 1}
