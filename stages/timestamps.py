"""The `timestamps` stage as dvc.yaml runs it (the same as `habla timestamps`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("timestamps")
