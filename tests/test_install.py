"""The install paths a user takes: plain pip from pyproject.toml, not only the lockfile.

`make setup` installs the hash-locked requirements.lock, but `pip install -e ".[dev]"` resolves
pyproject.toml afresh, and once picked torchaudio 2.11.1 beside torch 2.11.0 (which cannot
load together). This builds a fresh venv the plain way, checks that habla imports with torch
and torchaudio loading together (and transformers' Whisper, which imports torchaudio), and
runs an audio test module with it. Slow: it downloads and installs the whole stack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import habla

REPO = Path(__file__).resolve().parents[1]


def test_torch_pair_problem_names_both_versions_and_the_fix():
    msg = habla.torch_pair_problem("2.11.0", "2.11.1")
    assert "torch 2.11.0" in msg and "torchaudio 2.11.1" in msg
    assert 'pip install "torchaudio==2.11.0"' in msg
    assert habla.torch_pair_problem("2.11.0+cu130", "2.11.0") is None
    assert habla.torch_pair_problem("2.11.0", None) is None  # no torchaudio: nothing to load


def test_import_fails_with_that_message_when_the_pair_does_not_match():
    code = ("import importlib.metadata as m; real = m.version; "
            "m.version = lambda n: '2.11.1' if n == 'torchaudio' else real(n); import habla")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "torchaudio 2.11.1" in done.stderr and "torchaudio==2.11.0" in done.stderr


@pytest.mark.slow
def test_plain_pip_install_from_pyproject_loads_torchaudio_and_passes_an_audio_test(tmp_path):
    project = tmp_path / "habla"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", project / "src", ignore=ignore)
    shutil.copytree(REPO / "tests", project / "tests", ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("PYTHONPATH", None)
    pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
                          "-e", f"{project}[dev]"], capture_output=True, text=True, env=env)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    check = ("import habla, torch, torchaudio, torchaudio.functional as F; "
             "from transformers import WhisperForConditionalGeneration; "
             "x = torch.zeros(22050); assert F.resample(x, 22050, 24000).shape[0] == 24000; "
             "print(torch.__version__, torchaudio.__version__)")
    done = subprocess.run([str(venv / "bin/python"), "-c", check], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    torch_v, audio_v = done.stdout.split()
    assert torch_v.split("+")[0] == audio_v.split("+")[0]
    tests = subprocess.run([str(venv / "bin/python"), "-m", "pytest", "-q", "-p",
                            "no:cacheprovider", "tests/test_vad.py"],
                           capture_output=True, text=True, env=env, cwd=project)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
