"""Every dvc.yaml in the repository declares exactly what each stage runs, writes and reads.

A change must rerun exactly what it affects: a stage whose deps miss a module it imports is
not rerun when that module changes (stale results), and one that lists a module it does not
import is rerun for nothing. The same for params. The params half runs the tiny pipelines of
tests/pipeline_harness.py (they record what each stage read).
"""

from __future__ import annotations

from pathlib import Path

import pipeline_harness
import pytest
from dvc_yaml_rules import (
    CONDITIONAL_PARAMS,
    REPO,
    SRC,
    UNDECLARED_PARAMS,
    closure,
    declared_outputs,
    declared_params,
    dvc_files,
    entry_scripts,
    stages,
)

from habla import paths

CASES = [(f, name) for f in dvc_files() for name in stages(f)]
IDS = [f"{f.parent.relative_to(REPO) or '.'}:{name}" for f, name in CASES]


def _code_deps(dvc_file: Path, spec: dict) -> list[Path]:
    return [(dvc_file.parent / d).resolve() for d in spec.get("deps") or []
            if (dvc_file.parent / d).resolve().is_relative_to(SRC / "habla")
            or (dvc_file.parent / d).resolve().is_relative_to(REPO / "stages")]


def code_dep_problems(dvc_file: Path, name: str, spec: dict) -> list[str]:
    wdir = dvc_file.parent
    entries = entry_scripts(spec, wdir)
    needed = set(entries)
    for entry in entries:
        needed |= closure(entry)
    deps = _code_deps(dvc_file, spec)
    problems = []
    for path in sorted(needed):
        if not any(path == d or path.is_relative_to(d) for d in deps):
            problems.append(f"{name}: imports {path.relative_to(REPO)} but does not list it "
                            "in deps")
    for dep in deps:
        files = {dep} if dep.suffix == ".py" else set(dep.rglob("*.py"))
        unused = sorted(f for f in files if f not in needed)
        if not dep.exists():
            problems.append(f"{name}: dep {dep.relative_to(REPO)} does not exist")
        elif unused:
            what = ", ".join(str(f.relative_to(REPO)) for f in unused)
            problems.append(f"{name}: dep {dep.relative_to(REPO)} covers {what}, which the "
                            "stage never imports (list the files it does import)")
    return problems


@pytest.mark.parametrize(("dvc_file", "name"), CASES, ids=IDS)
def test_code_deps_are_exactly_the_import_closure_of_the_stage(dvc_file, name):
    assert code_dep_problems(dvc_file, name, stages(dvc_file)[name]) == []


def test_the_check_catches_a_removed_dep():
    spec = dict(stages(REPO / "dvc.yaml")["phase1"])
    spec["deps"] = [d for d in spec["deps"] if d != "src/habla/train.py"]
    problems = code_dep_problems(REPO / "dvc.yaml", "phase1", spec)
    assert any("src/habla/train.py" in p for p in problems)


@pytest.mark.parametrize(("dvc_file", "name"), CASES, ids=IDS)
def test_outs_are_the_paths_the_library_names(dvc_file, name):
    expected = sorted(str(p) for p in paths.OUTPUTS[name])
    assert sorted(declared_outputs(stages(dvc_file)[name])) == expected


def _within(key: str, section: str) -> bool:
    """'phase1.lora.r' is within a declared 'phase1.lora' (DVC tracks the whole section)."""
    return key == section or key.startswith(section + ".")


def params_problems(name: str, declared: set[str], read: set[str]) -> list[str]:
    problems = [f"{name}: reads '{k}' but dvc.yaml does not declare it" for k in sorted(read)
                if k not in UNDECLARED_PARAMS and not any(_within(k, d) for d in declared)]
    problems += [f"{name}: declares '{d}' but never read it" for d in sorted(declared)
                 if d not in CONDITIONAL_PARAMS and not any(_within(k, d) for k in read)]
    return problems


def test_the_check_catches_a_removed_or_an_unused_param():
    declared = {"segment.method", "segment.margin", "seed"}
    read = {"segment.method", "segment.margin", "segment.min_duration", "segment.workers"}
    assert params_problems("segment", declared, read) == [
        "segment: reads 'segment.min_duration' but dvc.yaml does not declare it",
        "segment: declares 'seed' but never read it"]


@pytest.mark.slow
@pytest.mark.parametrize(("dvc_file", "name"), CASES, ids=IDS)
def test_params_are_exactly_the_keys_the_stage_reads(dvc_file, name, params_traces):
    where = str(dvc_file.parent.relative_to(REPO)) if dvc_file.parent != REPO else "."
    reads = params_traces.get((where, name))
    if reads is None and pipeline_harness.missing(where):
        pytest.skip(f"{where} needs {', '.join(pipeline_harness.missing(where))}")
    if reads is None:
        pytest.fail(f"no tiny run of {where}:{name} recorded what it reads "
                    "(tests/pipeline_harness.py must run every stage)")
    assert params_problems(name, declared_params(stages(dvc_file)[name]), reads) == []
