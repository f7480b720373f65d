"""Every stage is rerunnable and crash-consistent (the default pipeline, at toy size).

After a complete run, three things a user does must end with complete outputs identical to
the first run's:
- a forced rerun of each stage (`dvc repro -f -s <stage>`);
- a kill (SIGKILL, through habla.crash kill points) at several points of each stage, then
  `dvc repro`: early, mid-way, inside an atomic write, between a checkpoint save and the
  metrics write;
- an experiment with other params, then the first params again (DVC reruns the stages or
  restores them from its run cache; both are checked).
No temporary file may be left under an output's name or beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import helpers_pipeline as hp
import pipeline_harness as ph
import pytest
import yaml

pytestmark = pytest.mark.slow

STAGES = ("download", "segment", "transcribe", "timestamps", "tokenize", "phase1", "phase2",
          "merge", "evaluate")
# (stage, kill point): where each stage is killed; "<point>:<n>" = the n-th arrival there
KILLS = [
    ("download", "start"), ("download", "atomic:2"),
    ("segment", "atomic:3"),
    ("transcribe", "asr_batch:1"), ("transcribe", "atomic:1"),
    ("timestamps", "atomic:1"),
    ("tokenize", "atomic:2"),
    ("phase1", "train_step:1"),  # after the step-1 checkpoint: resume mid-phase
    ("phase1", "train_step:2"),  # after the final checkpoint, before curves and metrics
    ("phase2", "atomic:1"),  # inside the first checkpoint write
    ("phase2", "train_step:2"),
    ("merge", "atomic:1"),
    ("evaluate", "eval_chunk:1"),
]


# caches and checkpoints a complete run leaves: removed before a kill test, or the stage
# would find its work done and never reach the kill point
RESUME_STATE = {"transcribe": ("data/cache/asr",), "phase1": ("checkpoints/phase1",),
                "phase2": ("checkpoints/phase2",)}


def digests(project: Path) -> dict[str, dict[str, dict[str, str]]]:
    return {stage: {str(p.relative_to(project)): ph.tree_digest(p) for p in outs if p.exists()}
            for stage, outs in ph.output_paths(project, ".").items()}


def leftovers(project: Path) -> list[str]:
    """Temporary files inside output folders (a stray temporary beside a file output, or in
    a resume-state folder, is harmless: the next run of that stage removes it)."""
    found = []
    for outs in ph.output_paths(project, ".").values():
        for out in outs:
            if out.is_dir():
                found += [str(p.relative_to(project)) for p in out.rglob(".*.tmp")]
    return found


def differences(before: dict, after: dict, stages: tuple[str, ...] = STAGES) -> list[str]:
    out = []
    for stage in stages:
        for path, files in before[stage].items():
            now = after[stage].get(path)
            if now is None:
                out.append(f"{stage}: {path} is missing")
                continue
            for name in sorted(set(files) | set(now)):
                if files.get(name) != now.get(name):
                    out.append(f"{stage}: {path}/{name} differs")
    return out


@pytest.fixture(scope="module")
def reference(tiny_root):
    return digests(tiny_root)


@pytest.fixture
def project(tiny_root, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(tiny_root, copy, symlinks=True)
    return copy


def test_tiny_run_is_complete_and_a_second_repro_does_nothing(tiny_root, reference):
    assert all(files for stage in STAGES for files in reference[stage].values())
    log = hp.dvc(tiny_root, "repro").stdout
    assert hp.ran(log) == set(), log[-2000:]


def test_forced_rerun_of_every_stage_gives_identical_outputs(project, reference):
    for stage in STAGES:
        hp.dvc(project, "repro", "-f", "-s", stage)
    assert differences(reference, digests(project)) == []
    assert leftovers(project) == []
    assert hp.dvc(project, "status", "--quiet", check=False).returncode == 0


@pytest.mark.parametrize(("stage", "point"), KILLS, ids=[f"{s}-{p}" for s, p in KILLS])
def test_a_kill_then_repro_ends_with_the_uninterrupted_outputs(project, reference, stage,
                                                                  point):
    for state in RESUME_STATE.get(stage, ()):  # so that the killed run has work to do
        shutil.rmtree(project / state)
    killed = hp.dvc(project, "repro", "-f", "-s", stage, check=False,
                    env_extra={"HABLA_KILL_AT": point})
    assert killed.returncode != 0, f"{stage} was not killed at {point}"
    hp.dvc(project, "repro")
    assert differences(reference, digests(project)) == []
    assert leftovers(project) == []


@pytest.mark.parametrize("run_cache", [True, False], ids=["restored", "rerun"])
def test_returning_to_earlier_params_restores_the_first_outputs(project, reference, run_cache):
    params = yaml.safe_load((project / "params.yaml").read_text())
    original = (project / "params.yaml").read_text()
    params["phase2"]["lr_factor"] *= 2  # an experiment on phase 2 and what follows it
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    hp.dvc(project, "repro")
    assert differences(reference, digests(project), ("phase2",)) != []  # it did change
    (project / "params.yaml").write_text(original)
    flags = () if run_cache else ("--no-run-cache",)
    log = hp.dvc(project, "repro", *flags).stdout
    if not run_cache:
        assert {"phase2", "merge", "evaluate"} <= hp.ran(log), log[-2000:]
    assert differences(reference, digests(project)) == []
    assert leftovers(project) == []
