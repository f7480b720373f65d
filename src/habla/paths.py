"""Every artifact a stage reads or writes, named once (relative to the project folder).

A foundation module: stages and library code take their paths from here, and
`tests/test_dvc_yaml.py` checks each stage's outs in every dvc.yaml against `OUTPUTS`.
A recipe runs the same stages with its own folder as the working directory.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

# download
RAW = Path("data/raw")
RAW_MANIFEST = RAW / "manifest.jsonl"
RAW_REJECTS = RAW / "rejects.jsonl"
RAW_SUMMARY = RAW / "summary.json"
DOWNLOAD_CACHE = Path("data/cache/downloads")  # outside data/raw: survives reruns (resume)

# segment
CLIPS = Path("data/clips")
CLIPS_MANIFEST = CLIPS / "manifest.jsonl"
CLIPS_REJECTS = CLIPS / "rejects.jsonl"
CLIPS_SUMMARY = CLIPS / "summary.json"

# transcribe / timestamps
LABELS = Path("data/labels")
TRANSCRIBED = LABELS / "transcribed.jsonl"
TRANSCRIBE_REJECTS = LABELS / "transcribe_rejects.jsonl"
TRANSCRIBE_SUMMARY = LABELS / "transcribe_summary.json"
ASR_CACHE = Path("data/cache/asr")
ALIGNED = LABELS / "aligned.jsonl"
TIMESTAMPS_REJECTS = LABELS / "timestamps_rejects.jsonl"
TIMESTAMPS_SUMMARY = LABELS / "timestamps_summary.json"

# tokenize
SPLITS = Path("data/splits")
TRAIN_SPLIT = SPLITS / "train.jsonl"
VAL_SPLIT = SPLITS / "val.jsonl"
TEST_SPLIT = SPLITS / "test.jsonl"
TOKENIZER = Path("models/tokenizer")
METRICS = Path("metrics")
DATA_CARD = METRICS / "data.json"

# how long each stage took, per step for training: machine-dependent, so neither git nor DVC
# tracks it (a rerun would look like a change); the report shows it
LOGS = Path("logs")


def stage_log(stage: str) -> Path:
    return LOGS / f"{stage}.json"


def training_log(phase: str) -> Path:
    return LOGS / f"{phase}.steps.json"


# training
CHECKPOINTS = Path("checkpoints")  # resume state: never a DVC output
DVCLIVE = Path("dvclive")
BASE = Path("models/base")  # the offline default base (recipes/base-es writes it)


def phase_dir(phase: int) -> Path:
    return Path(f"models/phase{phase}")


def phase_metrics(phase: int) -> Path:
    return METRICS / f"phase{phase}.json"


def live_dir(name: str) -> Path:
    """dvclive's folder for a training stage; its curves are `<dir>/plots/metrics`."""
    return DVCLIVE / name


PRETRAIN_METRICS = METRICS / "pretrain.json"
PRETRAIN_REJECTS = METRICS / "pretrain_rejects.jsonl"

# merge / evaluate
MERGED = Path("models/merged")
MERGE_METRICS = METRICS / "merge.json"
EVAL_JSON = METRICS / "eval.json"  # the headline means: what dvc metrics/exp show list
EVAL_DETAILS = METRICS / "eval_details.json"  # CIs, every measure, the method
UTTERANCES_CSV = METRICS / "eval_utterances.csv"
REPORTS = Path("reports")
MODEL_CARD = REPORTS / "model_card.md"  # the merged model's card with its results (habla push)

# What each stage declares as outs / metrics / plots in dvc.yaml, checked by a test.
OUTPUTS: dict[str, list[Path]] = {
    "download": [RAW],
    "segment": [CLIPS],
    "transcribe": [TRANSCRIBED, TRANSCRIBE_REJECTS, TRANSCRIBE_SUMMARY, ASR_CACHE],
    "timestamps": [ALIGNED, TIMESTAMPS_REJECTS, TIMESTAMPS_SUMMARY],
    "tokenize": [SPLITS, TOKENIZER, DATA_CARD],
    "phase1": [phase_dir(1), phase_metrics(1), live_dir("phase1") / "plots/metrics"],
    "phase2": [phase_dir(2), phase_metrics(2), live_dir("phase2") / "plots/metrics"],
    "merge": [MERGED, MERGE_METRICS],
    "evaluate": [REPORTS, EVAL_JSON, EVAL_DETAILS, UTTERANCES_CSV],
    "pretrain": [BASE, PRETRAIN_METRICS, live_dir("pretrain") / "plots/metrics"],
}

# per-clip tensors of families with frozen encoders (habla.clip_cache): resume state, like
# checkpoints, never a DVC output
CLIP_CACHE = Path("data/cache/clips")
