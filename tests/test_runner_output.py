"""What a stage prints when it ends: its JSON summary, then one line in words."""

from __future__ import annotations

import json
import types
import warnings

import pytest

from habla import runner
from habla.runner import human_line


@pytest.mark.parametrize(("stage", "summary", "expected"), [
    ("segment", {"recordings_in": 20, "hours_in": 0.4387, "clips_out": 258,
                 "hours_kept": 0.386, "rejects": {}, "seconds": 41.0},
     "habla segment: 20 recordings (0.44 h) in, 258 clips (0.39 h) out; nothing rejected; "
     "took 41.0 s."),
    ("transcribe", {"clips_in": 258, "hours_in": 0.386, "clips_kept": 215, "hours_kept": 0.3232,
                    "rejects": {"high_wer": 38, "high_cer": 3, "repetition_loop": 2},
                    "seconds": 312.4},
     "habla transcribe: 258 clips (0.39 h) in, 215 labelled (0.32 h) out; 43 rejected "
     "(high_wer 38, high_cer 3, repetition_loop 2); took 5 min 12 s."),
    ("tokenize", {"clips_train": 159, "clips_val": 28, "clips_test": 28, "rejected": {},
                  "vocab_size": 41, "seconds": 1.2},
     "habla tokenize: train/val/test 159/28/28 clips, vocabulary 41; nothing rejected; "
     "took 1.2 s."),
    ("phase2", {"steps": 400, "best_val_loss": 1.1443, "train_clips": 159, "seconds": 832.0},
     "habla phase2: 400 steps on 159 clips, best validation loss 1.1443; took 13 min 52 s."),
    ("evaluate", {"utterances": 28, "cer_base": 0.3306, "cer_finetuned": 0.224,
                  "mcd_base": 46.479, "mcd_finetuned": 24.621, "report": "reports/index.html",
                  "seconds": 7300.0},
     "habla evaluate: 28 test sentences: CER base 0.331 -> fine-tuned 0.224, MCD 46.5 -> "
     "24.6; report reports/index.html; took 2 h 01 min."),
    ("evaluate", {"utterances": 69, "cer_base": 0.2128, "cer_finetuned": 0.0209,
                  "wer_base": 0.6745, "wer_finetuned": 0.059, "report": "reports/index.html",
                  "seconds": 353.7},
     "habla evaluate: 69 test sentences: CER base 0.213 -> fine-tuned 0.021, WER 0.674 -> "
     "0.059; report reports/index.html; took 5 min 54 s."),
    ("download", {"recordings": "odd", "hours": None, "rejects": {"missing": 1},
                  "seconds": 3.0},
     "habla download: odd recordings (? h) in data/raw; 1 rejected (missing 1); took 3.0 s."),
    ("merge", {"parity_max_abs_diff": "not a number"},
     "habla merge: done."),
])
def test_each_stage_ends_with_a_line_in_words(stage, summary, expected):
    assert human_line(stage, summary) == expected


def test_run_stage_prints_the_json_then_the_line_and_hides_library_future_warnings(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "download:\n  sources:\n    - {kind: local, path: x}\n")

    def run(params):
        warnings.warn_explicit("old API", FutureWarning, "x.py", 1, module="transformers.x")
        warnings.warn_explicit("ours", FutureWarning, "y.py", 1, module="habla.thing")
        return {"clips_train": 3, "clips_val": 1, "clips_test": 1, "rejected": {},
                "vocab_size": 9}

    monkeypatch.setattr(runner.importlib, "import_module",
                        lambda name: types.SimpleNamespace(run=run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.run_stage("tokenize", tmp_path / "params.yaml")
    assert [str(w.message) for w in caught] == ["ours"]
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[0])["stage"] == "tokenize"
    assert out[1].startswith("habla tokenize: train/val/test 3/1/1 clips, vocabulary 9; "
                             "nothing rejected; took ")
    assert json.loads((tmp_path / "logs" / "tokenize.json").read_text())["vocab_size"] == 9


@pytest.mark.parametrize("stage", ["segment", "evaluate", "pretrain"])
def test_each_stage_help_says_what_it_reads_writes_and_that_it_bypasses_dvc(stage):
    from typer.testing import CliRunner

    from habla import paths
    from habla.cli import app

    out = CliRunner().invoke(app, [stage, "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "Reads: " in text and "Writes: " in text and "bypasses DVC" in text
    for path in paths.OUTPUTS[stage]:
        assert path.as_posix() in text
    assert "dvc.lock is not updated" in text
