"""The `tokenize` stage, as dvc.yaml runs it: `python stages/tokenize.py` (same as `habla tokenize`)."""

from habla.cli import run_stage

if __name__ == "__main__":
    run_stage("tokenize")
