"""segment never dies for one recording: absurd or odd sample rates, unexpected errors and
worker processes that die (segfault, OOM kill) each cost only that recording."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import SegmentParams
from habla.errors import StageError
from habla.manifest import Record, read_manifest, read_rejects, sha256_file
from habla.stages import segment
from habla.stages.segment import CRASH_ENV, segment_all

SR = 16000


def bursts(sr: int = SR) -> np.ndarray:
    t = np.arange(int(5.0 * sr)) / sr
    x = np.random.default_rng(0).standard_normal(len(t)) * 1e-3
    for a in (0.5, 2.8):
        m = (t >= a) & (t < a + 1.5)
        x[m] += 0.3 * np.sin(2 * np.pi * 200 * t[m])
    return x.astype(np.float32)


def recording(root: Path, rid: str, rate: int = SR, header_rate: int | None = None) -> Record:
    path = root / "data/raw" / f"{rid}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, bursts(rate), rate, subtype="PCM_16")
    if header_rate is not None:  # damage the header only: bytes 24..31 are the rates
        data = bytearray(path.read_bytes())
        struct.pack_into("<II", data, 24, header_rate, header_rate * 2)
        path.write_bytes(bytes(data))
    return Record(id=rid, audio=f"data/raw/{rid}.wav", duration=5.0, sample_rate=rate,
                  speaker="s", language="es", source="local", sha256=sha256_file(path))


def energy(**kw) -> SegmentParams:
    return SegmentParams(method="energy", **{"workers": 1, **kw})


def test_an_absurd_header_rate_is_rejected_and_an_odd_one_is_cut(tmp_path):
    recs = [recording(tmp_path, "flipped", header_rate=44100 ^ (1 << 23)),  # ~8.4 MHz
            recording(tmp_path, "odd", rate=44101), recording(tmp_path, "plain")]
    summary = segment_all(recs, energy(), tmp_path)
    (bad,) = read_rejects(tmp_path / "data/clips/rejects.jsonl")
    assert (bad.item, bad.reason) == ("data/raw/flipped.wav", "bad_sample_rate")
    assert "8432708 Hz" in bad.detail
    clips = read_manifest(tmp_path / "data/clips/manifest.jsonl")
    offsets = {rid: [c.offset for c in clips if c.recording_id == rid] for rid in ("odd", "plain")}
    assert len(offsets["odd"]) == 2 and np.allclose(offsets["odd"], offsets["plain"], atol=0.03)
    assert summary["rejects"] == {"bad_sample_rate": 1}


def test_resampling_an_odd_rate_stays_in_bounded_memory():
    """44101 -> 16000 Hz once built a 2.8 GB sinc kernel for 3 s of audio (11 GB peak)."""
    code = (
        "import resource, numpy as np, torch, torchaudio\n"
        "from habla.audio import resample\n"
        "x = np.random.default_rng(0).standard_normal(3 * 44101).astype(np.float32)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for target in (16000, 24000):\n"
        "    y = resample(x, 44101, target)\n"
        "    assert abs(len(y) - 3 * target) <= 1, len(y)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert int(out.stdout.strip()) < 200  # MiB over the imports


def test_an_unexpected_error_rejects_one_recording_and_is_retried_next_run(tmp_path,
                                                                           monkeypatch):
    recs = [recording(tmp_path, "fine"), recording(tmp_path, "unlucky")]
    cut = segment.segment_recording
    broken = {"unlucky"}

    def buggy(rec, cfg, root, folder):
        if rec.id in broken:
            (root / folder / "half.wav").write_bytes(b"written before the bug struck")
            raise ZeroDivisionError("simulated bug")
        return cut(rec, cfg, root, folder)

    monkeypatch.setattr(segment, "segment_recording", buggy)
    summary = segment_all(recs, energy(), tmp_path)
    (bad,) = read_rejects(tmp_path / "data/clips/rejects.jsonl")
    assert (bad.item, bad.reason) == ("data/raw/unlucky.wav", "internal_error")
    assert "ZeroDivisionError: simulated bug" in bad.detail
    assert summary["rejects"] == {"internal_error": 1} and summary["recordings_used"] == 1
    assert not (tmp_path / "data/clips/unlucky").exists()  # no half-written clips, no marker
    broken.clear()
    again = segment_all(recs, energy(), tmp_path)
    assert (again["processed"], again["reused"], again["recordings_used"]) == (1, 1, 2)


def test_a_damaged_marker_is_cut_again(tmp_path):
    recs = [recording(tmp_path, "a"), recording(tmp_path, "b")]
    first = segment_all(recs, energy(), tmp_path)
    marker = tmp_path / "data/clips/b/.segment.json"
    data = json.loads(marker.read_text())
    data["records"][0]["duration"] = -1  # valid JSON, invalid record: the key still matches
    marker.write_text(json.dumps(data))
    summary = segment_all(recs, energy(), tmp_path)
    assert (summary["processed"], summary["reused"]) == (1, 1)
    assert summary["clips_out"] == first["clips_out"] and summary["rejects"] == {}


def test_a_recording_that_kills_its_worker_is_rejected_and_the_others_are_cut(tmp_path,
                                                                             monkeypatch):
    recs = [recording(tmp_path, f"r{k}") for k in range(4)]
    monkeypatch.setenv(CRASH_ENV, "r1")
    summary = segment_all(recs, energy(workers=2), tmp_path)
    (bad,) = read_rejects(tmp_path / "data/clips/rejects.jsonl")
    assert (bad.item, bad.reason) == ("data/raw/r1.wav", "worker_crashed")
    assert summary["recordings_used"] == 3 and summary["rejects"] == {"worker_crashed": 1}
    assert not (tmp_path / "data/clips/r1").exists()
    monkeypatch.delenv(CRASH_ENV)  # the crash is not remembered: the next run tries again
    again = segment_all(recs, energy(workers=2), tmp_path)
    assert (again["processed"], again["recordings_used"]) == (1, 4)


def test_the_crash_hook_never_fires_in_the_stage_process(tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_ENV, "only")
    summary = segment_all([recording(tmp_path, "only")], energy(workers=1), tmp_path)
    assert summary["recordings_used"] == 1


def test_the_stage_fails_only_when_no_clip_is_left(tmp_path):
    recs = [recording(tmp_path, "bad", header_rate=1)]
    with pytest.raises(StageError, match="no usable clips.*bad_sample_rate"):
        segment_all(recs, energy(), tmp_path)


def test_ids_that_differ_only_in_case_get_separate_folders(tmp_path):
    a, b = recording(tmp_path, "Take"), recording(tmp_path, "take")
    summary = segment_all([a, b], energy(), tmp_path)
    folders = sorted(p.name for p in (tmp_path / "data/clips").iterdir() if p.is_dir())
    assert len(folders) == 2 and len({f.casefold() for f in folders}) == 2
    assert summary["recordings_used"] == 2
