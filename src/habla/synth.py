"""`habla synth`: sentences to wav files with a finished model folder (or a hub model).

In: one sentence, or several (a text file or stdin, one per line), a model folder or hub id
(models/merged, models/base, org/name), an optional speaker. Out: one 16-bit mono wav per
sentence at the model's sample rate (`out.wav` for one sentence; `out_001.wav`, `out_002.wav`,
... for a file). The text, the output folder and the model are checked before torch loads:
a missing folder is named with the fix, and a hub id that is neither cached nor reachable
fails within seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from habla.errors import StageError
from habla.model_folder import looks_like_hub_id
from habla.text import normalize

HUB_TIMEOUT = 8.0  # seconds for the hub to answer whether a model exists
FIX = "run `dvc repro` to make models/merged, or pass --model models/base"


def read_sentences(text: str | None, source: str | Path | None,
                   stdin: Callable[[], str] | None = None) -> list[str]:
    """The sentences to speak: `text`, or one per non-empty line of `source` ('-': stdin)."""
    if (text is None) == (source is None):
        raise StageError("synth: give a sentence or --file (one sentence per line; - for "
                         "stdin), not both")
    if text is not None:
        lines = [text]
        where = "the sentence"
    elif str(source) == "-":
        import sys

        lines = (stdin or sys.stdin.read)().splitlines()
        where = "stdin"
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.is_file():
            raise StageError(f"synth: {path} does not exist (give a text file with one "
                             "sentence per line)")
        try:
            lines = path.read_text("utf-8").splitlines()
        except UnicodeDecodeError:
            raise StageError(f"synth: {path} is not UTF-8 text") from None
        where = str(path)
    sentences = [s.strip() for s in lines if s.strip()]
    if not sentences:
        raise StageError(f"synth: {where} is empty: nothing to say")
    for k, s in enumerate(sentences, 1):
        if not normalize(s):
            raise StageError(f"synth: {where}, sentence {k} ({s!r}) has no words to say")
    return sentences


def outputs(out: str | Path, count: int, numbered: bool) -> list[Path]:
    """Where each sentence goes: `out` itself, or `<stem>_001<suffix>`, ... beside it."""
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise StageError(f"synth: {out}: the output must be a .wav file")
    if not out.parent.is_dir():
        raise StageError(f"synth: folder {out.parent} does not exist (create it, or choose "
                         "another -o)")
    if not numbered:
        return [out]
    width = max(3, len(str(count)))
    return [out.with_name(f"{out.stem}_{k:0{width}d}{out.suffix}") for k in range(1, count + 1)]


def _check_hub(repo_id: str, revision: str | None = None) -> None:
    """Whether a hub model can be had: from the local cache without the network, else by
    asking the hub (HUB_TIMEOUT) that it exists. The download itself is left to the family
    that loads it (some fetch only the files they need)."""
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        snapshot_download(repo_id, revision=revision, local_files_only=True)
        return
    except Exception:  # not cached (any kind of miss): ask the hub
        pass
    if constants.HF_HUB_OFFLINE:
        raise StageError(f"synth: model '{repo_id}' is not a folder here and not in the local "
                         f"Hugging Face cache, and HF_HUB_OFFLINE is set ({FIX})")
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT)
    except Exception as exc:
        name = type(exc).__name__
        if "NotFound" in name:  # RepositoryNotFoundError, RevisionNotFoundError
            what = f"no model '{repo_id}'" + (f" at revision {revision}" if revision else "")
            raise StageError(f"synth: {what} on the hub ({constants.ENDPOINT}), and no folder "
                             f"{repo_id} here ({FIX})") from None
        detail = str(exc).splitlines()[0] if str(exc) else name
        raise StageError(f"synth: model '{repo_id}' is not a folder here, and the hub "
                         f"({constants.ENDPOINT}) could not be reached: {name}: {detail}. "
                         f"Connect and retry, or {FIX}") from None


def check_model(model: str | Path) -> str:
    """What to load (a folder, or a hub id known to exist), found before any heavy import; a
    clear error for a model that cannot be used (a hub id is looked up on the hub, briefly).
    Whether an existing folder is one habla can read (habla.json, or a family's own upstream
    layout) the family decides when it loads."""
    folder = Path(model)
    if folder.is_dir():
        return str(folder)
    # 'models/merged' before `dvc repro`: its parent folder is here, so it means a folder
    local = folder.exists() or folder.parent.is_dir() and folder.parent != Path(".")
    if local or not looks_like_hub_id(str(model)):
        what = "does not exist" if not folder.exists() else "is a file, not a model folder"
        raise StageError(f"synth: model folder {folder} {what} ({FIX})")
    _check_hub(str(model))
    return str(model)


def synth(text: str | None, model: str | Path, out: str | Path, speaker: str | None = None,
          source: str | Path | None = None) -> list[dict[str, object]]:
    """Speak `text` (or each line of `source`) with `model` into `out` (or numbered files
    beside it); one summary per file written."""
    sentences = read_sentences(text, source)
    targets = outputs(out, len(sentences), numbered=source is not None)
    to_load = check_model(model)
    # torch and transformers from here on; their weight-loading bars are noise for one wav
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    from habla.audio import write_wav
    from habla.families import load_synthesizer

    transformers_logging.disable_progress_bar()  # also when transformers was loaded before

    synthesizer = load_synthesizer(to_load)
    known = list(synthesizer.speakers)
    if speaker is not None and known and speaker not in known:
        raise StageError(f"synth: unknown speaker '{speaker}' for {model}; valid: "
                         f"{', '.join(known)}")
    done = []
    for sentence, target in zip(sentences, targets, strict=True):
        wave, sample_rate = synthesizer.synthesize(sentence, speaker)
        write_wav(target, wave, sample_rate)
        done.append({"out": str(target), "text": sentence,
                     "seconds": round(len(wave) / sample_rate, 3), "sample_rate": sample_rate,
                     "speaker": speaker or synthesizer.default_speaker,
                     "family": synthesizer.family, "vocoder": synthesizer.vocoder_name})
    return done
