"""The `pretrain` stage, as recipes/base-es/dvc.yaml runs it (same as `habla pretrain`)."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("pretrain")
