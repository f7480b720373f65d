"""Building throw-away DVC projects for the pipeline tests.

In: this checkout (dvc.yaml, stages/, src/, params.yaml). Out: a temp git+DVC repo with a tiny
params.yaml, and helpers that run `dvc`/`git` there with the venv's tools first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# HABLA_TEST_REPO: run the pipeline tests against another checkout (e.g. a work tree)
REPO = Path(os.environ.get("HABLA_TEST_REPO") or Path(__file__).resolve().parents[1])
VENV_BIN = Path(sys.executable).parent
# The data stages, in pipeline order; training stages are too slow for a test run.
DATA_STAGES = ("download", "segment", "transcribe", "timestamps", "tokenize")

TINY_SOURCE = {
    "kind": "synthetic",
    "name": "tiny",
    "language": "es",
    "voices": [{"speaker": "lat_f2", "voice": "es-419+klatt", "rate": 150, "pitch": 60}],
    "sentences": 12,
    "recording_seconds": [60.0, 90.0],  # 12 short sentences fit in one recording
    "pause_seconds": [0.4, 0.8],
}


def _outputs(spec: dict[str, Any]) -> list[str]:
    outs = []
    for key in ("outs", "metrics", "plots"):
        for item in spec.get(key) or []:
            outs.append(next(iter(item)) if isinstance(item, dict) else item)
    return outs


def stage_available(name: str, pipeline: dict[str, Any], produced: set[str],
                    repo: Path = REPO) -> bool:
    """A stage counts as implemented when its module has a real `run` and every dependency
    that no earlier stage produces is present in the checkout."""
    module = repo / "src/habla/stages" / f"{name}.py"
    spec = pipeline["stages"][name]
    scripts = re.findall(r"\S+\.py", spec["cmd"])  # the entry script the cmd runs
    if not module.is_file() or not all((repo / x).is_file() for x in scripts):
        return False
    source = module.read_text(encoding="utf-8")
    if not re.search(r"^def run\(", source, re.M) or "NotImplementedError" in source:
        return False
    for dep in spec.get("deps") or []:
        inside_output = any(dep == out or dep.startswith(out.rstrip("/") + "/")
                            for out in produced)
        if not inside_output and not (repo / dep).exists():
            return False
    return True


def available_prefix(repo: Path = REPO) -> list[str]:
    """The longest run of DATA_STAGES, from the start, that is implemented."""
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    produced: set[str] = set()
    prefix = []
    for name in DATA_STAGES:
        if name not in pipeline["stages"] or not stage_available(name, pipeline, produced, repo):
            break
        prefix.append(name)
        produced.update(_outputs(pipeline["stages"][name]))
    return prefix


def tiny_params(repo: Path = REPO) -> dict[str, Any]:
    """The checkout's params with every schema default written out, one short recording,
    one worker, and label filters loose enough that a dozen espeak clips survive."""
    from habla.config import load_params

    params = load_params(repo / "params.yaml").model_dump(mode="json")
    params["download"]["sources"] = [TINY_SOURCE]
    params["download"]["workers"] = 1
    params["segment"]["workers"] = 1
    params["asr"]["cpu_threads"] = 1
    params["transcribe"].update(max_wer=1.0, max_cer=0.6)
    return params


def dvc_param_keys(repo: Path = REPO) -> dict[str, list[str]]:
    """stage -> the params.yaml keys its `params:` list names (`repo`: a folder holding a
    dvc.yaml, the project's or a recipe's)."""
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    out: dict[str, list[str]] = {}
    for name, spec in pipeline["stages"].items():
        keys: list[str] = []
        for item in spec.get("params") or []:
            if isinstance(item, dict):  # {other_file.yaml: [keys]}
                continue
            keys.append(item)
        out[name] = keys
    return out


def env(project: Path) -> dict[str, str]:
    out = dict(os.environ)
    # write bytecode as a user's machine does: __pycache__ must not change stage deps
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{out.get('PATH', '')}",
        # the stages must run the project's copy of habla, not the editable install
        "PYTHONPATH": str(project / "src"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    })
    return out


def run(project: Path, *cmd: str, check: bool = True, env_extra: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), cwd=project, env={**env(project), **(env_extra or {})},
                          capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}) in {project}:\n"
                             f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def dvc(project: Path, *args: str, check: bool = True, env_extra: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return run(project, str(VENV_BIN / "dvc"), *args, check=check, env_extra=env_extra)


def git(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args)


def commit(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "--allow-empty", "-m", message)


def make_project(dest: Path, params: dict[str, Any] | None = None, repo: Path = REPO) -> Path:
    """A fresh git + DVC repo at `dest` with this checkout's pipeline and `params`."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("src", "stages"):
        shutil.copytree(repo / folder, dest / folder, ignore=ignore)
    # timestamps (method tts) and training read the shipped base model, as in the checkout
    if (repo / "models/base").is_dir():
        shutil.copytree(repo / "models/base", dest / "models/base", ignore=ignore)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (repo / name).exists():
            shutil.copy2(repo / name, dest / name)
    (dest / "params.yaml").write_text(
        yaml.safe_dump(params if params is not None else tiny_params(repo), sort_keys=False),
        encoding="utf-8")
    run(dest, "git", "init", "-q", "-b", "main")
    dvc(dest, "init", "-q")
    dvc(dest, "config", "core.analytics", "false")
    commit(dest, "pipeline")
    return dest


def ran(output: str) -> set[str]:
    """Stages that `dvc repro`/`dvc exp run` executed, from their log."""
    # run from a project's root, dvc names a recipe's stages "recipes/x/dvc.yaml:stage"
    return set(re.findall(r"Running stage '(?:[^':]*dvc\.yaml:)?([\w-]+)'", output))


def skipped(output: str) -> set[str]:
    return set(re.findall(r"Stage '(?:[^':]*dvc\.yaml:)?([\w-]+)' didn't change, skipping",
                          output))


def lock_md5(project: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for o in lock["stages"][stage].get("outs", [])}
