"""The hf source on a tiny dataset saved to disk: audio decoded to WAV, text and speaker
columns read, a missing column named with the available ones, undecodable rows rejected."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from habla.config import HfSource
from habla.errors import StageError
from habla.sources import hf

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    paths = []
    for i, rate in enumerate((16000, 22050, 8000)):
        path = tmp / f"clip{i}.wav"
        t = np.arange(int(0.25 * rate)) / rate
        sf.write(path, (0.2 * np.sin(2 * np.pi * 200 * (i + 1) * t)).astype(np.float32), rate)
        paths.append(str(path))
    ds = datasets.Dataset.from_dict({
        "audio": paths, "sentence": ["Hola.", "¿Qué tal?", ""], "client": ["ana", "leo", "ana"],
    }).cast_column("audio", datasets.Audio())
    folder = tmp / "tiny"
    ds.save_to_disk(str(folder))
    for p in paths:  # the saved dataset must carry its own audio bytes
        (tmp / p).unlink()
    return folder, paths


def _src(folder, **kw) -> HfSource:
    defaults = {"kind": "hf", "name": "cv", "dataset": str(folder), "text_column": "sentence",
                "speaker_column": "client"}
    return HfSource(**{**defaults, **kw})


def test_rows_become_wav_files_with_text_and_speaker(saved, tmp_path):
    folder, paths = saved
    result = hf.prepare(_src(folder), tmp_path / "raw" / "cv")
    assert [(r.text, r.speaker, r.sample_rate) for r in result.records] == [
        ("Hola.", "ana", 16000), ("¿Qué tal?", "leo", 22050), (None, "ana", 8000)]
    # the source files are gone: the audio came from the bytes stored in the dataset
    assert not any(Path(p).exists() for p in paths)
    for rec in result.records:
        got, _ = sf.read(rec.audio, dtype="float32")
        assert sf.info(rec.audio).subtype == "PCM_16"
        assert rec.duration == pytest.approx(0.25, abs=1e-3)
        assert np.abs(got).max() == pytest.approx(0.2, abs=1e-3)
    assert any("1 row(s) have an empty 'sentence'" in w for w in result.warnings)


def test_limit_takes_the_first_rows(saved, tmp_path):
    folder, _ = saved
    result = hf.prepare(_src(folder, limit=2), tmp_path / "raw" / "cv")
    assert len(result.records) == 2 and result.files_in == 2


def test_missing_column_is_named_with_the_available_ones(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(StageError, match=r"text_column 'text'.*available: audio, sentence, "
                                         r"client"):
        hf.prepare(_src(folder, text_column="text"), tmp_path / "raw" / "cv")


def test_undecodable_audio_rows_are_rejected_and_the_rest_kept(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.full(800, 0.1, np.float32), 8000)
    ds = datasets.Dataset.from_dict({
        "audio": [{"bytes": good.read_bytes(), "path": "good.wav"},
                  {"bytes": b"not audio at all", "path": "bad.wav"}],
        "text": ["uno", "dos"],
    }).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "mixed"))
    result = hf.prepare(_src(tmp_path / "mixed", text_column="text", speaker_column=None),
                        tmp_path / "raw" / "mixed")
    assert [r.text for r in result.records] == ["uno"]
    assert [(r.item.endswith("[1]"), r.reason) for r in result.rejects.items] == [
        (True, "unreadable")]


def test_unknown_local_folder_or_hub_id_offline_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="cannot load"):
        hf.prepare(_src("no-such-org/no-such-dataset-habla"), tmp_path / "raw" / "x")


def test_damaged_rows_are_rejected_by_reason_and_a_bug_costs_one_row(tmp_path, monkeypatch):
    import io
    import struct

    buf = io.BytesIO()
    sf.write(buf, np.full(800, 0.1, np.float32), 8000, format="WAV")
    good = buf.getvalue()
    flipped = bytearray(good)
    struct.pack_into("<II", flipped, 24, 8000 ^ (1 << 23), (8000 ^ (1 << 23)) * 2)
    ds = datasets.Dataset.from_dict({
        "audio": [{"bytes": good, "path": "a.wav"}, {"bytes": bytes(flipped), "path": "b.wav"},
                  {"bytes": good, "path": "c.wav"}, {"bytes": good, "path": "d.wav"}],
        "text": ["uno", "dos", "tres", "cuatro"],
    }).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "set"))
    write = hf.write_wav

    def buggy(path, wave, rate):
        if path.name.endswith("000002.wav"):
            raise OSError("disk quota exceeded")
        return write(path, wave, rate)

    monkeypatch.setattr(hf, "write_wav", buggy)
    result = hf.prepare(_src(tmp_path / "set", text_column="text", speaker_column=None),
                        tmp_path / "raw" / "set")
    assert [r.text for r in result.records] == ["uno", "cuatro"]
    assert [(r.item[-3:], r.reason) for r in result.rejects.items] == [
        ("[1]", "bad_sample_rate"), ("[2]", "internal_error")]
    assert "disk quota" in result.rejects.items[1].detail


@pytest.mark.parametrize(("cell", "reason"), [
    ({"array": np.zeros((2, 2, 2)), "sampling_rate": 16000}, "unreadable"),
    ({"array": np.zeros(100), "sampling_rate": 0}, "bad_sample_rate"),
    ({"array": np.zeros(100), "sampling_rate": None}, "unreadable"),
    ({"bytes": None, "path": None}, "empty"),
])
def test_array_cells_are_checked(cell, reason):
    from habla.audio import AudioError

    with pytest.raises(AudioError) as err:
        hf.decode(cell)
    assert err.value.reason == reason
