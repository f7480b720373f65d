"""The `transcribe` stage as dvc.yaml runs it (the same as `habla transcribe`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("transcribe")
