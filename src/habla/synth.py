"""`habla synth`: sentences to wav files with a finished model folder.

In: text, a model folder or hub id (models/merged, models/base, ...), an optional speaker.
Out: a 16-bit mono wav at the model's sample rate; a clear error for a missing model folder or
an unknown speaker (with the valid ones listed). The folder is checked before torch loads.
"""

from __future__ import annotations

from pathlib import Path

from habla.errors import StageError
from habla.model_folder import has_info, looks_like_hub_id


def check_model(model: str | Path) -> None:
    """Fail fast, before any heavy import or hub lookup, on a model that cannot be used."""
    folder = Path(model)
    if folder.is_dir() and has_info(folder):
        return
    if folder.exists() or not looks_like_hub_id(str(model)):
        what = "does not exist" if not folder.exists() else "has no habla.json"
        raise StageError(f"synth: model folder {folder} {what} (run `dvc repro` to make "
                         "models/merged, or pass --model models/base)")


def synth(text: str, model: str | Path, out: str | Path, speaker: str | None = None
          ) -> dict[str, object]:
    """Synthesize `text` with `model` into `out`; return a small summary."""
    if not text.strip():
        raise StageError("synth: the text is empty")
    check_model(model)
    from habla.audio import write_wav
    from habla.families import load_synthesizer

    try:
        synthesizer = load_synthesizer(str(model))
    except FileNotFoundError as exc:  # 'org/name' that is neither a folder nor on the hub
        raise StageError(f"synth: model folder {model} does not exist and is not a "
                         f"reachable hub model ({exc})") from None
    known = list(synthesizer.speakers)
    if speaker is not None and known and speaker not in known:
        raise StageError(f"synth: unknown speaker '{speaker}' for {model}; valid: "
                         f"{', '.join(known)}")
    wave, sample_rate = synthesizer.synthesize(text, speaker)
    write_wav(out, wave, sample_rate)
    return {"out": str(out), "seconds": round(len(wave) / sample_rate, 3),
            "sample_rate": sample_rate, "speaker": speaker or synthesizer.default_speaker,
            "family": synthesizer.family, "vocoder": synthesizer.vocoder_name}
