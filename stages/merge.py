"""The `merge` stage, as dvc.yaml runs it: `python stages/merge.py` (same as `habla merge`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("merge")
