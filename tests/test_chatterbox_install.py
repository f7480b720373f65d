"""The chatterbox extra cannot break the default install, and installs the way make setup does.

- The family registry imports no upstream code: the default pipeline never needs chatterbox-tts.
- Slow: a fresh venv from the hash-locked requirements.lock plus requirements-nodeps.lock
  (chatterbox-tts without its impossible pins, as `make setup` does) imports the family and
  upstream's T3, S3Gen, voice encoder and `ChatterboxMultilingualTTS` on habla's torch. uv's
  cache makes it a copy, not a download. HABLA_TEST_LOCK: another lock file to install from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_family_registry_imports_no_upstream_code():
    code = ("import sys, habla.families as f; assert 'chatterbox' in f.FAMILIES; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('chatterbox', 'librosa', 'diffusers', 'perth', 's3tokenizer')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_fresh_venv_from_the_locks_runs_the_family(tmp_path):
    uv = Path(sys.executable).parent / "uv"
    if not uv.is_file():
        pytest.skip("uv is not in this venv (make setup installs it)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin/python")
    env = {**os.environ, "UV_LINK_MODE": "hardlink"}
    env.pop("PYTHONPATH", None)
    lock = os.environ.get("HABLA_TEST_LOCK") or str(REPO / "requirements.lock")
    for args in (["sync", lock],
                 ["install", "--no-deps", "--require-hashes", "-r",
                  str(REPO / "requirements-nodeps.lock")]):
        done = subprocess.run([str(uv), "pip", *args[:1], "--python", python, *args[1:]],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    check = ("from habla.families.chatterbox import upstream; assert upstream.available(); "
             "from chatterbox.mtl_tts import ChatterboxMultilingualTTS; import torch, numpy; "
             "print(torch.__version__, numpy.__version__)")
    done = subprocess.run([python, "-W", "ignore", "-c", check], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"},
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    torch_version, numpy_version = done.stdout.split()
    assert torch_version.startswith("2.11.0") and int(numpy_version.split(".")[0]) >= 2
