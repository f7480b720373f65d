"""The habla model-folder format: `habla.json`, typed, with the one save and load pair.

A habla model folder is an ordinary model folder (Hugging Face `save_pretrained`, or a family's
own layout) plus `habla.json`, which says which family reads it, its task, audio features,
speakers and vocoder, and how it was made (base, adapters, training). Every writer and reader of
`habla.json` goes through `ModelInfo`, `save_info` and `load_info`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from habla import atomic
from habla.errors import HablaError

INFO_FILE = "habla.json"
Task = Literal["tts", "asr"]


class ModelFolderError(HablaError, FileNotFoundError):
    """A model folder that is missing, or whose habla.json cannot be used."""


class BaseRef(BaseModel):
    """The base a model was adapted from, as the params named it and as it was resolved."""

    model_config = ConfigDict(extra="forbid")
    path: str
    revision: str | None = None
    commit: str | None = None  # hub snapshot actually used
    sha256: str | None = None  # of the base weights, when it is a single file


class ModelInfo(BaseModel):
    """Everything habla needs to load and describe a model folder."""

    model_config = ConfigDict(extra="forbid")

    family: str
    task: Task = "tts"
    features: dict[str, Any] | None = Field(None, description="habla.features.FeatureSpec")
    vocoder: str = "griffinlim"
    speakers: list[str] = Field(default_factory=list)
    default_speaker: str | None = None
    # family-specific settings that loading needs (fastspeech2: pitch/energy statistics)
    stats: dict[str, float] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] | None = Field(None, description="how a base was trained")

    # adapted (models/phase*) and merged folders
    base: BaseRef | None = None
    base_provenance: dict[str, Any] | None = None
    phase: int | None = None
    speaker: str | None = None
    adapter_chain: list[str] | None = None
    tokenizer: dict[str, Any] | None = None  # what hooking the tokenizer did
    lora: dict[str, Any] | None = None
    run_key: str | None = None
    training: dict[str, Any] | None = None
    trained_with: dict[str, Any] | None = Field(
        None, description="the params that shaped the model (seed, lr, tokenize, phases)")
    rejects: dict[str, int] | None = None
    merged_from: str | None = None
    parity_max_abs_diff: float | None = None


def info_path(folder: str | Path) -> Path:
    return Path(folder) / INFO_FILE


def has_info(folder: str | Path) -> bool:
    return info_path(folder).is_file()


def load_info(folder: str | Path) -> ModelInfo:
    """The folder's habla.json, validated; a clear error when it is missing or malformed."""
    path = info_path(folder)
    if not path.is_file():
        what = "does not exist" if not Path(folder).exists() else f"has no {INFO_FILE}"
        raise ModelFolderError(f"model folder {folder} {what}: a habla model folder needs "
                               f"{INFO_FILE} (family, features, speakers)")
    try:
        return ModelInfo.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelFolderError(f"{path}: '{where}': {first['msg']}") from None


def save_info(folder: str | Path, info: ModelInfo) -> Path:
    """Write habla.json atomically (sorted keys, unset fields left out)."""
    path = info_path(folder)
    data = json.loads(info.model_dump_json(exclude_none=True))
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
    atomic.write_text(path, text)
    return path


def looks_like_hub_id(name: str) -> bool:
    """'org/name' that is not a path on this machine (hub ids have exactly one slash)."""
    return (not Path(name).exists() and not name.startswith((".", "/", "~"))
            and name.count("/") == 1 and all(name.split("/")))


def resolve_model_dir(path_or_id: str, revision: str | None = None) -> Path:
    """A local model folder for a folder path or a hub id (downloaded to the HF cache)."""
    local = Path(path_or_id)
    if local.is_dir():
        return local
    if not looks_like_hub_id(path_or_id):
        raise ModelFolderError(f"model '{path_or_id}': not a folder and not a hub id "
                               "('org/name')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path_or_id, revision=revision))
    except Exception as exc:  # offline, missing repo, bad revision: say which
        raise ModelFolderError(f"model '{path_or_id}' (revision {revision}): not a local "
                               f"folder and could not be fetched from the hub: {exc}") from None
