"""`habla synth` on a tiny speecht5 model folder."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from test_speecht5 import TEXTS, make_base

from habla.errors import StageError
from habla.families.speecht5 import SpeechT5Family
from habla.model_folder import save_info
from habla.synth import synth
from habla.tokenizer import save_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_base(root / "base")
    save_tokenizer(train_tokenizer(TEXTS * 5, "char"), root / "tok")
    family = SpeechT5Family()
    model = family.load_base(str(root / "base"))
    family.hook_tokenizer(model, root / "tok", str(root / "base"))
    family.add_speaker(model, "lat_f2")
    family.add_speaker(model, "es_m3")
    out = root / "model"
    family.save_merged(model, out)
    save_tokenizer((root / "tok/spm.model").read_bytes(), out / "tokenizer")
    save_info(out, family.info)
    return out


def test_synth_writes_a_16_bit_wav_at_the_model_rate(model_dir, tmp_path):
    summary = synth("hola mundo", model_dir, tmp_path / "a.wav", speaker="es_m3")
    info = sf.info(tmp_path / "a.wav")
    assert info.subtype == "PCM_16" and info.samplerate == 16000 and info.frames >= 256
    assert summary["speaker"] == "es_m3" and summary["family"] == "speecht5"
    synth("hola mundo", model_dir, tmp_path / "b.wav", speaker="es_m3")
    a, _ = sf.read(tmp_path / "a.wav")
    b, _ = sf.read(tmp_path / "b.wav")
    np.testing.assert_array_equal(a, b)  # seeded: same text, same audio


def test_synth_names_the_valid_speakers_for_an_unknown_one(model_dir, tmp_path):
    with pytest.raises(StageError, match="unknown speaker 'nadie'.*lat_f2, es_m3"):
        synth("hola", model_dir, tmp_path / "x.wav", speaker="nadie")
    assert not (tmp_path / "x.wav").exists()


def test_synth_says_which_model_folder_is_missing(tmp_path):
    with pytest.raises(StageError, match="models/nothing does not exist"):
        synth("hola", "models/nothing", tmp_path / "x.wav")


def test_synth_command_line_writes_the_file(model_dir, tmp_path):
    from typer.testing import CliRunner

    from habla.cli import app

    result = CliRunner().invoke(app, ["synth", "hola", "--model", str(model_dir), "-o",
                                      str(tmp_path / "c.wav")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.wav").is_file()
