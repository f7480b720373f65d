"""The `tokenize` stage, as dvc.yaml runs it: `python stages/tokenize_stage.py` (same as
`habla tokenize`). Not `tokenize.py`: `python stages/<x>.py` puts this folder first on
sys.path, and a `tokenize.py` here would shadow the standard library's `tokenize` module
(imported by logging via linecache) and break every stage script in this folder."""

from habla.runner import run_stage

if __name__ == "__main__":
    run_stage("tokenize")
