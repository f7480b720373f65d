"""The `evaluate` stage as dvc.yaml runs it (the same as `habla evaluate`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("evaluate")
