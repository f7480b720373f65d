"""`habla report` on malformed inputs: one line naming the file and exit 2, never a traceback;
odd values inside a well-formed file are shown, not fatal; --output makes its folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import _git, new_repo

GOOD = {"n_utterances": 2, "base": {"cer": 0.3}, "finetuned": {"cer": 0.2},
        "ci": {"finetuned": {"cer": {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3}}}}
DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 3000 + "1" + "}" * 3000


def _write(repo: Path, name: str, data: str | bytes | dict) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)


@pytest.fixture
def repo(tmp_path):
    """A git repository with one committed, well-formed evaluated run."""
    root = new_repo(tmp_path)
    _write(root, "metrics/eval_details.json", GOOD)
    _write(root, "params.yaml", "lr: 0.001\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "run")
    return root


def _report(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import habla

    env = {**os.environ, "PYTHONPATH": str(Path(habla.__file__).parents[1])}  # this habla
    return subprocess.run([sys.executable, "-m", "habla.cli", "report", *args], cwd=repo,
                          capture_output=True, text=True, timeout=120, check=False, env=env)


def _commit_bad_params(repo: Path) -> None:
    _write(repo, "params.yaml", "lr: [\n")
    _git(repo, "commit", "-qam", "bad params")
    _write(repo, "params.yaml", "lr: 0.002\n")


# (case, files written into the tree, or a function given the repo; arguments; named in the
# message)
REFUSED = [
    ("summary_not_json", {"metrics/eval_details.json": "{broken"}, ["--summary"],
     "metrics/eval_details.json: not valid JSON"),
    ("summary_a_list", {"metrics/eval_details.json": "[]"}, ["--summary"],
     "metrics/eval_details.json: the whole file is a list"),
    ("summary_section_a_number", {"metrics/eval_details.json": {"base": 5, "finetuned": {
        "cer": 0.2}}}, ["--summary"], 'metrics/eval_details.json: "base" is a number'),
    ("summary_not_utf8", {"metrics/eval_details.json": b'{"a": "caf\xe9"}'}, ["--summary"],
     "metrics/eval_details.json: not UTF-8"),
    ("summary_nested_too_deep", {"metrics/eval_details.json": DEEP_LIST}, ["--summary"],
     "metrics/eval_details.json: JSON nested too deeply"),
    ("compare_finetuned_a_list", {"metrics/eval_details.json": {"finetuned": [1, 2]}},
     ["--compare", "HEAD"], 'metrics/eval_details.json: "finetuned" is a list'),
    ("compare_ci_system_a_number", {"metrics/eval_details.json": {
        "finetuned": {"cer": 0.2}, "ci": {"finetuned": 5}}}, ["--compare", "HEAD"],
     'metrics/eval_details.json: "ci.finetuned" is a number'),
    ("compare_metrics_nested_too_deep", {"metrics/deep.json": DEEP_OBJECT},
     ["--compare", "HEAD"], "metrics/deep.json: JSON nested too deeply"),
    ("compare_metrics_not_utf8", {"metrics/other.json": b'{"x": "caf\xe9"}'},
     ["--compare", "HEAD"], "metrics/other.json: not UTF-8"),
    ("compare_params_not_yaml", {"params.yaml": "lr: [\n"}, ["--compare", "HEAD"],
     "params.yaml: not valid YAML"),
    ("compare_params_not_yaml_at_rev", _commit_bad_params, ["--compare", "HEAD"],
     "params.yaml at HEAD: not valid YAML"),
    ("output_folder_is_a_file", {"taken": "a file"}, ["--compare", "HEAD", "-o", "taken/x.md"],
     "--output taken/x.md: cannot make its folder taken"),
]


def _arrange(repo: Path, files) -> None:
    if callable(files):
        files(repo)
        return
    for name, data in files.items():
        _write(repo, name, data)


@pytest.mark.parametrize(("files", "args", "message"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_report_refuses_a_malformed_file_in_one_line_naming_it(repo, files, args, message):
    _arrange(repo, files)
    done = _report(repo, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"habla report: {message}"), lines
    assert done.stdout == ""


# Odd values inside well-formed sections are display-only: shown as text, or the interval left
# out, and the rest of the report still printed.
SHOWN = [
    ("summary_measure_is_text", {"metrics/eval_details.json": {
        "base": {"cer": "x"}, "finetuned": {"cer": 0.2}}}, ["--summary"],
     "CER: base x -> fine-tuned 0.200"),
    ("summary_delta_without_bounds", {"metrics/eval_details.json": {
        **GOOD, "delta": {"cer": {"mean": -0.1}}}}, ["--summary"],
     "CER: base 0.300 -> fine-tuned 0.200\n"),
    ("compare_ci_a_number", {"metrics/eval_details.json": {
        "finetuned": {"cer": 0.2}, "ci": {"finetuned": {"cer": 5}}}}, ["--compare", "HEAD"],
     "| CER ↓ | 0.2 [0.1, 0.3] | 0.2 | +0 | **unresolved** |"),
    ("compare_ci_without_bounds", {"metrics/eval_details.json": {
        "finetuned": {"cer": 0.2}, "ci": {"finetuned": {"cer": {"low": 1}}}}},
     ["--compare", "HEAD"], "| CER ↓ | 0.2 [0.1, 0.3] | 0.2 | +0 | **unresolved** |"),
]


@pytest.mark.parametrize(("files", "args", "expected"), [c[1:] for c in SHOWN],
                         ids=[c[0] for c in SHOWN])
def test_report_shows_odd_values_instead_of_failing(repo, files, args, expected):
    _arrange(repo, files)
    done = _report(repo, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout and done.stderr == ""


def test_report_output_makes_its_missing_folder(repo):
    done = _report(repo, "--compare", "HEAD", "-o", "nodir/deeper/x.md")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (repo / "nodir" / "deeper" / "x.md").read_text("utf-8") == done.stdout
