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


# ---------------------------------------------------------------- round 2: between stages
def _rec(rid: str, **kw) -> str:
    fields = {"id": rid, "audio": f"clips/{rid}.wav", "duration": 1.0, "sample_rate": 16000,
              "speaker": "s", "language": "es", "source": "x", "sha256": "0" * 64, **kw}
    import json

    return json.dumps(fields, ensure_ascii=False)


def test_a_manifest_line_that_is_not_utf8_or_a_manifest_that_is_a_folder_is_named(tmp_path):
    from habla.manifest import ManifestError, read_manifest

    path = tmp_path / "m.jsonl"
    path.write_bytes((_rec("a", text="sí") + "\n").encode() + _rec("b").encode()[:-1]
                     + b', "text": "s\xed"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not UTF-8"):
        read_manifest(path)
    folder = tmp_path / "f.jsonl"
    folder.mkdir()
    with pytest.raises(ManifestError, match="f.jsonl: cannot be read"):
        read_manifest(folder)


def test_an_infinite_duration_is_refused_where_it_is_read(tmp_path):
    from habla.manifest import ManifestError, read_manifest

    path = tmp_path / "m.jsonl"
    path.write_text(_rec("a").replace('"duration": 1.0', '"duration": 1e400') + "\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:1: 'duration'"):
        read_manifest(path)


def test_a_repeated_id_is_a_reject_naming_both_lines_and_the_first_is_kept(tmp_path):
    from habla.manifest import read_manifest

    path = tmp_path / "m.jsonl"
    path.write_text("\n".join([_rec("a", text="uno"), _rec("b"), _rec("a", text="dos")]) + "\n")
    rejects = Rejects("tokenize")
    assert [(r.id, r.text) for r in read_manifest(path, rejects)] == [("a", "uno"), ("b", None)]
    assert [(r.item, r.reason, r.detail) for r in rejects.items] == [
        ("a", "duplicate_id", f"{path}:3: id already on line 1 (that one is kept)")]
    assert len(read_manifest(path)) == 3  # without rejects: the caller judges (segment)


def test_damaged_asr_cache_rows_are_decoded_again_not_trusted(tmp_path):
    from habla.stages.transcribe import AsrCache

    good = {"sha256": "a" * 64, "text": "hola", "avg_logprob": -0.2, "no_speech_prob": 0.01,
            "compression_ratio": 1.1}
    import json

    shard = tmp_path / "aa.jsonl"
    shard.write_bytes(b"\n".join([
        json.dumps(good).encode(), json.dumps({**good, "sha256": "b" * 64, "text": 5}).encode(),
        json.dumps({**good, "sha256": "c" * 64, "avg_logprob": "high"}).encode(),
        b'{"sha256": "' + b"d" * 64 + b'", "text": "s\xed"}', b"[1, 2]", b"garbage",
        json.dumps({**good, "sha256": "e" * 64, "text": "a\u2028b"}, ensure_ascii=False)
        .encode()]) + b"\n")
    got = AsrCache._read(shard)
    assert sorted(got) == ["a" * 64, "e" * 64] and got["e" * 64]["text"] == "a\u2028b"
    folder = tmp_path / "ab.jsonl"
    folder.mkdir()
    assert AsrCache._read(folder) == {}


def test_an_os_error_in_a_stage_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    from habla import runner
    from habla.stages import tokenize

    monkeypatch.chdir(tmp_path)
    _params(tmp_path, [{"kind": "local", "path": "a"}])

    def full(params):
        raise OSError(28, "No space left on device", "data/splits/.train.jsonl.tmp")

    monkeypatch.setattr(tokenize, "run", full)
    with pytest.raises(SystemExit) as exit_:
        runner.run_stage("tokenize")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "habla tokenize: data/splits/.train.jsonl.tmp: No space left on device (fix it and "
        "rerun the stage)")


def test_export_skips_ids_that_are_not_file_names_and_writes_nothing_outside(tmp_path,
                                                                            monkeypatch):
    from habla.export import ExportError, export_ljspeech
    from habla.manifest import sha256_file, write_manifest

    monkeypatch.chdir(tmp_path)
    wav = _wav(tmp_path / "clips" / "x.wav")
    recs = [Record(id=rid, audio="clips/x.wav", duration=0.25, sample_rate=16000, speaker="s",
                   language="es", text="hola", source="x", sha256=sha256_file(wav))
            for rid in ("../../../escaped", "a|b", "x\ny", "sub/dir", "..", "bien", "ñandú")]
    write_manifest(tmp_path / "data/splits/train.jsonl", recs)
    summary = export_ljspeech(tmp_path / "out" / "lj")
    assert summary["clips"] == 2 and summary["skipped"]["bad_id"] == 5
    assert sorted(p.name for p in (tmp_path / "out" / "lj" / "wavs").iterdir()) == [
        "bien.wav", "ñandú.wav"]
    assert not list(tmp_path.rglob("escaped*"))
    import json

    marker = json.loads((tmp_path / "out/lj/.habla-ljspeech.json").read_text())
    assert {c["id"] for c in marker["skipped_clips"]} == {
        "../../../escaped", "a|b", "x\ny", "sub/dir", ".."}
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="afile: exists and is not a folder"):
        export_ljspeech(tmp_path / "afile")


def test_a_damaged_checkpoint_names_the_folder_to_delete(tmp_path):
    from habla.train import _load_checkpoint

    for junk in (b"junk", b"PK\x03\x04" + b"\x00" * 20):
        (tmp_path / "last.pt").write_bytes(junk)
        with pytest.raises(StageError, match=rf"last.pt: damaged checkpoint .*delete "
                                             rf"{tmp_path}"):
            _load_checkpoint(tmp_path / "last.pt")


def test_a_base_the_family_cannot_load_is_named():
    from habla.adapt import _load_base

    class Broken:
        name = "fastspeech2"

        def load_base(self, path, revision):
            raise OSError("Error no file named model.safetensors found in directory base")

    with pytest.raises(StageError, match=r"base: cannot be loaded as a fastspeech2 base "
                                         r"\(OSError: Error no file named model.safetensors"):
        _load_base(Broken(), "base", None)


def test_a_damaged_data_card_is_left_out_with_a_warning(tmp_path, caplog):
    from habla.manifest import read_data_card

    path = tmp_path / "data.json"
    path.write_text('{"train_clips": 3,')
    assert read_data_card(path) is None
    assert "unreadable data card" in caplog.text
    path.write_text('{"train_clips": 3}')
    assert read_data_card(path) == {"train_clips": 3}
    assert read_data_card(tmp_path / "none.json") is None


def test_an_override_below_a_scalar_is_a_params_error(tmp_path):
    path = _params(tmp_path, [{"kind": "local", "path": "a"}])
    for key in ("seed.x", "download.sources.0.name"):
        with pytest.raises(ParamsError, match=rf"override {key}=1: .* is not a section"):
            load_params(path, overrides={key: 1})
    with pytest.raises(ParamsError, match=r"'lr' = \{'value': 1\}"):  # lr not in the file
        load_params(path, overrides={"lr.value": 1})


@pytest.mark.parametrize("repo_id", ["../x", "a/..", "-/-", "ñandú/modelo", "a/b\u200b"])
def test_push_refuses_repo_ids_the_hub_would_refuse_before_any_upload(tmp_path, repo_id):
    from habla.push import PushError, check

    with pytest.raises(PushError, match="is not a hub repo id"):
        check(repo_id, tmp_path / "merged", tmp_path / "card.md")


def test_a_damaged_lora_adapter_is_named_with_the_phase_to_rerun(tmp_path):
    from torch import nn

    from habla.adapt import _load_adapter

    folder = tmp_path / "phase2" / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2, '
                                                '"target_modules": ["lin"]}')
    (folder / "adapter_model.safetensors").write_bytes(b"junk")
    model = nn.Sequential()
    model.add_module("lin", nn.Linear(2, 2))
    with pytest.raises(StageError, match=r"phase2/adapter: cannot load this LoRA adapter "
                                         r"\(.*\); rerun the phase that wrote it \(dvc repro "
                                         r"--force phase2\)"):
        _load_adapter(model, folder)
