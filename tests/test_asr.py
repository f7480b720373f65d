"""habla.asr: the offline Whisper base, loading by path, batched decoding and the guards."""

import os
import shutil

import numpy as np
import pytest

from habla import asr
from habla.asr import (
    WHISPER_BASE_SHA256,
    AsrError,
    hallucination,
    load_asr,
    longest_repeat,
    resolve_model,
    transcribe_arrays,
    whisper_base_dir,
)
from habla.config import AsrParams, TranscribeParams
from habla.manifest import sha256_file
from habla.sources.espeak import Espeak
from habla.text import cer

SENTENCES = ["Mañana iremos a la playa con mis amigos.", "El perro corre por el parque."]


@pytest.fixture(scope="module")
def speech():
    tts = Espeak(seed=3)
    return [tts.synthesize(t, "es-419+klatt", 140, 60)[0] for t in SENTENCES], tts.sample_rate


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory):
    """A copy of the assembled Whisper base under a name faster-whisper cannot download."""
    folder = tmp_path_factory.mktemp("models") / "my-whisper"
    folder.mkdir()
    for f in whisper_base_dir().iterdir():
        try:
            os.link(f, folder / f.name)  # same disk: no 145 MB copy
        except OSError:
            shutil.copyfile(f, folder / f.name)
    return folder


def test_whisper_base_is_assembled_once_from_both_packages_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("HABLA_CACHE", str(tmp_path))
    folder = whisper_base_dir()
    assert folder == tmp_path / "whisper-base"
    assert sha256_file(folder / "model.bin") == WHISPER_BASE_SHA256
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in
                                                                   folder.iterdir()}
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert whisper_base_dir() == folder
    assert (folder / "model.bin").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]  # no temp folders left


def test_damaged_package_halves_are_refused_and_leave_no_model(tmp_path, monkeypatch):
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "model.bin.part1").write_bytes(b"half one")
    (fake / "model.bin.part2").write_bytes(b"half two")
    monkeypatch.setattr(asr, "_package_data", lambda name: fake)
    with pytest.raises(AsrError, match=WHISPER_BASE_SHA256):
        whisper_base_dir(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_packages_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setattr(asr, "_PARTS", ("habla_no_such_package_1", "habla_no_such_package_2"))
    with pytest.raises(AsrError, match=r'pip install "habla\[whisper-base\]"'):
        whisper_base_dir(tmp_path)


def test_a_folder_without_model_files_is_named_in_the_error(tmp_path):
    with pytest.raises(AsrError, match="model.bin"):
        resolve_model(str(tmp_path))


def test_model_loaded_by_folder_path_reads_spanish_batched_as_one_at_a_time(speech,
                                                                              local_folder):
    waves, rate = speech
    params = AsrParams(model=str(local_folder), batch_size=2)
    model = load_asr(params)
    assert load_asr(params) is model  # cached per process
    batched = transcribe_arrays(model, waves, rate, params)
    single = transcribe_arrays(model, waves, rate, params, batched=False)
    assert [r["text"] for r in batched] == [r["text"] for r in single]
    for ref, res in zip(SENTENCES, batched, strict=True):
        assert cer(ref, res["text"]) < 0.3, res
        assert res["avg_logprob"] < 0 and 0 <= res["no_speech_prob"] < 0.5
        assert hallucination(res, TranscribeParams()) is None


def test_noise_gives_no_usable_transcript():
    noise = (np.random.default_rng(0).standard_normal(2 * 16000) * 0.1).astype(np.float32)
    params = AsrParams()
    [res] = transcribe_arrays(load_asr(params), [noise], 16000, params)
    reason = hallucination(res, TranscribeParams())
    assert reason is not None and reason[0] in {"no_speech", "empty_output"}, res


def test_zero_length_and_overlong_waves():
    params = AsrParams()
    [res] = transcribe_arrays(load_asr(params), [np.zeros(0, np.float32)], 16000, params)
    assert res["text"] == "" and hallucination(res, TranscribeParams())[0] == "empty_output"
    with pytest.raises(ValueError, match="longer than one 30 s"):
        transcribe_arrays(load_asr(params), [np.zeros(31 * 16000, np.float32)], 16000, params)


def test_repeated_ngram_loop_is_flagged_with_the_phrase_and_count():
    loop = "Gracias por ver el video. " + "de la casa de la casa de la casa de la casa"
    assert longest_repeat(loop) == ("de la casa", 4)
    reason, detail = hallucination({"text": loop, "no_speech_prob": 0.01,
                                    "compression_ratio": 1.5}, TranscribeParams())
    assert reason == "repetition_loop" and "'de la casa' repeated 4x" in detail


def test_ordinary_sentence_with_a_repeated_word_is_not_a_loop():
    text = "Sí, sí, claro que sí: la casa de la playa."
    res = {"text": text, "no_speech_prob": 0.05, "compression_ratio": 1.1}
    assert hallucination(res, TranscribeParams()) is None


def test_high_compression_ratio_and_no_speech_are_rejected():
    tp = TranscribeParams()
    squeezed = {"text": "jajajajajajajajajajajajajajaja", "no_speech_prob": 0.1,
                "compression_ratio": 3.1}
    assert hallucination(squeezed, tp)[0] == "high_compression"
    silent = {"text": "Gracias.", "no_speech_prob": 0.9, "compression_ratio": 0.9}
    assert hallucination(silent, tp)[0] == "no_speech"


def test_importing_habla_pins_ctranslate2_cpu_kernels_unless_the_user_chose_them():
    import subprocess
    import sys

    probe = ("import os, habla; print(os.environ['CT2_USE_MKL'], "
             "os.environ['ONEDNN_MAX_CPU_ISA'], os.environ.get('CT2_FORCE_CPU_ISA'))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CT2_USE_MKL", "ONEDNN_MAX_CPU_ISA", "CT2_FORCE_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    has_avx2 = " avx2" in open("/proc/cpuinfo").read()
    assert out == ["0", "AVX2", "AVX2" if has_avx2 else "None"]
    mine = subprocess.run([sys.executable, "-c", probe], env={**env, "CT2_USE_MKL": "1"},
                          capture_output=True, text=True, check=True).stdout.split()
    assert mine[0] == "1"
