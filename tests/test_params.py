"""params.yaml validation through `habla.config.load_params`: casts, and errors that name the
key, the file and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from habla.config import ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """\
download:
  sources:
    - kind: synthetic
      voices:
        - {speaker: a, voice: es}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_params_file_validates():
    params = load_params(REPO / "params.yaml")
    assert params.segment.min_duration < params.segment.max_duration
    assert params.download.sources


def test_learning_rate_written_as_5e_05_is_read_as_a_float(tmp_path):
    text = MINIMAL + "lr: 5e-05\n"
    assert yaml.safe_load(text)["lr"] == "5e-05", "PyYAML reads it as a string"
    params = load_params(write(tmp_path, text))
    assert isinstance(params.lr, float) and params.lr == 5e-5


def test_misspelt_key_names_the_key_the_file_and_the_valid_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "segment:\n  max_duraton: 12\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "unknown key 'segment.max_duraton'" in msg
    assert "max_duration" in msg and "min_duration" in msg  # the valid keys are listed


def test_unknown_top_level_section_is_named(tmp_path):
    path = write(tmp_path, MINIMAL + "tokenise:\n  vocab_size: 10\n")
    with pytest.raises(ParamsError, match=r"unknown key 'tokenise'.*Valid keys here:.*tokenize"):
        load_params(path)


def test_wrong_type_names_the_key_and_what_was_expected(tmp_path):
    path = write(tmp_path, MINIMAL + "segment:\n  sample_rate: fast\n")
    with pytest.raises(ParamsError, match=r"'segment.sample_rate' = 'fast'.*valid integer"):
        load_params(path)


def test_typo_inside_the_first_source_is_located_in_the_list(tmp_path):
    path = write(tmp_path, MINIMAL.replace("voices:", "voicez:"))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    msg = str(err.value)
    assert "unknown key 'download.sources[0].voicez'" in msg
    assert "voices" in msg and "recording_seconds" in msg  # SyntheticSource's keys
    assert "missing key 'download.sources[0].voices'" in msg


def test_unknown_source_kind_lists_the_kinds(tmp_path):
    path = write(tmp_path, MINIMAL.replace("kind: synthetic", "kind: synthetik"))
    with pytest.raises(ParamsError, match=r"download.sources\[0\].*'synthetik'.*'synthetic'"):
        load_params(path)


def test_dvc_exp_run_set_param_overrides_are_cast(tmp_path):
    # exactly what `dvc exp run -S ...` does to params.yaml before the stages run
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    apply_overrides(path, ["lr=5e-5", "segment.max_duration=15", "tokenize.vocab_size=48"])
    assert "lr: 5e-05" in path.read_text()
    params = load_params(path)
    assert params.lr == 5e-5 and params.segment.max_duration == 15.0
    assert params.tokenize.vocab_size == 48


def test_overrides_argument_sets_nested_keys_and_is_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    params = load_params(path, overrides={"segment.max_duration": "15", "lr": "2e-4"})
    assert params.segment.max_duration == 15.0 and params.lr == 2e-4
    with pytest.raises(ParamsError, match=r"'segment.margin' = 'x'"):
        load_params(path, overrides={"segment.margin": "x"})


@pytest.mark.parametrize("min_d,max_d", [(5, 4), (4, 4)])
def test_min_duration_at_or_above_max_duration_is_refused(tmp_path, min_d, max_d):
    segment = f"segment:\n  min_duration: {min_d}\n  max_duration: {max_d}\n"
    path = write(tmp_path, MINIMAL + segment)
    with pytest.raises(ParamsError, match=r"'segment'.*min_duration .* must be below max_dur"):
        load_params(path)


def test_missing_file_bad_yaml_and_non_mapping_are_clear(tmp_path):
    with pytest.raises(ParamsError, match=r"nope.yaml: no such params file"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML"):
        load_params(write(tmp_path, "seed: [1\n"))
    with pytest.raises(ParamsError, match=r"expected a mapping of sections, got list"):
        load_params(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ParamsError, match=r"missing key 'download'"):
        load_params(write(tmp_path, "seed: 3\n"))
