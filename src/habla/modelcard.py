"""The model card (`README.md`) of a merged model folder.

In: the folder's habla.json fields, the params used, hashes of the split manifests and the
training/merge figures. Out: Markdown text saying what the model is (a TTS voice, or an ASR
model for `task: asr`), what it was made from, how well it trained, what it is for, and how
to load it with and without habla.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

LOADERS = {"speecht5": "SpeechT5ForTextToSpeech", "fastspeech2": "FastSpeech2ConformerModel"}


def file_hashes(paths: list[Path]) -> dict[str, dict[str, str]]:
    """md5 (what dvc.lock records) and sha256 of each existing file."""
    out = {}
    for path in paths:
        if path.is_file():
            data = path.read_bytes()
            out[str(path)] = {"md5": hashlib.md5(data).hexdigest(),
                              "sha256": hashlib.sha256(data).hexdigest()}
    return out


def read_metrics(paths: list[Path]) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text("utf-8")) for p in paths if p.is_file()}


def _figures(metrics: dict[str, Any]) -> list[str]:
    if not metrics:
        return ["- no training metrics were found"]
    lines = []
    for name, figures in metrics.items():
        flat = {k: v for k, v in figures.items() if isinstance(v, int | float | str)}
        lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v}" for k, v in sorted(flat.items())))
    return lines


def render_asr(meta: dict[str, Any], params: dict[str, Any], data: dict[str, dict[str, str]],
               metrics: dict[str, Any], folder: str = "models/merged") -> str:
    """The card of a merged speech-recognition model (the whisper family)."""
    base = meta.get("base", {})
    settings = meta.get("settings", {})
    language = settings.get("language", "?")
    lines = [
        "---", f"language: {language}", "library_name: transformers",
        "pipeline_tag: automatic-speech-recognition", "tags: [habla, lora, whisper, asr]",
        "---", "",
        f"# habla Whisper fine-tuned for `{language}` speech recognition", "",
        "A `WhisperForConditionalGeneration` fine-tuned with LoRA on every attention "
        "projection, in two phases (1: transcripts; 2: Whisper's timestamp tokens, "
        f"`{settings.get('phase2_labels')}` segments), and merged into a standalone model. "
        "The folder holds the transformers weights (fp32), the processor and the generation "
        f"config; `{folder}/ct2/` holds the same model converted to CTranslate2 (float16 "
        "weights) for faster-whisper. Whisper's own tokenizer is kept.", "",
        "## Base model", "",
        f"- id/folder: `{base.get('path')}`", f"- revision: `{base.get('revision')}`",
        f"- sha256 of its weights file: `{base.get('sha256')}`", "",
        "## Data (split manifests)", "", "| file | md5 | sha256 |", "|---|---|---|",
        *(f"| `{k}` | `{v['md5']}` | `{v['sha256']}` |" for k, v in data.items()), "",
        "## Training and merge figures", "", *_figures(metrics), "",
        "## Params used", "", "```yaml",
        yaml.safe_dump(params, sort_keys=True, allow_unicode=True).rstrip(), "```", "",
        "## Intended use", "",
        "Research and demonstration of reproducible ASR fine-tuning. It was adapted to the "
        "voices and sentences of its training data (see the data card): measure it on your "
        "own speech before relying on it. Word timestamps come from its timestamp tokens "
        "(decode with timestamps on), on a 20 ms grid.", "",
        "## How to load", "", "With habla (params.yaml), so that `transcribe` and `timestamps` "
        "use it:", "", "```yaml", "asr:", f"  model: {folder}/ct2", "```", "",
        "With faster-whisper (word times from its timestamp tokens: `without_timestamps=False`):",
        "", "```python", "from faster_whisper import WhisperModel",
        f'model = WhisperModel("{folder}/ct2", device="cpu", compute_type="int8")',
        f'segments, _ = model.transcribe("clip.wav", language="{language}", '
        'without_timestamps=False)', "```", "",
        "With plain transformers:", "", "```python",
        "from transformers import WhisperForConditionalGeneration, WhisperProcessor",
        f'model = WhisperForConditionalGeneration.from_pretrained("{folder}")',
        f'processor = WhisperProcessor.from_pretrained("{folder}")', "```", "",
    ]
    return "\n".join(lines)


def render(meta: dict[str, Any], params: dict[str, Any], data: dict[str, dict[str, str]],
           metrics: dict[str, Any], folder: str = "models/merged") -> str:
    if meta.get("task") == "asr":
        return render_asr(meta, params, data, metrics, folder)
    family = meta.get("family", "?")
    base = meta.get("base", {})
    loader = LOADERS.get(family, "AutoModel")
    speakers = ", ".join(meta.get("speakers") or []) or "none"
    lines = [
        "---", "language: es", "library_name: transformers", "pipeline_tag: text-to-speech",
        "tags: [habla, lora, tts]", "---", "",
        f"# habla {family} Spanish TTS, adapted to `{meta.get('speaker', '?')}`", "",
        f"A `{loader}` fine-tuned with LoRA (two phases) and merged into a standalone model. "
        f"Speakers: {speakers} (default `{meta.get('default_speaker')}`). Vocoder: "
        f"`{meta.get('vocoder', 'griffinlim')}`. Audio: {meta.get('features', {})}.", "",
        "## Base model", "",
        f"- id/folder: `{base.get('path')}`", f"- revision: `{base.get('revision')}`",
        f"- sha256 of model.safetensors: `{base.get('sha256')}`", "",
        "## Data (split manifests)", "", "| file | md5 | sha256 |", "|---|---|---|",
        *(f"| `{k}` | `{v['md5']}` | `{v['sha256']}` |" for k, v in data.items()), "",
        "## Training and merge figures", "",
    ]
    if metrics:
        for name, figures in metrics.items():
            flat = {k: v for k, v in figures.items() if isinstance(v, int | float | str)}
            lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v}" for k, v in
                                                        sorted(flat.items())))
    else:
        lines.append("- no training metrics were found")
    lines += [
        "", "## Params used", "", "```yaml",
        yaml.safe_dump(params, sort_keys=True, allow_unicode=True).rstrip(), "```", "",
        "## Intended use", "",
        "Research and demonstration of reproducible TTS fine-tuning for Spanish. The voice is "
        "the one in the training data: do not use it to impersonate a real person, and "
        "disclose synthetic speech to listeners. Quality is limited by the small data and "
        "the vocoder; evaluate with `habla evaluate` before any other use.", "",
        "## How to load", "", "With habla:", "", "```bash",
        f'habla synth "Hola, ¿cómo estás?" --model {folder} -o hola.wav', "```", "",
        "With plain transformers (the folder is an ordinary `save_pretrained` folder):", "",
        "```python", f"from transformers import {loader}",
        f'model = {loader}.from_pretrained("{folder}")',
        "# token ids: sentencepiece.SentencePieceProcessor(model_file="
        f'"{folder}/tokenizer/spm.model")',
    ]
    if (meta.get("family") == "speecht5"):
        lines += ["# speaker vectors: safetensors.torch.load_file("
                  f'"{folder}/speakers.safetensors")']
    lines += ["```", ""]
    return "\n".join(lines)
