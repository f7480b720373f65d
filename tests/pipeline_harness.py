"""Tiny but complete runs of every pipeline in the repository, for the tests that need them.

`tiny_project(pipeline)` builds a throw-away git + DVC project running the same stage code as
the checkout (the root pipeline or a recipe), with params shrunk so that every stage runs in
seconds to a minute, runs `dvc repro` once with `HABLA_PARAMS_TRACE` set (each stage appends
the params keys it read) and returns the project. Used by tests/test_dvc_yaml.py (params) and
tests/test_rerun.py (forced reruns, kills and returns to earlier params).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import helpers_pipeline as hp
import yaml

from habla import paths

TRACE_FILE = "params_trace.jsonl"


def tiny_root_params() -> dict[str, Any]:
    """The default pipeline at toy size: 12 sentences, a few training steps, 3 test clips."""
    params = hp.tiny_params()
    params["phase1"].update(max_steps=2, eval_every=1, save_every=1, batch_size=4,
                            warmup_steps=1)
    params["phase2"].update(max_steps=3, eval_every=1, save_every=2, batch_size=4,
                            warmup_steps=1)
    params["merge"].update(parity_utterances=2)
    params["evaluate"].update(max_utterances=3, bootstrap_samples=100, griffin_lim_iters=4,
                              samples_in_report=2)
    return params


def tiny_base_recipe_params() -> dict[str, Any]:
    """recipes/base-es at toy size: one short recording, a 2-step pretraining."""
    params = hp.tiny_params()
    params["pretrain"].update(hidden_size=32, layers=1, linear_units=32, max_steps=2,
                              eval_every=1, save_every=1, max_minutes=None, warmup_steps=1,
                              val_fraction=0.2)
    return params


CHATTERBOX_RECIPE = "recipes/chatterbox-es419"
TINY_BASE = "tiny_base"  # a tiny random Chatterbox in the real layout, inside the recipe


def tiny_chatterbox_recipe_params() -> dict[str, Any]:
    """recipes/chatterbox-es419 at toy size: the tiny corpus, a tiny random Chatterbox as the
    base (built by `chatterbox_tiny`), a few steps per phase with the word guide on."""
    from habla.config import load_params

    params = load_params(hp.REPO / CHATTERBOX_RECIPE / "params.yaml").model_dump(mode="json")
    tiny = hp.tiny_params()
    for key in ("download", "segment", "asr", "transcribe"):
        params[key] = tiny[key]
    params["lr"] = 1e-3
    params["model"]["base"] = TINY_BASE
    steps = {"eval_every": 1, "save_every": 1, "batch_size": 4, "grad_accum": 1,
             "warmup_steps": 1, "precision": "no", "lora": {"r": 4, "alpha": 8, "dropout": 0.05}}
    params["phase1"].update(steps, max_steps=2)
    params["phase2"].update(steps, max_steps=4)
    params["merge"].update(parity_utterances=2)
    params["evaluate"].update(max_utterances=3, bootstrap_samples=100, samples_in_report=2)
    params["chatterbox"]["word_guide"].update(weight=0.1, heads=[[1, 0], [1, 1]])
    params["chatterbox"]["synthesis"].update(max_new_tokens=60)
    return params


def _tiny_chatterbox_base(recipe: Path) -> None:
    from chatterbox_tiny import make_tiny_chatterbox

    make_tiny_chatterbox(recipe / TINY_BASE)


PIPELINES = {
    ".": tiny_root_params,
    "recipes/base-es": tiny_base_recipe_params,
    CHATTERBOX_RECIPE: tiny_chatterbox_recipe_params,
}
# what a pipeline's tiny project needs besides its params (the recipe folder is passed)
SETUP = {CHATTERBOX_RECIPE: _tiny_chatterbox_base}


def make_tiny_project(dest: Path, pipeline: str = ".") -> Path:
    """A fresh project whose root runs `pipeline`'s dvc.yaml with tiny params."""
    project = hp.make_project(dest, PIPELINES[pipeline]())
    if pipeline != ".":
        # a recipe runs from its own folder with the project's stages/ and src/ two levels up
        recipe = project / pipeline
        recipe.mkdir(parents=True)
        shutil.copy2(hp.REPO / pipeline / "dvc.yaml", recipe / "dvc.yaml")
        shutil.move(project / "params.yaml", recipe / "params.yaml")
        (project / "dvc.yaml").unlink()
        if pipeline in SETUP:
            SETUP[pipeline](recipe)
        hp.commit(project, "recipe")
    return project


def workdir(project: Path, pipeline: str) -> Path:
    return project if pipeline == "." else project / pipeline


def run_repro(project: Path, pipeline: str, *args: str, trace: bool = True):
    env_extra = {"HABLA_PARAMS_TRACE": str(project / TRACE_FILE)} if trace else {}
    dvc_file = "dvc.yaml" if pipeline == "." else f"{pipeline}/dvc.yaml"
    return hp.dvc(project, "repro", dvc_file, *args, env_extra=env_extra)


def read_traces(project: Path, pipeline: str) -> dict[str, set[str]]:
    """stage -> params keys it read, over every traced run in `project`."""
    out: dict[str, set[str]] = {}
    path = project / TRACE_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            out.setdefault(row["stage"], set()).update(row["params"])
    return out


def output_paths(project: Path, pipeline: str) -> dict[str, list[Path]]:
    """stage -> its declared output paths (absolute), from the pipeline's dvc.yaml."""
    wdir = workdir(project, pipeline)
    spec = yaml.safe_load((wdir / "dvc.yaml").read_text())["stages"]
    return {name: [wdir / p for p in (str(x) for x in paths.OUTPUTS[name])] for name in spec}


def _content(path: Path) -> bytes:
    """A file's bytes, without the parts named as run-dependent: the report's provenance
    header (commit, date, stage times, machine) is marked data-volatile."""
    if path.suffix == ".html":
        from habla.report.html import strip_volatile

        return strip_volatile(path.read_text(encoding="utf-8")).encode()
    return path.read_bytes()


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of `path` itself), by relative name, apart from
    the named run-dependent fields (`_content`)."""
    if path.is_file():
        return {".": hashlib.sha256(_content(path)).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(_content(p)).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}
