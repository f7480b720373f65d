"""The model card (`README.md`) of a merged model folder.

In: the folder's habla.json fields, the params used, hashes of the split manifests and the
training/merge figures. Out: Markdown text saying what the model is, what it was made from,
how well it trained, what it is for, and how to load it with and without habla.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

LOADERS = {"speecht5": "SpeechT5ForTextToSpeech", "fastspeech2": "FastSpeech2ConformerModel",
           "xtts": "Xtts"}

# The XTTS-v2 weights, and so every model made from them, are under the Coqui Public Model
# License: non-commercial, and it covers the model's outputs too (coqui-ai/TTS#3448, #3490).
XTTS_FRONT = ["license: other", "license_name: coqui-public-model-license",
              "license_link: https://coqui.ai/cpml"]
XTTS_LICENCE = [
    "## Licence", "",
    "This model is derived from Coqui's XTTS-v2 and is distributed under the **Coqui Public "
    "Model License 1.0.0 (CPML)**: https://coqui.ai/cpml. The CPML allows **non-commercial "
    "use only**, of the model and of the audio it produces; commercial use needs a licence "
    "from Coqui. habla's own code is Apache-2.0 and coqui-tts's code is MPL-2.0, but neither "
    "changes the terms of these weights. Keep this notice with the model.", "",
]


def _xtts_loading(folder: str, speaker: str | None) -> list[str]:
    return [
        "With coqui-tts (`pip install coqui-tts`; the folder is in XTTS-v2's own layout, the "
        "adapted voice stored in `speakers_xtts.pth`):", "",
        "```python", "from TTS.tts.configs.xtts_config import XttsConfig",
        "from TTS.tts.models.xtts import Xtts", "config = XttsConfig()",
        f'config.load_json("{folder}/config.json")',
        "model = Xtts.init_from_config(config)",
        f'model.load_checkpoint(config, checkpoint_dir="{folder}", eval=True)',
        f'voice = model.speaker_manager.speakers["{speaker}"]',
        'wav = model.inference("Hola, ¿cómo estás?", "es", voice["gpt_cond_latent"], '
        'voice["speaker_embedding"])["wav"]  # 24 kHz',
        "```", ""]


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


def render(meta: dict[str, Any], params: dict[str, Any], data: dict[str, dict[str, str]],
           metrics: dict[str, Any], folder: str = "models/merged") -> str:
    family = meta.get("family", "?")
    base = meta.get("base", {})
    loader = LOADERS.get(family, "AutoModel")
    speakers = ", ".join(meta.get("speakers") or []) or "none"
    xtts = family == "xtts"
    lines = [
        "---", "language: es", f"library_name: {'coqui-tts' if xtts else 'transformers'}",
        *(XTTS_FRONT if xtts else []), "pipeline_tag: text-to-speech",
        "tags: [habla, lora, tts]", "---", "",
        f"# habla {family} Spanish TTS, adapted to `{meta.get('speaker', '?')}`", "",
        f"A `{loader}` fine-tuned with LoRA (two phases) and merged into a standalone model. "
        f"Speakers: {speakers} (default `{meta.get('default_speaker')}`). Vocoder: "
        f"`{meta.get('vocoder', 'griffinlim')}`. Audio: {meta.get('features', {})}.", "",
        "## Base model", "",
        f"- id/folder: `{base.get('path')}`", f"- revision: `{base.get('revision')}`",
        f"- sha256 of {'model.pth' if xtts else 'model.safetensors'}: `{base.get('sha256')}`",
        "",
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
        *(XTTS_LICENCE if xtts else []),
        "## How to load", "", "With habla:", "", "```bash",
        f'habla synth "Hola, ¿cómo estás?" --model {folder} -o hola.wav', "```", "",
    ]
    if xtts:
        return "\n".join([*lines, *_xtts_loading(folder, meta.get("default_speaker"))])
    lines += [
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
