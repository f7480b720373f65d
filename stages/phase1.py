"""The `phase1` stage, as dvc.yaml runs it: `python stages/phase1.py` (same as `habla phase1`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("phase1")
