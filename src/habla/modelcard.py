"""The model card (`README.md`) of a merged model folder, before and after evaluation.

In: the folder's habla.json fields, the params used, hashes of the split manifests and the
training/merge figures (`render`, written by merge); then the evaluation results, the data
card and the base's licence (`evaluated`, written by evaluate to `reports/model_card.md`).
Out: Markdown saying what the model is (a TTS voice, or an ASR model for `task: asr`), what
it was made from, how well it trained and scored, what it is for, and how to load it with and
without habla; the evaluated card has Hugging Face front matter (licence, base model,
language, tags, datasets, model-index) and is what `habla push` uploads as the hub repo's
README.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from habla import atomic
from habla.model_folder import looks_like_hub_id

LOADERS = {"speecht5": "SpeechT5ForTextToSpeech", "fastspeech2": "FastSpeech2ConformerModel",
           "xtts": "Xtts"}

# The XTTS-v2 weights, and so every model made from them, are under the Coqui Public Model
# License: non-commercial, and it covers the model's outputs too (coqui-ai/TTS#3448, #3490).
XTTS_FRONT = ["license: other", "license_name: coqui-public-model-license",
              "license_link: https://coqui.ai/cpml"]
XTTS_NOTE = ("the base is Coqui's XTTS-v2, whose weights are under the Coqui Public Model "
             "License 1.0.0 (https://coqui.ai/cpml): non-commercial use only, of the model and "
             "of the audio it makes.")
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
        "model = Xtts(config)",
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


# ---------------------------------------------------------------- after evaluation
DIGEST = re.compile(r"<!-- habla-merged-digest: ([0-9a-f]{64}) -->")
# what the model-index lists: key, metric type, label (fine-tuned model, test split)
INDEX_METRICS = (("cer", "cer", "CER (Whisper, normalised text)"),
                 ("wer", "wer", "WER (Whisper, normalised text)"),
                 ("mcd", "mcd", "MCD, habla log-mel scale"),
                 ("mcd_sptk", "mcd", "MCD, SPTK mel-cepstrum (dB)"),
                 ("spk_sim", "speaker_similarity", "speaker similarity (GE2E cosine)"),
                 ("dnsmos_ovrl", "mos", "DNSMOS OVRL (MOS estimate)"))
HABLA_LICENSE = "apache-2.0"  # habla's own licence (pyproject.toml)
ASR_INDEX_METRICS = (("wer", "wer", "WER (normalised text, mean per utterance)"),
                     ("cer", "cer", "CER (normalised text, mean per utterance)"))


def hub_datasets(sources: Sequence[Any]) -> list[str]:
    """The hub ids of the `hf` download sources: the card's `datasets`."""
    return [s.dataset for s in sources if s.kind == "hf" and looks_like_hub_id(s.dataset)]


def folder_digest(folder: Path) -> str:
    """sha256 over the folder's files (names and bytes) except README.md: which merged model
    a card was written for."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == "README.md":
            continue
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(YAML front matter, the rest) of a Markdown card; ({}, text) when it has none."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            try:
                meta = yaml.safe_load(text[4:end]) or {}
            except yaml.YAMLError:
                meta = {}
            if isinstance(meta, dict):
                return meta, text[end + 4:].lstrip("\n")
    return {}, text


def base_license(base_card: str | None, base_provenance: Mapping[str, Any] | None
                 ) -> tuple[str, str]:
    """(licence id, sentence) for the card: the base card's `license`, else habla's own when
    habla trained the base from random init (recipes/base-es), else 'other' with a warning."""
    meta, _ = front_matter(base_card or "")
    if meta.get("license"):
        name = str(meta["license"])
        return name, f"the base model's licence (`{name}`, from its model card) applies."
    if base_provenance and base_provenance.get("recipe"):
        return HABLA_LICENSE, (f"the base was trained from random initialisation by habla "
                               f"(`{base_provenance['recipe']}`), so no third-party weights are "
                               f"involved: habla's licence (`{HABLA_LICENSE}`) applies.")
    return "other", ("the base model's licence could not be read: check it before "
                     "publishing or using this model.")


def _model_index(name: str, results: Mapping[str, Any], speaker: str) -> list[dict[str, Any]]:
    fine = results.get("finetuned", {})
    asr = results.get("task") == "asr"
    metrics = [{"type": kind, "value": round(float(fine[key]), 4), "name": label}
               for key, kind, label in (ASR_INDEX_METRICS if asr else INDEX_METRICS)
               if isinstance(fine.get(key), int | float)]
    n = results.get("n_utterances", "?")
    task = ({"type": "automatic-speech-recognition", "name": "Automatic speech recognition"}
            if asr else {"type": "text-to-speech", "name": "Text-to-speech"})
    what = "utterances" if asr else "sentences"
    return [{"name": name, "results": [{
        "task": task,
        "dataset": {"type": "habla-test-split", "name": f"habla test split ({n} held-out "
                    f"{what}, speaker {speaker})"},
        "metrics": metrics}]}]


def _ci(d: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A paired difference as 'mean [low, high]' (– when there is none)."""
    if not d:
        return "–"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def _evaluation(results: Mapping[str, Any]) -> list[str]:
    rows = [("cer", "CER ↓"), ("wer", "WER ↓"), ("mcd", "MCD, habla log-mel scale ↓"),
            ("mcd_sptk", "MCD, SPTK (dB) ↓"), ("spk_sim", "speaker similarity ↑"),
            ("dnsmos_ovrl", "DNSMOS OVRL ↑")]
    asr = (results.get("method", {}).get("asr") or {}).get("model", "Whisper")
    lines = ["## Evaluation", "",
             f"{results.get('n_utterances', '?')} held-out test sentences (never trained on), "
             f"read by the base and by this model; ASR listener `{asr}`. Brackets: 95% "
             "bootstrap intervals; the difference is paired over sentences.", "",
             "| measure | target recordings | base | this model | this − base [95% CI] |",
             "|---|---:|---:|---:|---:|"]
    for key, label in rows:
        fine = results.get("finetuned", {}).get(key)
        if not isinstance(fine, int | float):
            continue
        ref = results.get("reference", {}).get(key)
        base = results.get("base", {}).get(key)
        delta = _ci(results.get("delta", {}).get(key))
        lines.append(f"| {label} | {f'{ref:.3f}' if isinstance(ref, float) else '–'} | "
                     f"{f'{base:.3f}' if isinstance(base, float) else '–'} | {fine:.3f} | "
                     f"{delta} |")
    lines += ["", "MCD scales differ between implementations: compare only within one "
              "method. DNSMOS estimates noise and overall quality, not naturalness or whether "
              "the words are right.", ""]
    return lines


def _evaluation_asr(results: Mapping[str, Any]) -> list[str]:
    """The ASR results: error rates and word-start error of the base and this model, decoded
    alike, with the paired differences and the WER ratio."""
    base, fine = results.get("base", {}), results.get("finetuned", {})
    delta = results.get("delta", {})

    def num(x: Any, fmt: str = ".3f") -> str:
        return format(x, fmt) if isinstance(x, int | float) else "–"

    def start(system: Mapping[str, Any], key: str) -> Any:
        timing = system.get("start_error_ms")
        return timing.get(key) if isinstance(timing, dict) else None

    speakers = ", ".join(results.get("speakers") or []) or "?"
    lines = ["## Evaluation", "",
             f"{results.get('n_utterances', '?')} held-out test utterances (speakers: "
             f"{speakers}; never trained on), transcribed by the base and by this model with "
             "the same faster-whisper decoding. Text is normalised (case, punctuation) before "
             "scoring. Brackets: 95% bootstrap intervals; the difference is paired over "
             "utterances.", "",
             "| measure | base | this model | this − base [95% CI] |", "|---|---:|---:|---:|",
             f"| WER ↓ (mean per utterance) | {num(base.get('wer'))} | {num(fine.get('wer'))} "
             f"| {_ci(delta.get('wer'))} |",
             f"| CER ↓ (mean per utterance) | {num(base.get('cer'))} | {num(fine.get('cer'))} "
             f"| {_ci(delta.get('cer'))} |",
             f"| WER ↓ (corpus: all errors / all words) | "
             f"{num((base.get('corpus') or {}).get('wer'))} | "
             f"{num((fine.get('corpus') or {}).get('wer'))} | – |"]
    timed = bool(results.get("n_timed"))
    if timed:
        lines += [
            f"| word-start error ↓, median over words (ms) | {num(start(base, 'median_ms'), '.1f')}"
            f" | {num(start(fine, 'median_ms'), '.1f')} | – |",
            f"| word-start error ↓, mean per utterance (ms) | – | – | "
            f"{_ci(delta.get('start_mae_ms'), 1)} |",
            f"| words starting within 50 ms ↑ | {num(start(base, 'within_50ms'))} | "
            f"{num(start(fine, 'within_50ms'))} | – |"]
    ratio = (results.get("ratio") or {}).get("wer")
    lines.append("")
    if ratio:
        lines += [f"WER of this model / WER of the base: {ratio['ratio']:.3f} "
                  f"[{ratio['ci_low']:.3f}, {ratio['ci_high']:.3f}].", ""]
    if timed:
        lines += [f"Word starts: {results['n_timed']} utterances whose true word times are "
                  "known; the base's starts come from cross-attention alignment of the "
                  "reference text, this model's from its own timestamp tokens.", ""]
    lines += ["The test voices and sentences are the data card's: measure the model on your "
              "own speech before relying on it.", ""]
    return lines


def _data(card: Mapping[str, Any] | None) -> list[str]:
    if not card:
        return ["## Training data", "", "No data card (metrics/data.json) was found.", ""]
    lines = ["## Training data", "", "| stage | in | kept | rejected |", "|---|---|---|---|"]
    rec, clips = "recordings", "clips"
    stages = (("download", ("download_hours", "download_recordings", rec),
               ("download_hours", "download_recordings", rec)),
              ("segment", ("segment_hours_in", "segment_recordings_in", rec),
               ("segment_hours_kept", "segment_clips_out", clips)),
              ("transcribe", ("transcribe_hours_in", "transcribe_clips_in", clips),
               ("transcribe_hours_kept", "transcribe_clips_kept", clips)),
              ("timestamps", (None, "timestamps_clips_in", clips),
               ("timestamps_hours_kept", "timestamps_clips_kept", clips)))

    def amount(hours: str | None, count: str, unit: str) -> str:
        parts = [f"{card[hours]} h" if hours and hours in card else "",
                 f"{card[count]} {unit}" if count in card else ""]
        return ", ".join(p for p in parts if p) or "–"

    for stage, came, kept in stages:
        if not any(k.startswith(f"{stage}_") for k in card):
            continue
        rejected = sum(v for k, v in card.items() if k.startswith(f"{stage}_rejects_")
                       and isinstance(v, int) and not isinstance(v, bool))
        lines.append(f"| {stage} | {amount(*came)} | {amount(*kept)} | {rejected} |")
    lines.append("")
    splits = [f"{s} {card[f'{s}_clips']} clips ({card.get(f'{s}_hours', '?')} h, "
              f"{card.get(f'{s}_speakers', '?')} speaker(s))" for s in ("train", "val", "test")
              if f"{s}_clips" in card]
    if splits:
        lines += ["Splits (by sentence, no sentence in two splits): " + "; ".join(splits) + ".",
                  ""]
    return lines


def evaluated(merge_card: str, meta: Mapping[str, Any], results: Mapping[str, Any],
              data_card: Mapping[str, Any] | None, license_id: str, license_note: str,
              datasets: Sequence[str] = (), digest: str | None = None) -> str:
    """The merged model's card with its evaluation: Hugging Face front matter (licence,
    base_model when the base is a hub id, language, tags, datasets, model-index), then the
    results, the data funnel, the licence, and the merge card's own sections."""
    family = str(meta.get("family", "?"))
    asr = meta.get("task") == "asr"
    speaker = (", ".join(results.get("speakers") or []) if asr else None) \
        or str(meta.get("speaker") or "?")
    base = meta.get("base") or {}
    front: dict[str, Any] = {"license": license_id}
    xtts = family == "xtts"
    if xtts:  # XTTS_FRONT's licence name and link
        front.update(dict(line.split(": ", 1) for line in XTTS_FRONT[1:]))
    if base.get("commit"):  # resolved from a hub snapshot: the hub can link to it
        front["base_model"] = base.get("path")
    task = "automatic-speech-recognition" if asr else "text-to-speech"
    language = (meta.get("settings") or {}).get("language") if asr else None
    front.update({"language": [language or "es"],
                  "library_name": "coqui-tts" if xtts else "transformers",
                  "pipeline_tag": task, "tags": ["habla", "lora", task, family]})
    if datasets:
        front["datasets"] = list(datasets)
    name = f"habla-{family}-{language or 'es'}" if asr else f"habla-{family}-{speaker}"
    front["model-index"] = _model_index(name, results, speaker)
    _, body = front_matter(merge_card)
    title, _, sections = body.partition("\n## ")
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---",
             "", title.rstrip(), "",
             *(_evaluation_asr(results) if asr else _evaluation(results)), *_data(data_card),
             "## Licence", "", f"`{license_id}`: {license_note} The training data's own terms "
             f"apply to what you do with the {'model' if asr else 'voice'}.", ""]
    if sections:
        lines.append("## " + sections.rstrip())
    if digest:
        lines += ["", f"<!-- habla-merged-digest: {digest} -->"]
    return "\n".join(lines) + "\n"


def write_evaluated(out: Path, merged: Path, base_dir: Path | None, meta: Mapping[str, Any],
                    results: Mapping[str, Any], data_card: Mapping[str, Any] | None,
                    datasets: Sequence[str] = (),
                    licence: tuple[str, str] | None = None) -> Path:
    """Write the evaluated card of the model in `merged` to `out` (never into `merged`: that
    folder belongs to the merge stage). `licence` (id, sentence) is the base's licence when
    the caller knows it and the base folder has no card to read it from."""
    merge_card = merged / "README.md"
    base_card = base_dir / "README.md" if base_dir is not None else None
    license_id, note = base_license(
        base_card.read_text("utf-8") if base_card is not None and base_card.is_file() else None,
        meta.get("base_provenance"))
    if licence is not None and license_id == "other":
        license_id, note = licence
    if meta.get("family") == "xtts":  # whatever the base folder's card says, or lacks
        license_id, note = "other", XTTS_NOTE
    text = evaluated(merge_card.read_text("utf-8") if merge_card.is_file() else "# habla model\n",
                     meta, results, data_card, license_id, note, datasets, folder_digest(merged))
    atomic.write_text(out, text)
    return out
