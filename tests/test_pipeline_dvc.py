"""The pipeline as DVC runs it: a tiny corpus through the implemented data stages, a no-op
second repro, `dvc exp run -S` rerunning only what the param touches, a local DVC remote
round trip (issues 2, 3, 5), and the CI reproducibility check `.ci/check_repro.py`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import helpers_pipeline as hp
import pytest
import yaml

CHECK = hp.REPO / ".ci/check_repro.py"
_spec = importlib.util.spec_from_file_location("check_repro", CHECK)
assert _spec and _spec.loader
check_repro = importlib.util.module_from_spec(_spec)
sys.modules["check_repro"] = check_repro  # dataclasses look their module up there
_spec.loader.exec_module(check_repro)


# ---------------------------------------------------------------- check_repro logic (fast)
def lock(**stage_md5: str) -> dict:
    return {"schema": "2.0", "stages": {
        stage: {"cmd": "x", "outs": [{"path": f"data/{stage}", "hash": "md5", "md5": md5}]}
        for stage, md5 in stage_md5.items()}}


def test_check_repro_passes_identical_hashes_and_metrics_within_tolerance():
    before = lock(download="a.dir", segment="b.dir", phase1="c.dir")
    after = lock(download="a.dir", segment="b.dir", phase1="other.dir")  # training may differ
    metrics_before = {"eval.json": {"finetuned": {"mcd": 20.0, "cer": 0.20}, "n": 40},
                      "merge.json": {"parity_max_abs_diff": 1e-6, "parity_utterances": 8}}
    metrics_after = {"eval.json": {"finetuned": {"mcd": 21.9, "cer": 0.279}, "n": 39},
                     "merge.json": {"parity_max_abs_diff": 5e-6, "parity_utterances": 8}}
    findings = (check_repro.compare_hashes(before, after)
                + check_repro.compare_metrics(metrics_before, metrics_after))
    assert all(f.ok for f in findings), check_repro.report(findings, verbose=True)
    names = {f.name for f in findings}
    assert "download:data/download" in names and not any("phase1" in n for n in names)
    assert "eval.json:finetuned.mcd" in names and "eval.json:n" in names  # n shown, not judged


@pytest.mark.parametrize("metric,after", [
    ("mcd", 22.1),    # +10.5% > 10%
    ("mcd", 17.9),    # better by more than the tolerance is not a reproduction either
    ("cer", 0.2801),  # +0.0801 absolute
])
def test_check_repro_flags_metrics_outside_tolerance(metric, after):
    before = {"eval.json": {"finetuned": {"mcd": 20.0, "cer": 0.2}}}
    new = json.loads(json.dumps(before))
    new["eval.json"]["finetuned"][metric] = after
    findings = check_repro.compare_metrics(before, new)
    bad = [f for f in findings if not f.ok]
    assert [f.name for f in bad] == [f"eval.json:finetuned.{metric}"]
    assert "FAIL" in check_repro.report(findings)


def test_check_repro_flags_changed_data_hash_missing_stage_and_missing_metric():
    before = lock(download="a.dir", segment="b.dir", tokenize="t.dir")
    after = lock(download="a.dir", segment="CHANGED.dir")
    bad = {f.name for f in check_repro.compare_hashes(before, after) if not f.ok}
    assert bad == {"segment:data/segment", "tokenize"}
    before["stages"]["segment"]["outs"].append({"path": "data/segment/summary.json", "md5": "1"})
    after["stages"]["segment"]["outs"].append({"path": "data/segment/summary.json", "md5": "2"})
    summary = [f for f in check_repro.compare_hashes(before, after) if "summary" in f.name]
    assert [(f.ok, f.rule) for f in summary] == [(True, "exempt: run report")]
    gone = check_repro.compare_metrics({"eval.json": {"finetuned": {"cer": 0.4}}},
                                       {"eval.json": {}})
    assert [f.ok for f in gone] == [False]
    parity = check_repro.compare_metrics({}, {"merge.json": {"parity_max_abs_diff": 0.01}})
    assert [f.ok for f in parity] == [False], "an upper bound needs no baseline"


def test_check_repro_main_reads_a_baseline_folder_and_sets_the_exit_code(tmp_path, capsys):
    base, run_dir = tmp_path / "base", tmp_path / "run"
    for folder, mcd in ((base, 20.0), (run_dir, 30.0)):
        (folder / "metrics").mkdir(parents=True)
        (folder / "dvc.lock").write_text(yaml.safe_dump(lock(download="a.dir")))
        (folder / "metrics/eval.json").write_text(json.dumps({"finetuned": {"mcd": mcd}}))
    assert check_repro.main(["--repo", str(run_dir), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "FAIL metric eval.json:finetuned.mcd: 20 -> 30" in out and "1 mismatches" in out
    (run_dir / "metrics/eval.json").write_text(json.dumps({"finetuned": {"mcd": 21.0}}))
    assert check_repro.main(["--repo", str(run_dir), "--baseline", str(base)]) == 0
    assert "reproduced" in capsys.readouterr().out
    (run_dir / "dvc.lock").unlink()
    assert check_repro.main(["--repo", str(run_dir), "--baseline", str(base)]) == 2


# ---------------------------------------------------------------- the real pipeline (slow)
PREFIX = hp.available_prefix()
needs_stages = pytest.mark.skipif(
    len(PREFIX) < 2, reason=f"download and segment not implemented yet (have: {PREFIX})")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project after one `dvc repro` of the implemented prefix, committed."""
    root = tmp_path_factory.mktemp("pipeline")
    proj = hp.make_project(root / "project")
    first = hp.dvc(proj, "repro", PREFIX[-1])
    hp.commit(proj, "first repro")
    return proj, first.stdout


@pytest.mark.slow
@needs_stages
def test_repro_runs_every_implemented_data_stage_and_writes_their_outputs(project):
    proj, log = project
    assert hp.ran(log) == set(PREFIX)
    raw = proj / "data/raw/manifest.jsonl"
    assert raw.is_file() and raw.read_text().strip()
    clips = [json.loads(x) for x in (proj / "data/clips/manifest.jsonl").read_text().splitlines()]
    assert clips and all((proj / c["audio"]).is_file() for c in clips)
    assert all(c["duration"] <= 20.0 + 1e-6 for c in clips)
    if "tokenize" in PREFIX:
        card = json.loads((proj / "metrics/data.json").read_text())
        assert card["train_clips"] > 0 and card["tokenizer_vocab_size"] > 3
        assert (proj / "models/tokenizer/spm.model").is_file()
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert set(PREFIX) <= set(lock["stages"])


@pytest.mark.slow
@needs_stages
def test_second_repro_is_a_no_op(project):
    proj, _ = project
    again = hp.dvc(proj, "repro", PREFIX[-1])
    assert hp.ran(again.stdout) == set()
    assert hp.skipped(again.stdout) == set(PREFIX)
    status = hp.dvc(proj, "status", "--with-deps", PREFIX[-1])
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
@needs_stages
def test_fresh_clone_repro_reproduces_the_committed_hashes(project, tmp_path):
    # what CI does: a clean clone, no DVC cache, the whole data pipeline from scratch
    proj, _ = project
    clone = tmp_path / "ci"
    hp.run(tmp_path, "git", "clone", "-q", str(proj), str(clone))
    log = hp.dvc(clone, "repro", PREFIX[-1]).stdout
    assert hp.ran(log) == set(PREFIX)
    done = hp.run(clone, str(hp.VENV_BIN / "python"), str(CHECK), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reproduced" in done.stdout
    assert "ok   hash   segment:data/clips:" in done.stdout  # clips compared byte for byte


@pytest.mark.slow
@needs_stages
def test_local_remote_push_then_fresh_clone_pull_is_up_to_date(project, tmp_path):
    proj, _ = project
    remote = tmp_path / "remote"
    hp.dvc(proj, "remote", "add", "-d", "local", str(remote))
    hp.commit(proj, "remote")
    hp.dvc(proj, "push", "--with-deps", PREFIX[-1])
    assert any(remote.rglob("*")), "push stored nothing"

    clone = tmp_path / "clone"
    hp.run(tmp_path, "git", "clone", "-q", str(proj), str(clone))
    assert not (clone / "data").exists()
    # only the implemented stages have outputs to pull; the rest have never run
    hp.dvc(clone, "pull", "--with-deps", PREFIX[-1])
    status = hp.dvc(clone, "status", "--with-deps", PREFIX[-1])
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    for path in ("data/raw/manifest.jsonl", "data/clips/manifest.jsonl"):
        assert (clone / path).read_bytes() == (proj / path).read_bytes()


@pytest.mark.slow
@needs_stages
def test_exp_run_set_param_reruns_segment_and_downstream_but_not_download(project):
    proj, _ = project
    clips_before = hp.lock_md5(proj, "segment")
    done = hp.dvc(proj, "exp", "run", "-S", "segment.max_duration=15", PREFIX[-1])
    log = done.stdout + done.stderr
    assert "segment" in hp.ran(log), log
    assert "download" not in hp.ran(log) and "download" in hp.skipped(log)
    assert yaml.safe_load((proj / "params.yaml").read_text())["segment"]["max_duration"] == 15
    downstream = set(PREFIX[PREFIX.index("segment") + 1:])
    if hp.lock_md5(proj, "segment") != clips_before and downstream:
        # segment's output changed, so the stage that reads the clips reruns; later stages
        # rerun only if their own inputs changed (identical labels: DVC rightly skips them)
        assert PREFIX[PREFIX.index("segment") + 1] in hp.ran(log), log
    assert downstream <= hp.ran(log) | hp.skipped(log)
    assert hp.dvc(proj, "exp", "list").stdout.strip()


def test_stage_detection_stops_at_the_first_missing_stage(tmp_path):
    fake = tmp_path / "repo"
    shutil.copytree(hp.REPO / "stages", fake / "stages")
    shutil.copy(hp.REPO / "dvc.yaml", fake / "dvc.yaml")
    (fake / "src/habla/stages").mkdir(parents=True)
    assert hp.available_prefix(fake) == []
    pipeline = yaml.safe_load((fake / "dvc.yaml").read_text())
    for dep in pipeline["stages"]["download"]["deps"]:
        (fake / dep).parent.mkdir(parents=True, exist_ok=True)
        if not (fake / dep).exists():
            (fake / dep).write_text("def run(params):\n    return {}\n")
    assert hp.available_prefix(fake) == ["download"]
    (fake / "src/habla/stages/segment.py").write_text(
        "def run(params):\n    raise NotImplementedError\n")
    assert hp.available_prefix(fake) == ["download"]


def test_no_stage_script_shadows_a_standard_library_module():
    # `python stages/x.py` puts stages/ first on sys.path: a stages/tokenize.py would be
    # imported by logging (via linecache) instead of the stdlib's and break every stage
    clashes = sorted(p.stem for p in (hp.REPO / "stages").glob("*.py")
                     if p.stem in sys.stdlib_module_names)
    assert clashes == []
    pipeline = yaml.safe_load((hp.REPO / "dvc.yaml").read_text())
    for name, spec in pipeline["stages"].items():
        script = spec["cmd"].split()[1]
        assert script in spec["deps"], f"{name}: its entry script is not a dependency"


@pytest.mark.parametrize("folder", [".", *sorted(
    str(p.parent.relative_to(hp.REPO)) for p in (hp.REPO / "recipes").glob("*/dvc.yaml"))])
def test_every_param_a_stage_lists_in_dvc_yaml_is_in_params_yaml(folder):
    # DVC refuses to run a stage whose listed param is missing from params.yaml
    params = yaml.safe_load((hp.REPO / folder / "params.yaml").read_text())
    missing = []
    for stage, keys in hp.dvc_param_keys(hp.REPO / folder).items():
        for key in keys:
            node = params
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{stage}: {key}")
                    break
                node = node[part]
    assert not missing, f"add to params.yaml (dvc.yaml lists them): {missing}"
