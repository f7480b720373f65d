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


ASR_RECIPE = "recipes/asr-es419"


def tiny_asr_recipe_params() -> dict[str, Any]:
    """recipes/asr-es419 at toy size: the real whisper-base, one short recording of one
    voice, one or two steps per phase, two test clips."""
    import yaml

    recipe = yaml.safe_load((hp.REPO / ASR_RECIPE / "params.yaml").read_text("utf-8"))
    params = hp.tiny_params()
    for key in ("asr", "transcribe", "timestamps", "model", "whisper", "segment"):
        params[key].update(recipe[key])
    params["segment"]["workers"] = 1
    params["asr"]["cpu_threads"] = 1
    params["tokenize"]["by_speaker"] = False  # the tiny corpus has one voice
    small = {"max_steps": 2, "eval_every": 1, "save_every": 1, "batch_size": 1,
             "warmup_steps": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    params["phase1"].update(small, max_steps=1)
    params["phase2"].update(small)
    params["merge"].update(parity_utterances=1)
    params["evaluate"].update(max_utterances=2, bootstrap_samples=100, samples_in_report=2)
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


XTTS_RECIPE = "recipes/xtts-es419"
XTTS_BASE = "models/xtts-tiny"  # inside the recipe folder, written by prepare_xtts_recipe


def tiny_xtts_recipe_params() -> dict[str, Any]:
    """recipes/xtts-es419 at toy size: its youtube source pointed at a talk served on this
    machine (tests/media_server.py; yt-dlp's generic extractor), a tiny random XTTS-v2, Whisper
    base on the CPU, two steps per phase, two test sentences."""
    from habla.config import load_params

    params = load_params(hp.REPO / XTTS_RECIPE / "params.yaml").model_dump(mode="json")
    source = params["download"]["sources"][0]
    source["urls"] = [local_talk_url()]
    params["download"]["workers"] = 1
    params["segment"].update(workers=1, min_duration=1.0, max_duration=20.0)
    params["asr"].update(model="whisper-base", device="cpu", compute_type="int8", batch_size=1,
                         beam_size=1, cpu_threads=1)
    params["transcribe"].update(max_wer=1.0, max_cer=0.6)
    params["model"].update(base=XTTS_BASE, revision=None)
    params["xtts"].update(conditioning_seconds=[1.0, 3.0], reference_seconds=6.0)
    for phase in ("phase1", "phase2"):
        params[phase].update(max_steps=2, eval_every=1, save_every=1, batch_size=2,
                             warmup_steps=1, precision="no")
    params["merge"].update(parity_utterances=2)
    params["evaluate"].update(max_utterances=2, bootstrap_samples=100, samples_in_report=2)
    return params


_TALK: dict[str, Any] = {}
TALK_SENTENCES = 8  # a talk of ~40 s: 4+ clips to train, 1 to validate, 1 to test


def local_talk_url() -> str:
    """A minute of eSpeak Spanish (the root pipeline's tiny corpus) as AAC in MP4, served on
    127.0.0.1 at a free port for the rest of this process (stopped at exit)."""
    if "url" not in _TALK:
        import atexit
        import tempfile

        from media_server import MediaServer, m4a

        from habla.audio import read_mono
        from habla.config import SyntheticSource
        from habla.sources import synthetic

        with tempfile.TemporaryDirectory() as tmp:
            src = SyntheticSource.model_validate({**hp.TINY_SOURCE, "sentences": TALK_SENTENCES})
            synthetic.fetch(src, Path(tmp) / "talk", seed=1234, workers=1)
            wav = sorted((Path(tmp) / "talk").glob("*.wav"))[0]
            wave, rate = read_mono(wav)
        server = MediaServer().start()
        server.files["/charla.m4a"] = m4a(wave, rate)
        atexit.register(server.stop)
        _TALK.update(server=server, url=server.url("/charla.m4a"))
    return _TALK["url"]


def prepare_xtts_recipe(recipe: Path) -> None:
    """The tiny random XTTS-v2 in coqui's layout, kept out of the project's git; its BPE
    vocabulary knows the talk's words (whole-word tokens keep synthesis short and fast)."""
    from xtts_tiny import make_tiny_xtts

    from habla.sources.sentences import sentence

    make_tiny_xtts(recipe / XTTS_BASE, corpus=[sentence(i) for i in range(TALK_SENTENCES)])
    (recipe / "models/.gitignore").write_text("/xtts-tiny\n")


PIPELINES = {
    ".": tiny_root_params,
    "recipes/base-es": tiny_base_recipe_params,
    CHATTERBOX_RECIPE: tiny_chatterbox_recipe_params,
    XTTS_RECIPE: tiny_xtts_recipe_params,
    ASR_RECIPE: tiny_asr_recipe_params,
}
# what a pipeline's tiny project needs besides its params (the recipe folder is passed)
SETUP = {CHATTERBOX_RECIPE: _tiny_chatterbox_base, XTTS_RECIPE: prepare_xtts_recipe}
# importable modules a pipeline needs beyond the default install (its extras)
REQUIRES = {XTTS_RECIPE: {"TTS": "pip install 'habla[xtts]'",
                          "yt_dlp": "pip install 'habla[youtube]'"}}


def missing(pipeline: str) -> list[str]:
    """Install commands for what `pipeline` needs and this environment lacks."""
    import importlib.util

    return [cmd for module, cmd in REQUIRES.get(pipeline, {}).items()
            if importlib.util.find_spec(module) is None]


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
