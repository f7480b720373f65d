"""recipes/chatterbox-es419 end to end at toy size, offline, with a kill in the middle.

The recipe's own dvc.yaml runs every stage (download ... evaluate) with a tiny random
Chatterbox as model.base (tests/pipeline_harness.py). Phase 2 is killed (SIGKILL, through
habla.crash) right after its step-3 checkpoint (phase 1's two steps never reach a third kill
point); `dvc repro` again resumes it from that step and
finishes: a merged folder in upstream's layout, parity within tolerance, an evaluation whose
two systems both spoke through S3Gen, and `habla synth` reading the merged folder.
"""

from __future__ import annotations

import json

import helpers_pipeline as hp
import pipeline_harness as ph
import pytest

from habla.families.chatterbox import upstream

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not upstream.available(),
                                 reason=f"chatterbox-tts not installed: {upstream.INSTALL}")]


def test_the_recipe_runs_offline_and_a_killed_phase_resumes(tmp_path):
    pipeline = ph.CHATTERBOX_RECIPE
    project = ph.make_tiny_project(tmp_path / "project", pipeline)
    recipe = project / pipeline
    killed = hp.dvc(project, "repro", f"{pipeline}/dvc.yaml", check=False,
                    env_extra={"HABLA_KILL_AT": "train_step:3"})
    assert killed.returncode != 0
    assert "phase2" in hp.ran(killed.stdout) and not (recipe / "models/merged").exists()
    done = ph.run_repro(project, pipeline, trace=False)
    assert {"phase2", "merge", "evaluate"} <= hp.ran(done.stdout)
    assert "phase1" not in hp.ran(done.stdout)
    timings = json.loads((recipe / "logs/phase2.steps.json").read_text())
    assert timings["resumed_from_step"] == 3 and len(timings["steps"]) == 4

    merged = recipe / "models/merged"
    for name in upstream.MODEL_FILES + (upstream.CONDS_FILE, "habla.json", "README.md"):
        assert (merged / name).is_file(), name
    merge = json.loads((recipe / "metrics/merge.json").read_text())
    assert merge["parity_ok"] and merge["parity_max_abs_diff"] < 1e-4
    evaluation = json.loads((recipe / "metrics/eval_details.json").read_text())
    assert evaluation["vocoder"] == {"base": "s3gen", "finetuned": "s3gen"}
    assert evaluation["n_utterances"] >= 1

    cli = ("import sys; from habla.cli import app; sys.argv = ['habla', 'synth', "
           f"'Hola, son 35 pesos.', '--model', '{pipeline}/models/merged', '--out', "
           "'hola.wav']; app()")
    synth = hp.run(project, str(hp.VENV_BIN / "python"), "-c", cli)
    assert (project / "hola.wav").is_file(), synth.stdout
