"""Inputs found by a hostile-input audit: each one once lost data, printed a traceback or
was silently dropped. Source names that leave data/raw, a source folder the pipeline deletes,
a params file with a repeated key, infinities or the wrong encoding, a transcript with a
4301-digit number, HF rows holding NaN or control characters, and an explicit transcript
file that is not a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from habla.config import LocalSource, ParamsError, load_params
from habla.errors import StageError
from habla.manifest import Record, Rejects
from habla.sources import local
from habla.stages import download
from habla.stages.transcribe import _usable
from habla.text import normalize, spell_digits


def _params(tmp_path: Path, sources: list[dict], **top) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "download": {"sources": sources, "workers": 1},
                                    **top}), encoding="utf-8")
    return path


def _wav(path: Path, seconds: float = 0.25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(16000 * seconds), 0.1, np.float32), 16000)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _wav(tmp_path / "audio" / "a.wav")
    return tmp_path


# ---------------------------------------------------------------- source names
@pytest.mark.parametrize("name", ["../../victim", "..", ".", "a/b", "manifest.jsonl", "",
                                  "-x", "x" * 65, "dos palabras"])
def test_a_source_name_that_is_not_one_plain_folder_name_is_refused_before_any_work(
        project, name):
    victim = project / "victim" / "important.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    path = _params(project, [{"kind": "local", "name": name, "path": "audio"}])
    with pytest.raises(ParamsError, match=r"download\.sources\[0\]\.name"):
        load_params(path)
    assert victim.read_text() == "keep me"


def test_plain_source_names_are_accepted(project):
    names = ["es419", "lat_f2", "Corpus-2", "x" * 64]
    path = _params(project, [{"kind": "local", "name": n, "path": "audio"} for n in names])
    assert [s.name for s in load_params(path).download.sources] == names


# ---------------------------------------------------------------- folders the pipeline rebuilds
@pytest.mark.parametrize("inside", ["data/raw/myrecs", "data/raw", "data/clips/mine",
                                    "models/merged/x"])
def test_a_local_source_inside_a_rebuilt_output_is_refused_and_kept(project, inside):
    recording = _wav(project / inside / "take1.wav")
    params = load_params(_params(project, [{"kind": "local", "name": "mine", "path": inside}]))
    with pytest.raises(StageError, match="deletes and rebuilds"):
        download.run(params)
    assert recording.is_file()


@pytest.mark.parametrize("holder", [".", "data", "models"])
def test_a_local_source_holding_a_rebuilt_output_is_refused(project, holder):
    _wav(project / "data" / "raw" / "old" / "x.wav")
    params = load_params(_params(project, [{"kind": "local", "name": "mine", "path": holder}]))
    with pytest.raises(StageError, match="which the pipeline writes while it reads"):
        download.run(params)
    assert (project / "data" / "raw" / "old" / "x.wav").is_file()


def test_a_local_source_beside_the_outputs_is_used(project):
    _wav(project / "data" / "recordings" / "take1.wav")
    params = load_params(_params(project, [{"kind": "local", "name": "mine",
                                            "path": "data/recordings"}]))
    assert download.run(params)["recordings"] == 1


# ---------------------------------------------------------------- params files
def test_a_key_given_twice_is_an_error_naming_the_key_and_both_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("download:\n  sources:\n    - {kind: local, path: a}\n"
                    "segment:\n  workers: 1\n  min_duration: 2.0\n"
                    "segment:\n  margin: 0.2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"key 'segment' appears twice .*lines 4 and 7"):
        load_params(path)


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("download:\n  sources:\n    - {kind: local, path: a}\n"
                    "phase1: &phase {max_steps: 5, warmup_steps: 1}\n"
                    "phase2:\n  <<: *phase\n  max_steps: 7\n", encoding="utf-8")
    params = load_params(path)
    assert (params.phase1.max_steps, params.phase2.max_steps) == (5, 7)


@pytest.mark.parametrize(("key", "text"), [
    ("lr", "lr: .inf\n"), ("segment.margin", "segment: {margin: .inf}\n"),
    ("segment.loudness_db", "segment: {loudness_db: -.inf}\n"),
    ("transcribe.max_cer", "transcribe: {max_cer: .nan}\n"),
    ("segment.loudness_db", "segment: {loudness_db: -400}\n"),  # silent clips, no reject
    ("segment.sample_rate", "segment: {sample_rate: 1000000000}\n")])
def test_infinity_nan_and_values_that_ruin_the_audio_are_refused_with_the_key(tmp_path, key, text):
    path = tmp_path / "params.yaml"
    path.write_text("download:\n  sources:\n    - {kind: local, path: a}\n" + text,
                    encoding="utf-8")
    with pytest.raises(ParamsError, match=rf"'{key}'"):
        load_params(path)


@pytest.mark.parametrize("seed", [-5, 2**32, "1e30"])
def test_a_seed_numpy_or_torch_would_refuse_is_refused_up_front(tmp_path, seed):
    path = _params(tmp_path, [{"kind": "local", "path": "a"}], seed=seed)
    with pytest.raises(ParamsError, match="'seed'"):
        load_params(path)


def test_a_params_file_that_is_not_utf8_or_not_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("download:\n  sources: []\n# año\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="not UTF-8 text"):
        load_params(path)
    folder = tmp_path / "pdir"
    folder.mkdir()
    with pytest.raises(ParamsError, match="cannot be read"):
        load_params(folder)


# ---------------------------------------------------------------- text
def test_a_digit_run_longer_than_python_parses_is_left_as_digits():
    digits = "7" * 5000
    assert normalize(f"Mi número es {digits}.") == f"mi número es {digits}"
    assert spell_digits(f"a {digits} b") == f"a {digits} b"
    assert normalize("0000000005 y 1.000") == "cinco y mil"  # leading zeros are no value


def test_transcribe_rejects_one_clip_it_cannot_check_and_keeps_the_others(tmp_path,
                                                                          monkeypatch):
    from habla.manifest import sha256_file
    from habla.stages import transcribe

    good, odd = _wav(tmp_path / "good.wav"), _wav(tmp_path / "odd.wav")
    digest = sha256_file(good)

    def checked(path):  # a fault while checking one clip (a bug, a flaky disk)
        if Path(path).name == "odd.wav":
            raise RuntimeError("boom")
        return digest

    monkeypatch.setattr(transcribe, "sha256_file", checked)
    clips = [Record(id=i, audio=str(audio), duration=0.25, sample_rate=16000, speaker="s",
                    language="es", source="mine", text=text, sha256=digest)
             for i, audio, text in (("a", good, "Hola " + "7" * 5000), ("b", odd, "hola"),
                                    ("c", good, "hola"))]
    rejects = Rejects("transcribe")
    kept = _usable(clips, rejects)
    assert [c.id for c in kept] == ["a", "c"]
    assert [(r.item, r.reason, r.detail) for r in rejects.items] == [
        ("b", "internal_error", "RuntimeError: boom")]


# ---------------------------------------------------------------- hf rows
def test_hf_rows_with_nan_or_inf_audio_or_control_characters_are_rejected(tmp_path):
    datasets = pytest.importorskip("datasets")
    from habla.config import HfSource
    from habla.sources import hf

    tone = (0.2 * np.sin(np.arange(4000) / 5)).astype(np.float32)
    inf = tone.copy()
    inf[100:200] = np.inf
    rows = {"audio": [{"array": tone, "sampling_rate": 16000},
                      {"array": np.full(4000, np.nan, np.float32), "sampling_rate": 16000},
                      {"array": inf, "sampling_rate": 16000},
                      {"array": tone, "sampling_rate": 16000}],
            "text": ["Hola.", "nan", "inf", "tab\x00nul"]}
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))
    src = HfSource(kind="hf", name="cv", dataset=str(folder))
    result = hf.prepare(src, tmp_path / "raw" / "cv")
    assert [r.text for r in result.records] == ["Hola."]
    got = {r.item.rsplit("[", 1)[1]: (r.reason, r.detail) for r in result.rejects.items}
    assert got["1]"][0] == got["2]"][0] == "non_finite"
    assert "0.006 s" in got["2]"][1]  # where the first bad sample is
    assert got["3]"] == ("bad_text", "the row's text holds control character U+0000")
    assert sorted(p.name for p in (tmp_path / "raw" / "cv").iterdir()) == ["cv_000000.wav"]


# ---------------------------------------------------------------- transcripts
def test_an_explicit_transcript_file_that_is_a_folder_fails_the_source_clearly(tmp_path):
    folder = tmp_path / "mine"
    _wav(folder / "a.wav")
    (folder / "metadata.csv").mkdir()
    _wav(folder / "metadata.csv" / "b.wav")
    src = LocalSource(kind="local", name="mine", path=str(folder), transcripts="ljspeech")
    with pytest.raises(StageError, match="transcripts: ljspeech was asked for, but "
                                         "metadata.csv is not a regular file"):
        local.prepare(src, folder, tmp_path / "raw" / "mine")
    auto = LocalSource(kind="local", name="mine", path=str(folder))
    result = local.prepare(auto, folder, tmp_path / "raw" / "mine")
    assert len(result.records) == 2
    assert any("metadata.csv is not a regular file" in w for w in result.warnings)
