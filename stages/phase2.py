"""The `phase2` stage, as dvc.yaml runs it: `python stages/phase2.py` (same as `habla phase2`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("phase2")
